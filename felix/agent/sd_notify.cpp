// sd_notify.cpp — datagrams to $NOTIFY_SOCKET (sd_notify.hpp).
#include "felix/agent/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "log/log.hpp"

namespace tabby::felix {
namespace {
constexpr logging::Logger kLog{"agent"};
}

SystemdNotifier::SystemdNotifier(boost::asio::io_context& io) : timer_(io) {
  if (const char* s = std::getenv("NOTIFY_SOCKET"); s && (s[0] == '/' || s[0] == '@')) socket_path_ = s;
  const char* usec = std::getenv("WATCHDOG_USEC");
  const char* pid = std::getenv("WATCHDOG_PID");
  if (usec && (!pid || std::atoll(pid) == static_cast<long long>(::getpid()))) watchdog_usec_ = std::atoll(usec);
}

bool SystemdNotifier::send(const std::string& message) const {
  if (socket_path_.empty()) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len) ==
            static_cast<ssize_t>(message.size());
  ::close(fd);
  return ok;
}

void SystemdNotifier::ready() {
  if (!active()) return;
  if (!send("READY=1\nSTATUS=running")) kLog.warning("cannot notify systemd at " + socket_path_);
  if (watchdog_usec_ > 0) {
    kLog.info("systemd watchdog: pinging every " + std::to_string(watchdog_usec_ / 2000) + " ms from the event loop");
    schedule();
  }
}

void SystemdNotifier::stopping() {
  timer_.cancel();
  send("STOPPING=1");
}

void SystemdNotifier::schedule() {
  timer_.expires_after(std::chrono::microseconds(watchdog_usec_ / 2));
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    send("WATCHDOG=1");
    schedule();
  });
}

}  // namespace tabby::felix
