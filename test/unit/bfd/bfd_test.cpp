// bfd_test.cpp — the BFD core without sockets or sleeps: the control packet
// codec (RFC 5880 §4.1) and its discard rules (§6.8.6), and pairs of sessions
// wired back to back in memory on a fake clock: the three-way handshake
// Down -> Init -> Up (§6.2), detection timeout (§6.8.4), the peer's AdminDown
// (§6.8.6, §6.8.16), Poll/Final for interval changes (§6.5, §6.8.3).
#include <doctest/doctest.h>

#include "bfd/bfd.hpp"

using namespace tabby;
using namespace tabby::bfd;

namespace {

ControlPacket sample() {
  ControlPacket p;
  p.diag = Diag::DetectionTimeExpired;
  p.state = State::Up;
  p.poll = true;
  p.control_plane_independent = true;
  p.detect_mult = 5;
  p.my_discriminator = 0x01020304;
  p.your_discriminator = 0xa0b0c0d0;
  p.desired_min_tx_us = 100'000;
  p.required_min_rx_us = 250'000;
  p.required_min_echo_rx_us = 0;
  return p;
}

std::vector<uint8_t> bytes_of(const ControlPacket& p) {
  std::vector<uint8_t> b;
  encode(p, b);
  return b;
}

SessionConfig fast() {
  SessionConfig c;
  c.desired_min_tx_us = 100'000;
  c.required_min_rx_us = 100'000;
  c.detect_mult = 3;
  return c;  // no jitter: deterministic
}

// Two sessions back to back: every packet one sends reaches the other at once
// (through the codec, as on the wire), until nothing more is sent.
struct Pair {
  Session a{fast(), 11};
  Session b{fast(), 22};
  Output last_a, last_b;
  std::vector<StateChange> changes_a, changes_b;
  bool link_up = true;

  void take(Session& from_side, const Output& out, Micros now, int depth) {
    (void)from_side;
    bool from_a = &from_side == &a;
    (from_a ? last_a : last_b) = out;
    if (out.change) (from_a ? changes_a : changes_b).push_back(*out.change);
    if (!link_up || depth > 10) return;
    Session& to = from_a ? b : a;
    for (const auto& p : out.send) {
      auto decoded = decode(bytes_of(p));
      REQUIRE(decoded);
      take(to, to.on_packet(*decoded, now), now, depth + 1);
    }
  }
  void start(Micros now) {
    take(a, a.start(now), now, 0);
    take(b, b.start(now), now, 0);
  }
  // Runs both sessions' timers up to `until`, in deadline order.
  void run(Micros from, Micros until) {
    Micros now = from;
    while (now <= until) {
      std::optional<Micros> next;
      for (auto d : {last_a.tx_deadline, last_a.detect_deadline, last_b.tx_deadline, last_b.detect_deadline})
        if (d && (!next || *d < *next)) next = d;
      if (!next || *next > until) return;
      now = *next;
      if (last_a.tx_deadline == next) take(a, a.on_tx_timer(now), now, 0);
      else if (last_a.detect_deadline == next) take(a, a.on_detect_timer(now), now, 0);
      else if (last_b.tx_deadline == next) take(b, b.on_tx_timer(now), now, 0);
      else take(b, b.on_detect_timer(now), now, 0);
    }
  }
};

}  // namespace

TEST_CASE("codec: a control packet survives encode and decode, in RFC 5880 §4.1 layout") {
  auto p = sample();
  auto b = bytes_of(p);
  REQUIRE(b.size() == 24);
  CHECK(b[0] == 0x21);        // version 1, diag 1
  CHECK(b[1] == 0xe8);        // state Up (3<<6), P, C
  CHECK(b[2] == 5);
  CHECK(b[3] == 24);
  CHECK(b[4] == 0x01);
  CHECK(b[11] == 0xd0);
  auto d = decode(b);
  REQUIRE(d);
  CHECK(*d == p);
  // Final, Demand flags in their places.
  p.poll = false;
  p.final = true;
  p.demand = true;
  b = bytes_of(p);
  CHECK(b[1] == (0xc0 | 0x10 | 0x08 | 0x02));
  d = decode(b);
  REQUIRE(d);
  CHECK(*d == p);
  // Trailing bytes past the length field are ignored (UDP padding).
  b.push_back(0);
  CHECK(decode(b));
}

