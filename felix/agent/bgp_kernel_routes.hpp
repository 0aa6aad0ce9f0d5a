// bgp_kernel_routes.hpp — the static-config agent's dataplane: BIRD's "kernel
// protocol" role. Best BGP routes become kernel routes (tabby's route protocol,
// ECMP when several next hops tie), and each prefix this node announces gets a
// blackhole, as Calico does for a node's own blocks. The Linux driver keeps the
// kernel in step (notifications, periodic resync); leftovers from a previous
// run are removed only after the first complete BGP table (restart without loss).
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <vector>

#include "base/base.hpp"
#include "bgp/speaker.hpp"
#include "dataplane/dataplane.hpp"

namespace tabby::felix {

class BgpKernelRoutes {
 public:
  // Opens the Linux dataplane in the current network namespace.
  static Result<std::unique_ptr<BgpKernelRoutes>> open(boost::asio::io_context& io);
  ~BgpKernelRoutes();

  void apply(const std::vector<bgp::BestRouteChange>& changes);  // speaker -> kernel
  void initial_sync_done();                                      // leftovers may go now
  dataplane::DataplaneStatus status() const;
  void stop();

 private:
  BgpKernelRoutes();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The kernel route for one best-route change (pure, for tests): nullopt when
// the prefix has no usable next hop.
std::optional<dataplane::Route> kernel_route_for(const bgp::BestRouteChange& c);

}  // namespace tabby::felix
