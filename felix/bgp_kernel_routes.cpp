// bgp_kernel_routes.cpp — best BGP routes → kernel routes through the Linux
// dataplane driver, with its notification socket and resync timer on the
// agent's io_context.
#include "felix/bgp_kernel_routes.hpp"

#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <iostream>

#include "felix/linux_dataplane.hpp"

namespace tabby::felix {

namespace asio = boost::asio;
using namespace tabby::dataplane;

namespace {
void log(const std::string& msg) { std::cerr << "tabby: dataplane: " << msg << std::endl; }
constexpr auto kResyncInterval = std::chrono::seconds(30);
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
  explicit Impl(asio::io_context& io) : events(io), resync_timer(io) {}
  std::unique_ptr<LinuxDataplane> dp;
  asio::posix::stream_descriptor events;
  asio::steady_timer resync_timer;
  std::shared_ptr<int> life = std::make_shared<int>(0);

  void apply_now() {
    if (auto st = dp->apply(); !st) log("apply: " + st.error().message);
  }

  void watch() {
    events.async_wait(asio::posix::stream_descriptor::wait_read,
                      [this, alive = std::weak_ptr<int>(life)](const boost::system::error_code& ec) {
                        if (ec || alive.expired()) return;
                        if (auto st = dp->handle_events(); !st) log("events: " + st.error().message);
                        if (dp->resync_needed()) {
                          if (auto st = dp->resync(); !st) log("resync: " + st.error().message);
                        }
                        apply_now();
                        watch();
                      });
  }

  void schedule_resync() {
    resync_timer.expires_after(kResyncInterval);
    resync_timer.async_wait([this, alive = std::weak_ptr<int>(life)](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      if (auto st = dp->resync(); !st) log("resync: " + st.error().message);
      apply_now();
      schedule_resync();
    });
  }
};

BgpKernelRoutes::BgpKernelRoutes() = default;
BgpKernelRoutes::~BgpKernelRoutes() { stop(); }

Result<std::unique_ptr<BgpKernelRoutes>> BgpKernelRoutes::open(asio::io_context& io) {
  auto dp = LinuxDataplane::open();
  if (!dp) return fail_msg("cannot open the kernel dataplane: " + dp.error().message);
  std::unique_ptr<BgpKernelRoutes> k(new BgpKernelRoutes());
  k->impl_ = std::make_unique<Impl>(io);
  k->impl_->dp = std::move(*dp);
  int fd = k->impl_->dp->event_fd();
  if (fd >= 0) {
    k->impl_->events.assign(::dup(fd));
    k->impl_->watch();
  }
  k->impl_->schedule_resync();
  return k;
}

void BgpKernelRoutes::apply(const std::vector<bgp::BestRouteChange>& changes) {
  auto& dp = *impl_->dp;
  for (const auto& c : changes) {
    Route key;
    key.dst = c.prefix;
    auto r = kernel_route_for(c);
    // A prefix moves between classes (learned <-> originated): clear the other.
    dp.remove_route(c.local ? RouteClass::RemoteBlock : RouteClass::LocalBlock, key);
    if (r) dp.upsert_route(c.local ? RouteClass::LocalBlock : RouteClass::RemoteBlock, std::move(*r));
    else dp.remove_route(RouteClass::RemoteBlock, key);
  }
  impl_->apply_now();
}

void BgpKernelRoutes::initial_sync_done() {
  impl_->dp->desired_state_complete();
  impl_->apply_now();
  log("initial state complete; leftover routes from earlier runs removed");
}

dataplane::DataplaneStatus BgpKernelRoutes::status() const { return impl_->dp->status(); }

void BgpKernelRoutes::stop() {
  if (!impl_) return;
  impl_->life.reset();
  boost::system::error_code ec;
  impl_->resync_timer.cancel();
  impl_->events.close(ec);
}

}  // namespace tabby::felix
