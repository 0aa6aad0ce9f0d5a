// linux_dataplane_loop.hpp — the Linux dataplane (linux_dataplane.hpp) on the
// agent's io_context, as the `Dataplane` the agent runtime drives. It owns the
// LinuxDataplane, watches its netlink notification socket (a route of ours deleted
// by hand or a link going down is repaired at once) and resyncs with the kernel
// every 30 s. It may call: LinuxDataplane, Asio, the log. Kernel state stays in
// place when it is destroyed (restart without loss), so it preserves forwarding
// across an agent restart.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>

#include "base/base.hpp"
#include "dataplane/dataplane.hpp"

namespace tabby::dataplane {

class LinuxDataplaneLoop : public Dataplane {
 public:
  // Opens the Linux dataplane in the current network namespace (adopting the
  // routes tabby owns; nothing is written until apply()). `on_applied` gets the
  // duration of every apply, whoever triggered it (the agent, a repair).
  static Result<std::unique_ptr<LinuxDataplaneLoop>> open(boost::asio::io_context& io,
                                                          std::function<void(double seconds)> on_applied = {});
  ~LinuxDataplaneLoop() override;

  void set_routes(RouteClass cls, std::vector<Route> routes) override;
  void upsert_route(RouteClass cls, Route route) override;
  void remove_route(RouteClass cls, const Route& route) override;
  void set_tunnels(TunnelConfig cfg) override;
  void set_workload_interfaces(std::vector<std::string> ifnames) override;
  void desired_state_complete() override;
  // Writes what changed since the last apply; kernel errors are logged (and returned).
  Status apply() override;
  Status resync() override;
  Status cleanup() override;
  DataplaneStatus status() const override;
  bool preserves_forwarding() const override { return true; }

 private:
  LinuxDataplaneLoop();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tabby::dataplane
