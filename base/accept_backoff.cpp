// accept_backoff.cpp — the accept-failure policy of accept_backoff.hpp.
#include "base/accept_backoff.hpp"

#include <algorithm>
#include <cerrno>

namespace tabby {

bool AcceptBackoff::is_exhaustion(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

AcceptBackoff::Step AcceptBackoff::failed(int err, const std::string& message,
                                          std::chrono::steady_clock::time_point now) {
  Step s;
  if (failures_ == 0) {
    ++episodes_;
    started_ = now;
    delay_ = kFirstDelay;
    s.log = "cannot accept on " + what_ + ": " + message +
            (is_exhaustion(err) ? " (out of file descriptors or memory)" : "") +
            "; retrying every " + std::to_string(kFirstDelay.count()) + "-" + std::to_string(kMaxDelay.count()) +
            " ms until it succeeds (pending connections wait in the listen queue)";
  } else {
    delay_ = std::min(delay_ * 2, kMaxDelay);
  }
  ++failures_;
  s.delay = delay_;
  return s;
}

std::string AcceptBackoff::succeeded(std::chrono::steady_clock::time_point now) {
  if (failures_ == 0) return {};
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - started_).count();
  std::string line = "accepting again on " + what_ + " after " + std::to_string(ms) + " ms (" +
                     std::to_string(failures_) + " failed attempt" + (failures_ == 1 ? "" : "s") + ")";
  failures_ = 0;
  delay_ = std::chrono::milliseconds{0};
  return line;
}

}  // namespace tabby
