// bfd_io_test.cpp — the BFD I/O shell over real loopback UDP sockets: two
// Services (127.0.0.1 and 127.0.0.2, a test port instead of 3784) bring a
// session Up (RFC 5880 §6.2), a removed session tells its peer (AdminDown,
// §6.8.16) and a packet not sent with TTL 255 is dropped (RFC 5881 §5).
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <vector>

#include "bfd/bfd_io.hpp"

using namespace tabby;
using namespace tabby::bfd;

namespace {
constexpr uint16_t kPort = 13784;
IpAddress ip(const char* s) { return *IpAddress::parse(s); }

SessionConfig fast() {
  SessionConfig c;
  c.desired_min_tx_us = 20'000;
  c.required_min_rx_us = 20'000;
  c.detect_mult = 3;
  return c;
}

template <class F>
bool run_until(boost::asio::io_context& io, F done, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < end) {
    io.restart();
    io.run_for(std::chrono::milliseconds(10));
  }
  return done();
}
}  // namespace

TEST_CASE("two services on loopback: Up both ways; removing one takes the other Down with diag 3") {
  boost::asio::io_context io;
  Service a(io, kPort, ip("127.0.0.1")), b(io, kPort, ip("127.0.0.2"));
  std::vector<StateChange> ca, cb;
  REQUIRE(a.add(ip("127.0.0.2"), ip("127.0.0.1"), fast(), [&](const StateChange& c) { ca.push_back(c); }));
  REQUIRE(b.add(ip("127.0.0.1"), ip("127.0.0.2"), fast(), [&](const StateChange& c) { cb.push_back(c); }));
  auto up = [&] {
    return a.info(ip("127.0.0.2"))->state == State::Up && b.info(ip("127.0.0.1"))->state == State::Up;
  };
  REQUIRE(run_until(io, up, std::chrono::milliseconds(5000)));
  REQUIRE(run_until(io, [&] { return !ca.empty() && !cb.empty(); }, std::chrono::milliseconds(500)));
  CHECK(ca.back().to == State::Up);
  CHECK(cb.back().to == State::Up);
  // Up for a while: no spurious detection timeouts at 20 ms × 3.
  run_until(io, [] { return false; }, std::chrono::milliseconds(300));
  CHECK(up());
  CHECK(a.info(ip("127.0.0.2"))->tx_interval_us == 20'000);
  b.remove(ip("127.0.0.1"));
  REQUIRE(run_until(io, [&] { return a.info(ip("127.0.0.2"))->state == State::Down; },
                    std::chrono::milliseconds(1000)));
  CHECK(a.info(ip("127.0.0.2"))->local_diag == Diag::NeighborSignaledDown);
  REQUIRE(run_until(io, [&] { return ca.back().to == State::Down; }, std::chrono::milliseconds(500)));
  CHECK(ca.back().remote == State::AdminDown);  // not a failure (RFC 5882 §3.2)
  CHECK_FALSE(b.info(ip("127.0.0.1")));
}

TEST_CASE("a control packet not sent with TTL 255 is dropped; a bad config is refused") {
  boost::asio::io_context io;
  Service a(io, kPort + 1, ip("127.0.0.1"));
  REQUIRE(a.add(ip("127.0.0.3"), ip("127.0.0.1"), fast(), nullptr));
  // A valid Down packet from 127.0.0.3, but with TTL 64.
  ControlPacket p;
  p.state = State::Down;
  p.my_discriminator = 77;
  p.detect_mult = 3;
  p.desired_min_tx_us = 1'000'000;
  p.required_min_rx_us = 1'000'000;
  std::vector<uint8_t> bytes;
  encode(p, bytes);
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(0x7f000003);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) == 0);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(kPort + 1);
  dst.sin_addr.s_addr = htonl(0x7f000001);
  int ttl = 64;
  REQUIRE(::setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) == 0);
  REQUIRE(::sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 24);
  REQUIRE(run_until(io, [&] { return a.dropped() == 1; }, std::chrono::milliseconds(1000)));
  CHECK(a.info(ip("127.0.0.3"))->state == State::Down);
  CHECK(a.info(ip("127.0.0.3"))->remote_discriminator == 0);
  // The same packet with TTL 255 is taken: the session moves to Init.
  ttl = 255;
  REQUIRE(::setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) == 0);
  REQUIRE(::sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 24);
  REQUIRE(run_until(io, [&] { return a.info(ip("127.0.0.3"))->state == State::Init; },
                    std::chrono::milliseconds(1000)));
  CHECK(a.info(ip("127.0.0.3"))->remote_discriminator == 77);
  CHECK(a.dropped() == 1);
  ::close(fd);
  auto bad = fast();
  bad.detect_mult = 0;
  CHECK_FALSE(a.add(ip("127.0.0.4"), std::nullopt, bad, nullptr));
}
