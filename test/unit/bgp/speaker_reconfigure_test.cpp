// speaker_reconfigure_test.cpp — run-time changes of a real bgp::Speaker
// (Speaker::reconfigure): three speakers on one io_context talk BGP over
// loopback (127.0.0.1/.2/.3, one port each on its own address) and each kind
// of change is applied while the sessions run:
//   cluster ID (RFC 4456 §7-§8: reflected routes re-sent with the new ID in
//   CLUSTER_LIST, no session reset), a peer's client role (only that session
//   resets), router ID and AS (sessions restart, gracefully: the routes stay
//   at the peers throughout, RFC 4724), graceful-restart settings (new OPENs),
//   listen address/port (rebind; a bind that fails is an error while the rest
//   of the config, peers included, still applies).
#include <doctest/doctest.h>

#include <utility>

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bgp/speaker.hpp"
#include "test/support/loopback_port.hpp"

using namespace tabby;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }
Prefix pfx(const char* s) { return *Prefix::parse(s); }

// A port free on 127.0.0.1-3 (each listens on its own address).
uint16_t free_port() { return tabby::test::free_port_on_loopback_1_to_3(); }

bgp::NeighborConfig neighbor(const char* addr, uint16_t port, uint32_t asn, const char* local) {
  bgp::NeighborConfig n;
  n.address = ip(addr);
  n.port = port;
  n.asn = asn;
  n.local_address = ip(local);
  n.connect_retry_time = 1;
  n.hold_time = 9;
  n.families = {bgp::kIpv4Unicast};
  return n;
}

bgp::SpeakerConfig speaker_config(const char* addr, uint16_t port, uint32_t asn = 64512) {
  bgp::SpeakerConfig c;
  c.router_id = ip(addr);
  c.asn = asn;
  c.listen_address = ip(addr);
  c.listen_port = port;
  c.restart_time = 30;
  return c;
}

std::optional<bgp::PeerStatus> peer_of(const bgp::Speaker& s, const char* addr) {
  for (const auto& p : s.peers())
    if (p.address == ip(addr)) return p;
  return std::nullopt;
}

bool established(const bgp::Speaker& s, const char* addr) {
  auto p = peer_of(s, addr);
  return p && p->state == "Established";
}

// The best path of `prefix` at `s`, if any.
std::optional<bgp::PathSnapshot> best(const bgp::Speaker& s, const char* prefix) {
  for (const auto& r : s.routes())
    if (r.prefix == pfx(prefix))
      for (const auto& p : r.paths)
        if (p.best) return p;
  return std::nullopt;
}

// Runs the loop until `done` holds (true) or `ms` pass (false). `each` runs
// between turns (continuous checks while things change).
bool run_until(asio::io_context& io, const std::function<bool()>& done, int ms,
               const std::function<void()>& each = {}) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    io.run_for(std::chrono::milliseconds(5));
    if (each) each();
  }
  return done();
}

// A reflector (.1, cluster ID 10.0.0.1) with two clients (.2 announcing
// 10.2.0.0/24 and .3 announcing 10.3.0.0/24), all in AS 64512.
struct Triangle {
  asio::io_context io;
  uint16_t port = free_port();
  bgp::SpeakerConfig rc = speaker_config("127.0.0.1", port), c2 = speaker_config("127.0.0.2", port),
                     c3 = speaker_config("127.0.0.3", port);
  std::unique_ptr<bgp::Speaker> rr, s2, s3;

  Triangle() {
    rc.cluster_id = ip("10.0.0.1");
    auto client = [&](const char* a) {
      auto n = neighbor(a, port, 64512, "127.0.0.1");
      n.route_reflector_client = true;
      return n;
    };
    rc.peers = {client("127.0.0.2"), client("127.0.0.3")};
    // As between tabby nodes (felix/calc/calc.cpp), the higher address waits for the
    // lower one to dial: no connection collision when both sides restart at once.
    c2.peers = {neighbor("127.0.0.1", port, 64512, "127.0.0.2")};
    c3.peers = {neighbor("127.0.0.1", port, 64512, "127.0.0.3")};
    c2.peers[0].passive = c3.peers[0].passive = true;
    c2.announcements = {bgp::Announcement{pfx("10.2.0.0/24"), {}, {}, ip("127.0.0.2")}};
    c3.announcements = {bgp::Announcement{pfx("10.3.0.0/24"), {}, {}, ip("127.0.0.3")}};
    rr = std::make_unique<bgp::Speaker>(io, rc);
    s2 = std::make_unique<bgp::Speaker>(io, c2);
    s3 = std::make_unique<bgp::Speaker>(io, c3);
    // The speakers stand for agents whose kernel routes stay while their sessions
    // restart (RFC 4724 §3 F bit set); without it the peers would flush our routes
    // on the new OPEN (the bit both ways: test/unit/felix/agent/runtime_test.cpp).
    for (auto* s : {rr.get(), s2.get(), s3.get()}) s->set_forwarding_preserved(true);
    REQUIRE(rr->start());
    REQUIRE(s2->start());
    REQUIRE(s3->start());
    REQUIRE(run_until(io, [&] { return all_up() && best(*s3, "10.2.0.0/24") && best(*s2, "10.3.0.0/24"); }, 10000));
  }
  ~Triangle() {
    for (auto* s : {rr.get(), s2.get(), s3.get()}) s->stop(false, "test over");
    io.run_for(std::chrono::milliseconds(20));
  }
  bool all_up() const {
    return established(*rr, "127.0.0.2") && established(*rr, "127.0.0.3") && established(*s2, "127.0.0.1") &&
           established(*s3, "127.0.0.1");
  }
  uint32_t flaps() const {
    uint32_t n = 0;
    for (auto* s : {rr.get(), s2.get(), s3.get()})
      for (const auto& p : s->peers()) n += p.flaps;
    return n;
  }
};

