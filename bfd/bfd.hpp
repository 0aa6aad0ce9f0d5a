// bfd.hpp — the public header of the bfd module's pure core: the BFD control
// packet codec (RFC 5880 §4.1, §6.8.6) and one session's state machine in
// asynchronous mode (RFC 5880 §6.1-§6.8: states Down/Init/Up/AdminDown, the
// three-way handshake, detection time, Poll/Final sequence for timer changes),
// with the single-hop rules of RFC 5881 left to the I/O shell (ports, TTL 255).
//
// Sans-IO like bgp/fsm: a Session takes inputs (a decoded packet, a timer
// expiry, an admin change, new intervals) with the current time in
// microseconds, and returns an Output: packets to send and the deadlines of its
// two timers (transmit, detection). Echo, demand mode and authentication are
// not implemented; a packet with the A bit is discarded (the shell refuses an
// authentication setting before a session exists).
//
// Module bfd (pure core). Owns: the codec and the session state. May call: base.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/base.hpp"

namespace tabby::bfd {

// RFC 5881 §4: control packets go to UDP 3784, from a source port in 49152-65535.
constexpr uint16_t kControlPort = 3784;
constexpr uint16_t kSourcePortMin = 49152;
constexpr uint16_t kSourcePortMax = 65535;
// RFC 5881 §5: sent with TTL/hop limit 255; received ones must carry 255 (GTSM).
constexpr int kTtl = 255;
constexpr size_t kPacketSize = 24;  // mandatory section, no authentication

enum class State : uint8_t { AdminDown = 0, Down = 1, Init = 2, Up = 3 };

// RFC 5880 §4.1 diagnostic codes.
enum class Diag : uint8_t {
  None = 0,
  DetectionTimeExpired = 1,
  EchoFailed = 2,
  NeighborSignaledDown = 3,
  ForwardingPlaneReset = 4,
  PathDown = 5,
  ConcatenatedPathDown = 6,
  AdministrativelyDown = 7,
  ReverseConcatenatedPathDown = 8,
};

const char* state_name(State s);  // "AdminDown", "Down", "Init", "Up"
const char* diag_text(Diag d);    // "control detection time expired", ...

// RFC 5880 §4.1, the mandatory section. Intervals in microseconds.
struct ControlPacket {
  uint8_t version = 1;
  Diag diag = Diag::None;
  State state = State::Down;
  bool poll = false, final = false;
  bool control_plane_independent = false;
  bool auth = false, demand = false, multipoint = false;
  uint8_t detect_mult = 3;
  uint32_t my_discriminator = 0;
  uint32_t your_discriminator = 0;
  uint32_t desired_min_tx_us = 0;
  uint32_t required_min_rx_us = 0;
  uint32_t required_min_echo_rx_us = 0;
  bool operator==(const ControlPacket&) const = default;
};

void encode(const ControlPacket& p, std::vector<uint8_t>& out);  // appends 24 bytes
// The checks of RFC 5880 §6.8.6 that need no session: version 1, length field
// at least 24 (26 with the A bit) and no larger than the datagram, Detect Mult
// and My Discriminator non-zero, Multipoint clear, Your Discriminator non-zero
// unless the state is Down or AdminDown. Authentication is not supported: a
// packet with the A bit is an error too ("discard" either way).
Result<ControlPacket> decode(std::span<const uint8_t> datagram);

// ---------------------------------------------------------------- one session
struct SessionConfig {
  uint32_t desired_min_tx_us = 300'000;
  uint32_t required_min_rx_us = 300'000;
  uint8_t detect_mult = 3;
  // RFC 5880 §6.8.7 jitter: maps an interval (µs) to the one actually used,
  // e.g. uniform(0.75, 1.0) × it (0.75-0.9 when detect_mult is 1). Empty: none.
  std::function<uint32_t(uint32_t interval_us, uint8_t detect_mult)> jitter;
};

// Checks the values a session relies on (intervals 1 ms - 60 s, multiplier 1-255).
Status check_config(const SessionConfig& c);

using Micros = int64_t;  // a monotonic time in microseconds (the caller's clock)

struct StateChange {
  State from = State::Down, to = State::Down;
  Diag diag = Diag::None;  // local diagnostic with the change (why it went Down)
  // The peer's state as last received: AdminDown here means the peer took the
  // session down on purpose, which RFC 5882 §3.2 says is not a path failure.
  State remote = State::Down;
};

struct Output {
  std::vector<ControlPacket> send;        // in order, right now
  std::optional<StateChange> change;      // at most one per input
  // The timers after this input: absolute deadlines; nullopt = not running.
  std::optional<Micros> tx_deadline;
  std::optional<Micros> detect_deadline;
};

// What `tabby status` and /metrics show.
struct SessionInfo {
  State state = State::Down;
  State remote_state = State::Down;
  Diag local_diag = Diag::None;
  uint32_t local_discriminator = 0, remote_discriminator = 0;
  uint32_t tx_interval_us = 0;     // negotiated, before jitter
  uint64_t detection_time_us = 0;  // 0 while no packet has been received
  bool poll_active = false;
  uint64_t transitions = 0;        // state changes so far
};

class Session {
 public:
  // local_discriminator: unique and non-zero among the shell's sessions.
  Session(SessionConfig config, uint32_t local_discriminator);

