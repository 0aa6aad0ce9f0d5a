// linux_dataplane_loop.cpp — LinuxDataplane + Asio: notification socket, resync timer.
#include "dataplane/linux_dataplane_loop.hpp"

#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

#include "dataplane/linux_dataplane.hpp"
#include "log/log.hpp"

namespace tabby::dataplane {

namespace asio = boost::asio;

namespace {
constexpr logging::Logger kLog{"dataplane"};
constexpr auto kResyncInterval = std::chrono::seconds(30);
}  // namespace

struct LinuxDataplaneLoop::Impl {
  explicit Impl(asio::io_context& io) : events(io), resync_timer(io) {}
  std::unique_ptr<LinuxDataplane> dp;
  asio::posix::stream_descriptor events;
  asio::steady_timer resync_timer;
  std::function<void(double)> applied;
  std::shared_ptr<int> life = std::make_shared<int>(0);

  Status apply_now() {
    auto t0 = std::chrono::steady_clock::now();
    auto st = dp->apply();
    if (!st) kLog.warning("apply: " + st.error().message);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (applied) applied(s);
    return st;
  }

  void watch() {
    events.async_wait(asio::posix::stream_descriptor::wait_read,
                      [this, alive = std::weak_ptr<int>(life)](const boost::system::error_code& ec) {
                        if (ec || alive.expired()) return;
                        if (auto st = dp->handle_events(); !st) kLog.warning("events: " + st.error().message);
                        if (dp->resync_needed()) {
                          if (auto st = dp->resync(); !st) kLog.warning("resync: " + st.error().message);
                        }
                        (void)apply_now();
                        watch();
                      });
  }

  void schedule_resync() {
    resync_timer.expires_after(kResyncInterval);
    resync_timer.async_wait([this, alive = std::weak_ptr<int>(life)](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      if (auto st = dp->resync(); !st) kLog.warning("resync: " + st.error().message);
      (void)apply_now();
      schedule_resync();
    });
  }

  void stop() {
    if (!life) return;
    life.reset();
    boost::system::error_code ec;
    resync_timer.cancel();
    events.close(ec);
  }
};

LinuxDataplaneLoop::LinuxDataplaneLoop() = default;
LinuxDataplaneLoop::~LinuxDataplaneLoop() {
  if (impl_) impl_->stop();
}

Result<std::unique_ptr<LinuxDataplaneLoop>> LinuxDataplaneLoop::open(asio::io_context& io,
                                                                     std::function<void(double)> on_applied) {
  auto dp = LinuxDataplane::open();
  if (!dp) return fail_msg("cannot open the kernel dataplane: " + dp.error().message);
  std::unique_ptr<LinuxDataplaneLoop> k(new LinuxDataplaneLoop());
  k->impl_ = std::make_unique<Impl>(io);
  k->impl_->dp = std::move(*dp);
  k->impl_->applied = std::move(on_applied);
  int fd = k->impl_->dp->event_fd();
  if (fd >= 0) {
    k->impl_->events.assign(::dup(fd));
    k->impl_->watch();
  }
  k->impl_->schedule_resync();
  return k;
}

void LinuxDataplaneLoop::set_routes(RouteClass cls, std::vector<Route> routes) { impl_->dp->set_routes(cls, std::move(routes)); }
void LinuxDataplaneLoop::upsert_route(RouteClass cls, Route route) { impl_->dp->upsert_route(cls, std::move(route)); }
void LinuxDataplaneLoop::remove_route(RouteClass cls, const Route& route) { impl_->dp->remove_route(cls, route); }
void LinuxDataplaneLoop::set_tunnels(TunnelConfig cfg) { impl_->dp->set_tunnels(std::move(cfg)); }
void LinuxDataplaneLoop::set_workload_interfaces(std::vector<std::string> ifnames) {
  impl_->dp->set_workload_interfaces(std::move(ifnames));
}
void LinuxDataplaneLoop::desired_state_complete() { impl_->dp->desired_state_complete(); }
Status LinuxDataplaneLoop::apply() { return impl_->apply_now(); }
Status LinuxDataplaneLoop::resync() { return impl_->dp->resync(); }
Status LinuxDataplaneLoop::cleanup() { return impl_->dp->cleanup(); }
DataplaneStatus LinuxDataplaneLoop::status() const { return impl_->dp->status(); }

}  // namespace tabby::dataplane
