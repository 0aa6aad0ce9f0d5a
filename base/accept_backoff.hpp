// accept_backoff.hpp — what a listening socket does when accept() fails (pure; the
// acceptors in bgp/speaker.cpp, felix/api/server.cpp and felix/api/health_server.cpp
// drive it with their own timers).
//
// An accept that fails because the process or the system is out of file
// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) leaves the pending
// connection in the kernel's queue: re-arming at once would fail again at once,
// spinning a core. Instead the acceptor waits (100 ms, doubling up to 1.6 s) and
// tries again; the first accept that succeeds ends the episode. Other errors
// (a connection reset before it was accepted, a firewall refusing it) back off the
// same way, so no error can make an acceptor spin. One line is logged when an
// episode starts and one when it ends (with how long it lasted and how many
// attempts failed), never one per attempt.
//
// Why not the "reserve descriptor" trick (keep a spare fd open; on EMFILE close it,
// accept the pending connection, close that at once and reopen the spare): it
// answers the queue by dropping connections, and the dropped one may be the very
// kubelet probe or `tabby status` that needed an answer. Waiting keeps them queued
// until a descriptor frees up. The HTTP servers get the trick's benefit without
// the drop: on EMFILE they first close their own longest-idle connection (if any)
// and accept again at once, so a probe behind idle clients still gets in.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace tabby {

class AcceptBackoff {
 public:
  static constexpr std::chrono::milliseconds kFirstDelay{100};
  static constexpr std::chrono::milliseconds kMaxDelay{1600};

  // `what` names the listener in log lines: "API socket /run/tabby.sock".
  explicit AcceptBackoff(std::string what) : what_(std::move(what)) {}

  struct Step {
    std::chrono::milliseconds delay;  // wait this long before accepting again
    std::string log;                  // non-empty once per episode: log it
  };
  // After accept() failed with `err` (an errno value) and `message` (its text).
  // `now` is the caller's clock (steady time), for the episode's length.
  Step failed(int err, const std::string& message, std::chrono::steady_clock::time_point now);
  // After an accept succeeded: a line to log when this ends an episode, else "".
  std::string succeeded(std::chrono::steady_clock::time_point now);

  bool backing_off() const { return failures_ > 0; }
  // Episodes so far (for tests and metrics).
  uint64_t episodes() const { return episodes_; }

  // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory.
  static bool is_exhaustion(int err);

 private:
  std::string what_;
  uint64_t failures_ = 0;  // in the current episode
  uint64_t episodes_ = 0;
  std::chrono::milliseconds delay_{0};
  std::chrono::steady_clock::time_point started_{};
};

}  // namespace tabby
