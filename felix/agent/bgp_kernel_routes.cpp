// bgp_kernel_routes.cpp — best BGP routes → kernel routes through the Linux
// dataplane driver, with its notification socket and resync timer on the
// agent's io_context.
#include "felix/agent/bgp_kernel_routes.hpp"

#include <algorithm>
#include <iostream>

#include "dataplane/kernel_driver.hpp"
#include "log/log.hpp"

namespace tabby::felix {

namespace asio = boost::asio;
using namespace tabby::dataplane;

namespace {
constexpr logging::Logger kLog{"dataplane"};
}  // namespace

std::optional<Route> kernel_route_for(const bgp::BestRouteChange& c) {
  if (c.local) return block_blackhole(c.prefix);
  std::vector<NextHop> hops;
  for (const auto& nh : c.next_hops) {
    if (nh.family() != c.prefix.family() || nh.is_unspecified()) continue;
    NextHop h;
    h.gateway = nh;
    if (std::find(hops.begin(), hops.end(), h) == hops.end()) hops.push_back(h);
  }
  if (hops.empty()) return std::nullopt;
  std::sort(hops.begin(), hops.end(), [](const NextHop& a, const NextHop& b) { return *a.gateway < *b.gateway; });
  return ecmp_route(c.prefix, std::move(hops));
}

struct BgpKernelRoutes::Impl {
  std::unique_ptr<KernelDriver> driver;
};

BgpKernelRoutes::BgpKernelRoutes() = default;
BgpKernelRoutes::~BgpKernelRoutes() { stop(); }

Result<std::unique_ptr<BgpKernelRoutes>> BgpKernelRoutes::open(asio::io_context& io) {
  auto d = KernelDriver::open(io);
  if (!d) return fail(d.error());
  std::unique_ptr<BgpKernelRoutes> k(new BgpKernelRoutes());
  k->impl_ = std::make_unique<Impl>();
  k->impl_->driver = std::move(*d);
  return k;
}

void BgpKernelRoutes::apply(const std::vector<bgp::BestRouteChange>& changes) {
  auto& dp = impl_->driver->dataplane();
  for (const auto& c : changes) {
    Route key;
    key.dst = c.prefix;
    auto r = kernel_route_for(c);
    // A prefix moves between classes (learned <-> originated): clear the other.
    dp.remove_route(c.local ? RouteClass::RemoteBlock : RouteClass::LocalBlock, key);
    if (r) dp.upsert_route(c.local ? RouteClass::LocalBlock : RouteClass::RemoteBlock, std::move(*r));
    else dp.remove_route(RouteClass::RemoteBlock, key);
  }
  impl_->driver->apply();
}

void BgpKernelRoutes::initial_sync_done() {
  impl_->driver->dataplane().desired_state_complete();
  impl_->driver->apply();
  kLog.info("initial state complete; leftover routes from earlier runs removed");
}

dataplane::DataplaneStatus BgpKernelRoutes::status() const { return impl_->driver->status(); }

void BgpKernelRoutes::stop() {
  if (impl_ && impl_->driver) impl_->driver->stop();
}

}  // namespace tabby::felix