TEST_CASE("codec: malformed packets are discarded per RFC 5880 §6.8.6") {
  auto good = bytes_of(sample());
  auto broken = [&](auto edit) {
    auto b = good;
    edit(b);
    return decode(b);
  };
  CHECK_FALSE(decode(std::span<const uint8_t>(good.data(), 23)));                 // short datagram
  CHECK_FALSE(broken([](auto& b) { b[0] = static_cast<uint8_t>((2 << 5) | 1); }));  // version 2
  CHECK_FALSE(broken([](auto& b) { b[3] = 23; }));                                 // length < 24
  CHECK_FALSE(broken([](auto& b) { b[3] = 30; }));                                 // length > datagram
  CHECK_FALSE(broken([](auto& b) { b[2] = 0; }));                                  // Detect Mult 0
  CHECK_FALSE(broken([](auto& b) { b[1] |= 0x01; }));                              // Multipoint
  CHECK_FALSE(broken([](auto& b) { b[4] = b[5] = b[6] = b[7] = 0; }));             // My Discriminator 0
  CHECK_FALSE(broken([](auto& b) { b[8] = b[9] = b[10] = b[11] = 0; }));           // Your Discr. 0 while Up
  auto auth = broken([](auto& b) { b[1] |= 0x04; b[3] = 24; });                    // A bit, length 24
  CHECK_FALSE(auth);
  auto auth26 = good;
  auth26[1] |= 0x04;
  auth26[3] = 26;
  auth26.push_back(1);
  auth26.push_back(2);
  auto r = decode(auth26);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("authentication is not supported") != std::string::npos);
  // Your Discriminator 0 is fine while the sender is Down.
  CHECK(broken([](auto& b) { b[1] = static_cast<uint8_t>(1 << 6); b[8] = b[9] = b[10] = b[11] = 0; }));
}

TEST_CASE("config: intervals and multiplier are checked") {
  CHECK(check_config(fast()));
  auto c = fast();
  c.detect_mult = 0;
  CHECK_FALSE(check_config(c));
  c = fast();
  c.desired_min_tx_us = 10;
  CHECK_FALSE(check_config(c));
  c = fast();
  c.required_min_rx_us = 61'000'000;
  CHECK_FALSE(check_config(c));
}