  // The first packet goes out now; the timers start (call once).
  Output start(Micros now);

  // A decoded packet for this session (the shell demultiplexed it: Your
  // Discriminator, or the source address while it is zero).
  Output on_packet(const ControlPacket& p, Micros now);
  // The transmit / detection deadline passed (the shell calls these only at or
  // after the deadline the last Output gave).
  Output on_tx_timer(Micros now);
  Output on_detect_timer(Micros now);
  // Administrative control (RFC 5880 §6.8.16): AdminDown stops the session
  // (diag 7, the peer sees AdminDown and must not treat it as a failure); back
  // on, the session starts over from Down.
  Output set_admin_down(bool down, Micros now);
  // New intervals/multiplier (RFC 5880 §6.8.3): starts a Poll Sequence; an
  // increased transmit interval or a decreased receive interval take effect
  // only when the peer answered with Final.
  Output reconfigure(SessionConfig config, Micros now);

  State state() const { return state_; }
  SessionInfo info() const;
  uint32_t local_discriminator() const { return local_disc_; }
  uint32_t remote_discriminator() const { return remote_disc_; }

 private:
  ControlPacket make_packet(bool final) const;
  uint32_t advertised_tx_us() const;  // bfd.DesiredMinTxInterval (1 s floor while not Up)
  uint32_t tx_interval_us() const;
  uint64_t detection_time_us() const;
  void apply_intervals(bool final_received);
  void set_state(State s, Diag d, Output& out, Micros now);
  void send_now(Output& out, Micros now, bool final);
  void schedule_tx(Micros now);
  Output finish(Output out) const;

  SessionConfig cfg_;  // what the user asked for (advertised at once)
  // Values in use by the timers: they differ from the advertised ones while a
  // Poll Sequence runs (RFC 5880 §6.8.3).
  uint32_t tx_used_us_ = 1'000'000, rx_used_us_ = 0;
  bool poll_active_ = false;
  uint32_t local_disc_ = 0, remote_disc_ = 0;
  State state_ = State::Down, remote_state_ = State::Down;
  Diag diag_ = Diag::None;
  uint32_t remote_min_rx_us_ = 1;        // RFC 5880 §6.8.1: initial 1
  uint32_t remote_desired_tx_us_ = 0;    // from the last packet
  uint8_t remote_detect_mult_ = 0;       // 0: nothing received
  std::optional<Micros> tx_at_, detect_at_;
  uint64_t transitions_ = 0;
};

}  // namespace tabby::bfd