std::vector<uint32_t> cluster_list_at(const bgp::Speaker& s, const char* prefix) {
  auto b = best(s, prefix);
  if (!b || !b->attrs) return {};
  return b->attrs->cluster_list;
}

}  // namespace

TEST_CASE("speaker reconfigure: a cluster ID change re-sends reflected routes with the new ID, no session resets") {
  Triangle t;
  CHECK(cluster_list_at(*t.s3, "10.2.0.0/24") == std::vector<uint32_t>{ip("10.0.0.1").v4_host_order()});
  auto rc = t.rc;
  rc.cluster_id = ip("10.0.0.99");
  auto st = t.rr->reconfigure(rc);
  REQUIRE_MESSAGE(st, (st ? "" : st.error().message));
  CHECK(t.rr->config().cluster_id == ip("10.0.0.99"));
  const auto want = std::vector<uint32_t>{ip("10.0.0.99").v4_host_order()};
  CHECK(run_until(t.io, [&] {
    return cluster_list_at(*t.s3, "10.2.0.0/24") == want && cluster_list_at(*t.s2, "10.3.0.0/24") == want;
  }, 5000));
  CHECK(t.all_up());
  CHECK(t.flaps() == 0);  // nobody's role changed: no session was reset
  // Back to the default (the router ID) works the same way.
  rc.cluster_id.reset();
  REQUIRE(t.rr->reconfigure(rc));
  const auto rid = std::vector<uint32_t>{ip("127.0.0.1").v4_host_order()};
  CHECK(run_until(t.io, [&] { return cluster_list_at(*t.s3, "10.2.0.0/24") == rid; }, 5000));
  CHECK(t.flaps() == 0);
}

TEST_CASE("speaker reconfigure: a route that now carries our new cluster ID is a loop and goes") {
  // .2 is a non-client iBGP peer of .1 whose route arrives with CLUSTER_LIST
  // [10.0.0.7] (it reflects it from elsewhere: a sibling reflector). When .1
  // takes cluster ID 10.0.0.7 too, the route loops (RFC 4456 §8) and must go.
  asio::io_context io;
  uint16_t port = free_port();
  auto a = speaker_config("127.0.0.1", port), b = speaker_config("127.0.0.2", port), c = speaker_config("127.0.0.3", port);
  a.peers = {neighbor("127.0.0.2", port, 64512, "127.0.0.1")};
  b.peers = {neighbor("127.0.0.1", port, 64512, "127.0.0.2"), neighbor("127.0.0.3", port, 64512, "127.0.0.2")};
  b.peers[1].route_reflector_client = true;
  b.cluster_id = ip("10.0.0.7");
  c.peers = {neighbor("127.0.0.2", port, 64512, "127.0.0.3")};
  c.announcements = {bgp::Announcement{pfx("10.3.0.0/24"), {}, {}, ip("127.0.0.3")}};
  bgp::Speaker sa(io, a), sb(io, b), sc(io, c);
  for (auto* s : {&sa, &sb, &sc}) s->set_forwarding_preserved(true);
  REQUIRE(sa.start());
  REQUIRE(sb.start());
  REQUIRE(sc.start());
  REQUIRE(run_until(io, [&] { return best(sa, "10.3.0.0/24").has_value(); }, 10000));
  a.cluster_id = ip("10.0.0.7");
  REQUIRE(sa.reconfigure(a));
  CHECK(run_until(io, [&] { return !best(sa, "10.3.0.0/24"); }, 5000));
  CHECK(established(sa, "127.0.0.2"));
  // And back: the route, refused under 10.0.0.7, is asked for again (ROUTE-REFRESH).
  a.cluster_id = ip("10.0.0.8");
  REQUIRE(sa.reconfigure(a));
  CHECK(run_until(io, [&] { return best(sa, "10.3.0.0/24").has_value(); }, 5000));
  CHECK(peer_of(sa, "127.0.0.2")->flaps == 0);
  for (auto* s : {&sa, &sb, &sc}) s->stop(false, "test over");
  io.run_for(std::chrono::milliseconds(20));
}