TEST_CASE("session: Down -> Init -> Up on both sides (three-way handshake)") {
  Pair s;
  s.start(0);
  CHECK(s.a.state() == State::Up);
  CHECK(s.b.state() == State::Up);
  // a spoke first (Down); b saw it and went Init; a saw Init and went Up;
  // b saw Up and went Up.
  REQUIRE(s.changes_b.size() == 2);
  CHECK(s.changes_b[0].from == State::Down);
  CHECK(s.changes_b[0].to == State::Init);
  CHECK(s.changes_b[1].to == State::Up);
  REQUIRE(s.changes_a.size() == 1);
  CHECK(s.changes_a[0].from == State::Down);
  CHECK(s.changes_a[0].to == State::Up);
  CHECK(s.a.info().transitions == 1);
  CHECK(s.b.info().transitions == 2);
  CHECK(s.a.remote_discriminator() == 22);
  CHECK(s.b.remote_discriminator() == 11);
  // Up: the fast intervals apply (RFC 5880 §6.8.3's 1 s floor is gone).
  s.run(0, 2'000'000);
  CHECK(s.a.info().tx_interval_us == 100'000);
  CHECK(s.a.info().detection_time_us == 300'000);
  CHECK(s.a.state() == State::Up);
  CHECK(s.b.state() == State::Up);
}

TEST_CASE("session: a lone session stays Down and sends at 1 s at the most (RFC 5880 §6.8.3)") {
  Session a{fast(), 7};
  auto out = a.start(0);
  REQUIRE(out.send.size() == 1);
  CHECK(out.send[0].state == State::Down);
  CHECK(out.send[0].your_discriminator == 0);
  CHECK(out.send[0].desired_min_tx_us == 1'000'000);
  REQUIRE(out.tx_deadline);
  CHECK(*out.tx_deadline == 1'000'000);
  CHECK_FALSE(out.detect_deadline);
  // Too early: nothing.
  CHECK(a.on_tx_timer(500'000).send.empty());
  CHECK(a.on_tx_timer(1'000'000).send.size() == 1);
  CHECK(a.state() == State::Down);
}

TEST_CASE("session: detection time passes without a packet -> Down, diag 1") {
  Pair s;
  s.start(0);
  s.run(0, 1'000'000);
  REQUIRE(s.a.state() == State::Up);
  s.link_up = false;  // the link is cut: nothing arrives any more
  Micros cut = 1'000'000;
  s.run(cut, cut + 250'000);
  CHECK(s.a.state() == State::Up);  // 3 × 100 ms not over yet
  s.run(cut, cut + 400'000);
  CHECK(s.a.state() == State::Down);
  CHECK(s.b.state() == State::Down);
  REQUIRE(!s.changes_a.empty());
  CHECK(s.changes_a.back().from == State::Up);
  CHECK(s.changes_a.back().diag == Diag::DetectionTimeExpired);
  CHECK(s.a.remote_discriminator() == 0);  // §6.8.1: forgotten
  CHECK(s.a.info().local_diag == Diag::DetectionTimeExpired);
  // The link comes back: the sessions come Up again.
  s.link_up = true;
  s.run(cut + 400'000, cut + 3'000'000);
  CHECK(s.a.state() == State::Up);
  CHECK(s.b.state() == State::Up);
}

TEST_CASE("session: the peer going AdminDown takes us Down with diag 3") {
  Pair s;
  s.start(0);
  REQUIRE(s.a.state() == State::Up);
  s.take(s.b, s.b.set_admin_down(true, 10), 10, 0);
  CHECK(s.b.state() == State::AdminDown);
  CHECK(s.a.state() == State::Down);
  CHECK(s.changes_a.back().diag == Diag::NeighborSignaledDown);
  CHECK(s.b.info().local_diag == Diag::AdministrativelyDown);
  // While AdminDown, b ignores a's packets and stays there.
  s.run(10, 3'000'000);
  CHECK(s.b.state() == State::AdminDown);
  CHECK(s.a.state() == State::Down);
  // Back on: both come Up.
  s.take(s.b, s.b.set_admin_down(false, 3'000'001), 3'000'001, 0);
  s.run(3'000'001, 6'000'000);
  CHECK(s.a.state() == State::Up);
  CHECK(s.b.state() == State::Up);
}

TEST_CASE("session: a packet for another discriminator is ignored") {
  Session a{fast(), 11};
  (void)a.start(0);
  ControlPacket p;
  p.state = State::Init;
  p.my_discriminator = 99;
  p.your_discriminator = 12345;  // not ours
  auto out = a.on_packet(p, 10);
  CHECK(out.send.empty());
  CHECK_FALSE(out.change);
  CHECK(a.state() == State::Down);
  CHECK(a.remote_discriminator() == 0);
}

TEST_CASE("session: Poll/Final on going Up and on an interval change (RFC 5880 §6.5, §6.8.3)") {
  Session a{fast(), 11};
  (void)a.start(0);
  ControlPacket from_b;
  from_b.state = State::Init;
  from_b.my_discriminator = 22;
  from_b.your_discriminator = 11;
  from_b.desired_min_tx_us = 1'000'000;
  from_b.required_min_rx_us = 100'000;
  from_b.detect_mult = 3;
  auto out = a.on_packet(from_b, 1000);
  REQUIRE(out.change);
  CHECK(out.change->to == State::Up);
  // Going Up drops the 1 s floor: announced with the Poll bit.
  REQUIRE(out.send.size() == 1);
  CHECK(out.send[0].poll);
  CHECK(out.send[0].desired_min_tx_us == 100'000);
  CHECK(a.info().poll_active);
  // Periodic packets keep the P bit until a Final arrives.
  auto tx = a.on_tx_timer(*out.tx_deadline);
  REQUIRE(tx.send.size() == 1);
  CHECK(tx.send[0].poll);
  from_b.state = State::Up;
  from_b.final = true;
  (void)a.on_packet(from_b, 200'000);
  CHECK_FALSE(a.info().poll_active);
  from_b.final = false;

  // The peer polls us: we answer with F at once, without P.
  from_b.poll = true;
  out = a.on_packet(from_b, 210'000);
  REQUIRE(out.send.size() == 1);
  CHECK(out.send[0].final);
  CHECK_FALSE(out.send[0].poll);
  from_b.poll = false;

  // We slow down (tx 100 ms -> 500 ms): P set, the new value advertised, but the
  // interval in use changes only when the Final arrives.
  auto slow = fast();
  slow.desired_min_tx_us = 500'000;
  out = a.reconfigure(slow, 300'000);
  REQUIRE(out.send.size() == 1);
  CHECK(out.send[0].poll);
  CHECK(out.send[0].desired_min_tx_us == 500'000);
  CHECK(a.info().tx_interval_us == 100'000);
  from_b.final = true;
  (void)a.on_packet(from_b, 310'000);
  CHECK_FALSE(a.info().poll_active);
  CHECK(a.info().tx_interval_us == 500'000);

  // Faster receive interval: detection keeps the old (larger) value until Final.
  from_b.final = false;
  from_b.desired_min_tx_us = 50'000;
  auto rx_fast = slow;
  rx_fast.required_min_rx_us = 50'000;
  (void)a.on_packet(from_b, 320'000);
  CHECK(a.info().detection_time_us == 300'000);  // 3 × max(100 ms in use, 50 ms)
  out = a.reconfigure(rx_fast, 330'000);
  CHECK(a.info().detection_time_us == 300'000);
  from_b.final = true;
  (void)a.on_packet(from_b, 340'000);
  CHECK(a.info().detection_time_us == 150'000);
}

TEST_CASE("session: transmit interval honours the peer's RequiredMinRx; zero stops periodic packets") {
  Pair s;
  s.start(0);
  s.run(0, 1'000'000);
  ControlPacket p;
  p.state = State::Up;
  p.my_discriminator = 22;
  p.your_discriminator = 11;
  p.desired_min_tx_us = 100'000;
  p.required_min_rx_us = 400'000;
  p.detect_mult = 3;
  (void)s.a.on_packet(p, 1'000'100);
  CHECK(s.a.info().tx_interval_us == 400'000);
  p.required_min_rx_us = 0;
  auto out = s.a.on_packet(p, 1'000'200);
  CHECK_FALSE(out.tx_deadline);
}
