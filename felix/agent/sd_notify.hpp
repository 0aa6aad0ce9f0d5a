// sd_notify.hpp — the systemd service notification protocol (sd_notify(3), without
// libsystemd): with Type=notify the agent says READY=1 once started and STOPPING=1
// on SIGTERM; with WatchdogSec= it sends WATCHDOG=1 at half the interval from a timer
// on the agent's own event loop, so a loop that stops turning stops the pings and
// systemd restarts the agent (the same evidence /livez gives). Without
// $NOTIFY_SOCKET (not under systemd) everything here does nothing.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <string>

namespace tabby::felix {

class SystemdNotifier {
 public:
  explicit SystemdNotifier(boost::asio::io_context& io);
  // READY=1 and, when $WATCHDOG_USEC is set for this process, the watchdog timer.
  void ready();
  void stopping();
  bool active() const { return !socket_path_.empty(); }

 private:
  bool send(const std::string& message) const;
  void schedule();
  boost::asio::steady_timer timer_;
  std::string socket_path_;
  long long watchdog_usec_ = 0;
};

}  // namespace tabby::felix
