// linux_dataplane.hpp — the Linux implementation of Dataplane: routes by batched
// raw rtnetlink (dataplane/rtnl.hpp), tunnel devices via ipip/, routed-veth sysctls.
// It owns its netlink sockets and the kernel route index; it may call RouteDiff,
// rtnl (route/link messages), ipip/'s devices and /proc/sys (this netns only).
// It keeps its own index of the kernel's routes (RouteDiff's observed side), fed by
// one dump at start and on resync and by route/link notifications in between, so
// a one-route change costs one netlink message and no rescan.
//
// Event loop contract (single thread): poll event_fd() for readability, then call
// handle_events(); call apply() after desired-state edits; call resync() on a timer
// or when resync_needed() says so (link changes, dropped notifications).
#pragma once

#include <memory>

#include "dataplane/dataplane.hpp"

namespace tabby::dataplane {

struct LinuxDataplaneOptions {
  bool watch_events = true;    // join route/link notification groups
  bool manage_sysctls = true;  // ip_forward and per-veth proxy_arp/forwarding (this netns only)
};

class LinuxDataplane : public Dataplane {
 public:
  // Opens netlink sockets and reads the kernel's routes and links (adopting
  // tabby-owned routes; nothing is written until apply()).
  static Result<std::unique_ptr<LinuxDataplane>> open(LinuxDataplaneOptions opts = {});
  ~LinuxDataplane() override;

  void set_routes(RouteClass cls, std::vector<Route> routes) override;
  void upsert_route(RouteClass cls, Route route) override;
  void remove_route(RouteClass cls, const Route& route) override;
  void set_tunnels(TunnelConfig cfg) override;
  void set_workload_interfaces(std::vector<std::string> ifnames) override;
  void desired_state_complete() override;
  Status apply() override;
  Status resync() override;
  Status cleanup() override;
  DataplaneStatus status() const override;

  int event_fd() const;          // -1 when events are not watched
  Status handle_events();        // drain notifications into the index
  bool resync_needed() const;    // a link changed or notifications were lost

 private:
  LinuxDataplane();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tabby::dataplane
