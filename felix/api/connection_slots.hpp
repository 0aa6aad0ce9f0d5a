// connection_slots.hpp — the connection cap of the agent's HTTP servers (the local
// API socket and the health/metrics port), as pure logic: which open connection
// to close so that a new one can always be admitted.
//
// A server at its cap never refuses a new connection (a refused kubelet probe or
// `tabby status` is exactly what an attacker holding idle connections wants):
// it closes the connection that has waited longest for a request, whether idle
// (no byte yet) or trickling one (slowloris); only when every connection is busy
// answering does it close the one that has been answering longest. A connection
// that is being answered has already delivered a whole request, so the probe
// that just connected and sent its request is the last one to go.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace tabby::felix {

// Limits of one HTTP server (the defaults are the API socket's; see README
// "Local API", "Health and metrics").
struct HttpServerLimits {
  size_t max_connections = 64;
  // A connection must deliver a complete request within this time of being
  // accepted or of its previous answer (idle keep-alive and slow senders alike).
  std::chrono::milliseconds request_timeout{10000};
  // Writing one answer may take this long (a client that does not read).
  std::chrono::milliseconds write_timeout{60000};
  uint32_t header_limit = 8192;   // bytes of request line + headers; more: 431
  uint64_t body_limit = 4096;     // bytes of request body; more: 413
};

template <class Conn>
class ConnectionSlots {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = uint64_t;

  explicit ConnectionSlots(size_t cap) : cap_(cap ? cap : 1) {}

  size_t size() const { return open_.size(); }
  size_t cap() const { return cap_; }
  bool full() const { return open_.size() >= cap_; }

  // A new connection, waiting for its first request.
  Id add(Conn* c, Clock::time_point now) {
    Id id = next_++;
    open_[id] = Slot{c, now, false};
    return id;
  }
  void remove(Id id) { open_.erase(id); }
  // Waiting for (or receiving) a request since `now`.
  void reading(Id id, Clock::time_point now) { set(id, now, false); }
  // Writing an answer since `now`.
  void answering(Id id, Clock::time_point now) { set(id, now, true); }

  // The connection to close to make room: the one waiting longest for a
  // request, else the one answering longest; nullopt when none is open.
  std::optional<Conn*> victim() const {
    const Slot* best = nullptr;
    for (const auto& [id, s] : open_)
      if (!best || (best->answering && !s.answering) ||
          (best->answering == s.answering && s.since < best->since))
        best = &s;
    if (!best) return std::nullopt;
    return best->conn;
  }
  // Every open connection (to close them all when the server stops).
  std::vector<Conn*> all() const {
    std::vector<Conn*> v;
    for (const auto& [id, s] : open_) v.push_back(s.conn);
    return v;
  }
  // Only a connection waiting for a request (for freeing a descriptor when the
  // process is out of them); nullopt when every connection is answering.
  std::optional<Conn*> idle_victim() const {
    auto v = victim();
    if (!v) return v;
    for (const auto& [id, s] : open_)
      if (s.conn == *v && s.answering) return std::nullopt;
    return v;
  }

 private:
  struct Slot {
    Conn* conn;
    Clock::time_point since;
    bool answering;
  };
  void set(Id id, Clock::time_point now, bool answering) {
    auto it = open_.find(id);
    if (it == open_.end()) return;
    it->second.since = now;
    it->second.answering = answering;
  }
  size_t cap_;
  Id next_ = 1;
  std::map<Id, Slot> open_;
};

}  // namespace tabby::felix
