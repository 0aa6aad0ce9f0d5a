// kernel_driver.cpp — LinuxDataplane + Asio: notification socket, resync timer.
#include "dataplane/kernel_driver.hpp"

#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <iostream>

#include "dataplane/linux_dataplane.hpp"
#include "log/log.hpp"

namespace tabby::felix {

namespace asio = boost::asio;

namespace {
constexpr logging::Logger kLog{"dataplane"};
constexpr auto kResyncInterval = std::chrono::seconds(30);
}  // namespace

struct KernelDriver::Impl {
  explicit Impl(asio::io_context& io) : events(io), resync_timer(io) {}
  std::unique_ptr<dataplane::LinuxDataplane> dp;
  asio::posix::stream_descriptor events;
  asio::steady_timer resync_timer;
  std::function<void(double)> applied;
  std::shared_ptr<int> life = std::make_shared<int>(0);

  double apply_now() {
    auto t0 = std::chrono::steady_clock::now();
    if (auto st = dp->apply(); !st) kLog.info("apply: " + st.error().message);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (applied) applied(s);
    return s;
  }

  void watch() {
    events.async_wait(asio::posix::stream_descriptor::wait_read,
                      [this, alive = std::weak_ptr<int>(life)](const boost::system::error_code& ec) {
                        if (ec || alive.expired()) return;
                        if (auto st = dp->handle_events(); !st) kLog.info("events: " + st.error().message);
                        if (dp->resync_needed()) {
                          if (auto st = dp->resync(); !st) kLog.info("resync: " + st.error().message);
                        }
                        apply_now();
                        watch();
                      });
  }

  void schedule_resync() {
    resync_timer.expires_after(kResyncInterval);
    resync_timer.async_wait([this, alive = std::weak_ptr<int>(life)](const boost::system::error_code& ec) {
      if (ec || alive.expired()) return;
      if (auto st = dp->resync(); !st) kLog.info("resync: " + st.error().message);
      apply_now();
      schedule_resync();
    });
  }
};

KernelDriver::KernelDriver() = default;
KernelDriver::~KernelDriver() { stop(); }

Result<std::unique_ptr<KernelDriver>> KernelDriver::open(asio::io_context& io) {
  auto dp = dataplane::LinuxDataplane::open();
  if (!dp) return fail_msg("cannot open the kernel dataplane: " + dp.error().message);
  std::unique_ptr<KernelDriver> k(new KernelDriver());
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

dataplane::Dataplane& KernelDriver::dataplane() { return *impl_->dp; }
double KernelDriver::apply() { return impl_->apply_now(); }
void KernelDriver::on_applied(std::function<void(double)> f) { impl_->applied = std::move(f); }
dataplane::DataplaneStatus KernelDriver::status() const { return impl_->dp->status(); }

void KernelDriver::stop() {
  if (!impl_ || !impl_->life) return;
  impl_->life.reset();
  boost::system::error_code ec;
  impl_->resync_timer.cancel();
  impl_->events.close(ec);
}

}  // namespace tabby::felix
