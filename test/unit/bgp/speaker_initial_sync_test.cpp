// speaker_initial_sync_test.cpp — when a real bgp::Speaker calls its initial table
// complete (RFC 4724 §4.1: End-of-RIB from every peer): initial_sync_done() and the
// on_initial_sync callback must come only after the best routes of the UPDATEs ahead
// of the last End-of-RIB were handed to on_best_route_change. A dataplane deletes
// leftover kernel routes at that point, and the agent's /readyz reads it: a table
// called complete one event-loop turn early loses routes on a restart. Two speakers
// on 127.0.0.1/.2; the loop is run one handler at a time so no turn goes unseen.
#include <doctest/doctest.h>

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "bgp/speaker.hpp"
#include "test/support/loopback_port.hpp"

using namespace tabby;
namespace asio = boost::asio;

namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

bgp::SpeakerConfig config(const char* addr, uint16_t port, const char* peer) {
  bgp::SpeakerConfig c;
  c.router_id = ip(addr);
  c.asn = 64512;
  c.listen_address = ip(addr);
  c.listen_port = port;
  c.restart_time = 30;
  bgp::NeighborConfig n;
  n.address = ip(peer);
  n.port = port;
  n.asn = 64512;
  n.local_address = ip(addr);
  n.connect_retry_time = 1;
  n.hold_time = 9;
  n.families = {bgp::kIpv4Unicast};
  c.peers = {n};
  return c;
}

}  // namespace

TEST_CASE("speaker: the initial table is complete only once its best routes were handed over") {
  constexpr int kRoutes = 300;
  asio::io_context io;
  const uint16_t port = tabby::test::free_port_on_loopback_1_to_3();
  auto a = config("127.0.0.1", port, "127.0.0.2");
  auto b = config("127.0.0.2", port, "127.0.0.1");
  b.peers[0].passive = true;
  for (int i = 0; i < kRoutes; ++i)
    a.announcements.push_back(bgp::Announcement{
        *Prefix::parse("10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24"), {}, {},
        ip("127.0.0.1")});
  bgp::Speaker sa(io, a), sb(io, b);
  std::set<Prefix> delivered;
  sb.on_best_route_change([&](const std::vector<bgp::BestRouteChange>& changes) {
    for (const auto& c : changes)
      if (c.next_hops.empty()) delivered.erase(c.prefix);
      else delivered.insert(c.prefix);
  });
  size_t at_callback = 0;
  bool callback_saw_done = false;
  int callbacks = 0;
  sb.on_initial_sync([&] {
    ++callbacks;
    at_callback = delivered.size();
    callback_saw_done = sb.initial_sync_done();
  });
  REQUIRE(sa.start());
  REQUIRE(sb.start());
  // One handler at a time: the first turn after which initial_sync_done() reads true.
  size_t at_done = 0;
  bool done = false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done && std::chrono::steady_clock::now() < end) {
    io.run_one_for(std::chrono::milliseconds(5));
    if (sb.initial_sync_done()) {
      done = true;
      at_done = delivered.size();
    }
  }
  REQUIRE_MESSAGE(done, "the speaker never called its initial table complete");
  CHECK(at_done == kRoutes);
  CHECK(callbacks == 1);
  CHECK(at_callback == kRoutes);
  CHECK(callback_saw_done);
  sa.stop(false, "test over");
  sb.stop(false, "test over");
  io.run_for(std::chrono::milliseconds(20));
}
