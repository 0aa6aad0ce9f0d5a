// recording_dataplane.hpp — the in-memory Dataplane for unit and scenario tests.
// It runs the same RouteDiff as the Linux driver against a simulated kernel route
// table and records every write it makes ("add <route>", "del <route>"), so tests
// can assert on exactly which deltas a desired-state change produces. Tests can
// also act as "someone else" on the simulated kernel: add a foreign route, delete
// one of ours, take an interface away. Pure: no netlink.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "dataplane/dataplane.hpp"
#include "dataplane/route_diff.hpp"

namespace tabby::dataplane {

class RecordingDataplane : public Dataplane {
 public:
  // `interfaces`: names that exist in the simulated kernel.
  explicit RecordingDataplane(std::set<std::string> interfaces = {});

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

  // --- the simulated kernel
  void kernel_add(const Route& r, uint8_t protocol);   // as another program would (no event)
  void kernel_delete(const Route& r);                  // as another program would (no event)
  void kernel_notify_add(const Route& r, uint8_t protocol);  // ... and the driver sees the event
  void kernel_notify_delete(const Route& r);
  void add_interface(const std::string& name) { interfaces_.insert(name); }
  void remove_interface(const std::string& name);      // drops routes through it, as the kernel does
  std::vector<std::string> kernel_dump() const;        // "proto N <route>" lines, sorted
  std::vector<Route> kernel_routes(uint8_t protocol) const;

  // --- what happened
  std::vector<std::string> ops;  // writes in order: "add ...", "del ..."
  TunnelConfig tunnels;
  std::vector<std::string> workload_interfaces;
  int tunnel_applies = 0;

 private:
  std::map<std::string, KernelRoute> kernel_;  // key: route key text
  std::set<std::string> interfaces_;
  RouteDiff sync_;
  DataplaneStatus st_;
  bool tunnels_dirty_ = false;
};

}  // namespace tabby::dataplane
