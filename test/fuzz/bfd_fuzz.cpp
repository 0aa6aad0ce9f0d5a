// bfd_fuzz.cpp — libFuzzer target for the BFD pure core (bfd/bfd.hpp): the control
// packet decoder (RFC 5880 §4.1, §6.8.6) on datagrams from the network, and one
// session's state machine (§6.8) driven by a script of packets, timer expiries,
// admin changes and reconfigurations.
// Input: byte 0 selects the mode.
//   even  the rest is one datagram: decode it; what decodes re-encodes to 24
//         bytes that decode to an equal packet.
//   odd   a script of steps; each step is an opcode byte, a time advance byte
//         (× 997 µs) and its operands:
//           0 a 24-byte datagram for the session (decoded; discarded if bad)
//           1 the transmit timer, 2 the detection timer (each only at or after
//             the deadline the session gave, as the I/O shell calls them)
//           3 admin down, 4 admin up
//           5 reconfigure: tx (2 bytes × 1 ms), rx (2 bytes × 1 ms), multiplier
//             (1 byte); applied only when check_config accepts it
// Invariants beyond "no crash, no sanitizer report, no hang": every packet the
// session sends encodes and decodes back equal, carries the session's own
// discriminator and a non-zero multiplier; a state change changes the state and
// is what state() then says; a timer that fired is re-armed later than now, or
// stopped.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <vector>

#include "bfd/bfd.hpp"

using namespace tabby;
using namespace tabby::bfd;

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bfd_fuzz: %s\n", what);
  std::abort();
}

void round_trip(const ControlPacket& p) {
  std::vector<uint8_t> out;
  encode(p, out);
  if (out.size() != kPacketSize) die("encode did not give 24 bytes");
  auto back = decode(out);
  if (!back) die("an encoded packet does not decode");
  if (!(*back == p)) die("a packet does not survive encode + decode");
}

void datagram(std::span<const uint8_t> d) {
  auto p = decode(d);
  if (p) round_trip(*p);
}

struct Script {
  std::span<const uint8_t> in;
  size_t pos = 0;
  bool has(size_t n) const { return pos + n <= in.size(); }
  uint8_t u8() { return in[pos++]; }
  uint32_t u16() {
    uint32_t v = (uint32_t(in[pos]) << 8) | in[pos + 1];
    pos += 2;
    return v;
  }
};

void check_output(const Session& s, const Output& out, Micros now, State before) {
  for (const auto& p : out.send) {
    if (p.my_discriminator != s.local_discriminator()) die("a sent packet carries another discriminator");
    if (p.detect_mult == 0) die("a sent packet has Detect Mult 0");
    round_trip(p);
  }
  if (out.change) {
    if (out.change->from == out.change->to) die("a state change that does not change the state");
    if (out.change->from != before) die("a state change from a state the session was not in");
    if (out.change->to != s.state()) die("state() disagrees with the last change");
  } else if (s.state() != before) {
    die("the state changed without a StateChange");
  }
}

// A timer that fired must be re-armed in the future (or stopped): the shell
// would otherwise call it again at once, forever.
void check_rearmed(const std::optional<Micros>& deadline, Micros now, const char* which) {
  if (deadline && *deadline <= now) die(which);
}

void session(std::span<const uint8_t> in) {
  Session s(SessionConfig{}, 0x1234);
  Micros now = 1'000'000;
  Output last = s.start(now);
  check_output(s, last, now, State::Down);
  Script sc{in};
  while (sc.has(2)) {
    uint8_t op = sc.u8() % 6;
    now += Micros(sc.u8()) * 997;
    State before = s.state();
    Output out;
    switch (op) {
      case 0: {
        if (!sc.has(kPacketSize)) return;
        auto p = decode(sc.in.subspan(sc.pos, kPacketSize));
        sc.pos += kPacketSize;
        if (!p) continue;
        out = s.on_packet(*p, now);
        break;
      }
      case 1:
        if (!last.tx_deadline) continue;
        now = std::max(now, *last.tx_deadline);
        out = s.on_tx_timer(now);
        check_rearmed(out.tx_deadline, now, "the transmit timer fired and was re-armed at or before now");
        break;
      case 2:
        if (!last.detect_deadline) continue;
        now = std::max(now, *last.detect_deadline);
        out = s.on_detect_timer(now);
        check_rearmed(out.detect_deadline, now, "the detection timer fired and was re-armed at or before now");
        break;
      case 3:
        out = s.set_admin_down(true, now);
        break;
      case 4:
        out = s.set_admin_down(false, now);
        break;
      case 5: {
        if (!sc.has(5)) return;
        SessionConfig c;
        c.desired_min_tx_us = sc.u16() * 1000;
        c.required_min_rx_us = sc.u16() * 1000;
        c.detect_mult = sc.u8();
        if (!check_config(c)) continue;
        out = s.reconfigure(c, now);
        break;
      }
    }
    check_output(s, out, now, before);
    last = out;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  if (data[0] % 2 == 0)
    datagram(rest);
  else
    session(rest);
  return 0;
}