TEST_CASE("speaker reconfigure: a peer that becomes a client resets only its own session") {
  Triangle t;
  auto rc = t.rc;
  rc.peers[0].route_reflector_client = false;  // .2 is no longer a client
  REQUIRE(t.rr->reconfigure(rc));
  // Only .2's session is reset (Cease/Other Configuration Change); .3 keeps its.
  CHECK(run_until(t.io, [&] { return t.all_up() && peer_of(*t.s2, "127.0.0.1")->flaps == 1; }, 8000));
  CHECK(peer_of(*t.s3, "127.0.0.1")->flaps == 0);
  CHECK(peer_of(*t.rr, "127.0.0.3")->flaps == 0);
  CHECK(peer_of(*t.rr, "127.0.0.2")->type == "iBGP");
}

TEST_CASE("speaker reconfigure: a router ID change restarts the sessions gracefully; routes stay at the peers") {
  Triangle t;
  auto rc = t.rc;
  rc.router_id = ip("10.9.9.9");
  REQUIRE(t.rr->reconfigure(rc));
  bool lost = false;
  bool ok = run_until(
      t.io,
      [&] {
        auto p = peer_of(*t.s2, "127.0.0.1");
        auto q = peer_of(*t.s3, "127.0.0.1");
        return t.all_up() && p->router_id == ip("10.9.9.9") && q->router_id == ip("10.9.9.9");
      },
      8000, [&] { lost = lost || !best(*t.s3, "10.2.0.0/24") || !best(*t.s2, "10.3.0.0/24"); });
  CHECK(ok);
  CHECK_FALSE(lost);  // graceful restart: the clients kept the reflected routes throughout
  CHECK(peer_of(*t.rr, "127.0.0.2")->flaps == 1);
  // The cluster ID was set explicitly: CLUSTER_LIST keeps 10.0.0.1.
  CHECK(run_until(t.io, [&] {
    return cluster_list_at(*t.s3, "10.2.0.0/24") == std::vector<uint32_t>{ip("10.0.0.1").v4_host_order()};
  }, 3000));
  // Nothing is left stale at the reflector once the clients' End-of-RIB came.
  CHECK(run_until(t.io, [&] {
    for (const auto& p : t.rr->peers())
      if (p.prefixes_stale) return false;
    return true;
  }, 3000));
}

TEST_CASE("speaker reconfigure: an AS change restarts the sessions with the new AS") {
  Triangle t;
  auto rc = t.rc;
  rc.asn = 65001;
  REQUIRE(t.rr->reconfigure(rc));
  // The clients still expect 64512: they refuse the new OPEN (Bad Peer AS)...
  CHECK(run_until(t.io, [&] {
    auto p = peer_of(*t.s2, "127.0.0.1");
    return p->state != "Established" && !p->last_error.empty();
  }, 5000));
  // ... until they are told the new AS (eBGP now): then it comes up again. The
  // reflector's side must match: its peers are eBGP clients no more.
  for (auto& n : rc.peers) n.route_reflector_client = false;
  rc.announcements = {bgp::Announcement{pfx("10.1.0.0/24"), {}, {}, ip("127.0.0.1")}};
  REQUIRE(t.rr->reconfigure(rc));
  auto c2 = t.c2;
  c2.peers[0].asn = 65001;
  REQUIRE(t.s2->reconfigure(c2));
  CHECK(run_until(t.io, [&] { return established(*t.s2, "127.0.0.1") && established(*t.rr, "127.0.0.2"); }, 8000));
  CHECK(peer_of(*t.rr, "127.0.0.2")->type == "eBGP");
  CHECK(run_until(t.io, [&] {
    auto b = best(*t.s2, "10.1.0.0/24");
    return b && b->attrs && !b->attrs->as_path.empty() && b->attrs->as_path.front().asns.front() == 65001;
  }, 5000));
}

TEST_CASE("speaker reconfigure: graceful-restart settings go out in new OPENs") {
  Triangle t;
  auto rc = t.rc;
  rc.restart_time = 77;
  REQUIRE(t.rr->reconfigure(rc));
  CHECK(run_until(t.io, [&] { return t.all_up() && peer_of(*t.s2, "127.0.0.1")->flaps == 1; }, 8000));
  rc.graceful_restart = false;
  REQUIRE(t.rr->reconfigure(rc));
  CHECK(run_until(t.io, [&] {
    auto p = peer_of(*t.s2, "127.0.0.1");
    return t.all_up() && p->flaps == 2 && !p->graceful_restart;
  }, 8000));
  CHECK(t.rr->config().graceful_restart == false);
}

TEST_CASE("speaker reconfigure: listen port change rebinds; a failed bind is an error but peers still apply") {
  Triangle t;
  uint16_t port2 = free_port();
  auto rc = t.rc;
  rc.listen_port = port2;
  REQUIRE(t.rr->reconfigure(rc));
  {
    asio::io_context probe;
    tcp::socket s(probe);
    boost::system::error_code ec;
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port2), ec);
    CHECK_FALSE(ec);  // listening on the new port
    tcp::socket old(probe);
    old.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), t.port), ec);
    CHECK(ec);  // and not on the old one
  }
  // An address this host does not have cannot be bound: the error says so, and
  // the peer added in the same config is there all the same.
  rc.listen_address = ip("192.0.2.1");
  rc.peers.push_back(neighbor("127.0.0.4", t.port, 64512, "127.0.0.1"));
  auto st = t.rr->reconfigure(rc);
  REQUIRE_FALSE(st);
  CHECK(st.error().message.find("192.0.2.1") != std::string::npos);
  CHECK(peer_of(*t.rr, "127.0.0.4").has_value());
  CHECK(t.rr->config().listen_address == ip("192.0.2.1"));
  // The failure persists in the result until a bind succeeds.
  auto st2 = t.rr->reconfigure(rc);
  CHECK_FALSE(st2);
  rc.listen_address = ip("127.0.0.1");
  CHECK(t.rr->reconfigure(rc));
  CHECK(t.all_up());
}

TEST_CASE("speaker reconfigure: a cluster-wide AS change (ours and the peers' together) restarts gracefully") {
  Triangle t;
  // Every speaker learns the new AS at once, as from BGPConfiguration asNumber.
  auto rc = t.rc, c2 = t.c2, c3 = t.c3;
  rc.asn = c2.asn = c3.asn = 65001;
  for (auto* cfg : {&rc, &c2, &c3})
    for (auto& n : cfg->peers) n.asn = 65001;
  REQUIRE(t.rr->reconfigure(rc));
  REQUIRE(t.s2->reconfigure(c2));
  REQUIRE(t.s3->reconfigure(c3));
  bool lost = false;
  CHECK(run_until(
      t.io,
      [&] {
        if (!t.all_up()) return false;
        for (auto* s : {t.rr.get(), t.s2.get(), t.s3.get()})
          for (const auto& p : s->peers())
            if (p.asn != 65001 || p.type.find("eBGP") != std::string::npos) return false;
        return true;
      },
      10000, [&] {
        bool l = !best(*t.s3, "10.2.0.0/24") || !best(*t.s2, "10.3.0.0/24");
        if (l && !lost) MESSAGE("route lost: .3 has 10.2.0.0/24: " << best(*t.s3, "10.2.0.0/24").has_value()
                                << ", .2 has 10.3.0.0/24: " << best(*t.s2, "10.3.0.0/24").has_value());
        lost = lost || l;
      }));
  CHECK_FALSE(lost);  // peers kept each other's routes (graceful restart), no Cease
  CHECK(peer_of(*t.rr, "127.0.0.2")->type == "iBGP (RR client)");
}

TEST_CASE("speaker start: a listener that cannot be bound is an error, the peers run all the same") {
  asio::io_context io;
  uint16_t port = free_port();
  auto a = speaker_config("127.0.0.1", port), b = speaker_config("127.0.0.2", port);
  a.listen_address = ip("192.0.2.1");  // not an address of this host
  a.peers = {neighbor("127.0.0.2", port, 64512, "127.0.0.1")};
  b.peers = {neighbor("127.0.0.1", port, 64512, "127.0.0.2")};
  b.peers[0].passive = true;  // only a's dialling can bring the session up
  bgp::Speaker sa(io, a), sb(io, b);
  auto st = sa.start();
  REQUIRE_FALSE(st);
  CHECK(st.error().message.find("192.0.2.1") != std::string::npos);
  REQUIRE(sb.start());
  CHECK(run_until(io, [&] { return established(sa, "127.0.0.2"); }, 8000));
  // The next reconfigure retries the bind: still failing, still an error...
  CHECK_FALSE(sa.reconfigure(a));
  // ... and with an address the host has, it listens.
  a.listen_address = ip("127.0.0.1");
  CHECK(sa.reconfigure(a));
  asio::io_context probe;
  tcp::socket s(probe);
  boost::system::error_code ec;
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  CHECK_FALSE(ec);
  for (auto* sp : {&sa, &sb}) sp->stop(false, "test over");
  io.run_for(std::chrono::milliseconds(20));
}
