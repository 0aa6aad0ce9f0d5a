// fsm_open_test.cpp — our OPEN built from the config, and validation and
// negotiation of the peer's OPEN (RFC 4271 §4.2/§6.2, RFC 5492, RFC 6793,
// RFC 6286, RFC 4724 §3, RFC 8950, RFC 7313).
#include <doctest/doctest.h>

#include "bgp/fsm.hpp"

using namespace tabby;
using namespace tabby::bgp;

namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

SessionConfig base_config() {
  SessionConfig c;
  c.local_as = 64512;
  c.local_router_id = ip("10.0.0.1");
  c.peer_as = 64513;
  return c;
}

OpenMessage peer_open(uint32_t as, const char* id, uint16_t hold = 90) {
  OpenMessage o;
  o.my_as = as;
  o.hold_time = hold;
  o.bgp_id = ip(id);
  o.caps.multiprotocol = {kIpv4Unicast};
  o.caps.four_octet_as = as;
  o.caps.route_refresh = true;
  return o;
}

}  // namespace

TEST_CASE("our OPEN carries the configured capabilities") {
  SessionConfig c = base_config();
  c.local_as = 4200000001;
  c.families = {kIpv4Unicast, kIpv6Unicast};
  c.extended_next_hop = true;
  c.graceful_restart.enabled = true;
  c.graceful_restart.restart_time = 90;
  c.graceful_restart.restarting = true;
  c.graceful_restart.forwarding_preserved = {kIpv6Unicast};
  OpenMessage o = build_open(c);
  CHECK(o.version == 4);
  CHECK(o.my_as == 4200000001u);
  CHECK(o.hold_time == 90);
  CHECK(o.bgp_id == ip("10.0.0.1"));
  CHECK(o.caps.multiprotocol == std::vector<Family>{kIpv4Unicast, kIpv6Unicast});
  CHECK(o.caps.four_octet_as == 4200000001u);
  CHECK(o.caps.route_refresh);
  CHECK(o.caps.enhanced_route_refresh);
  REQUIRE(o.caps.extended_next_hop.size() == 1);
  CHECK(o.caps.extended_next_hop[0] == ExtendedNextHopEntry{kIpv4Unicast, Afi::Ipv6});
  REQUIRE(o.caps.graceful_restart);
  CHECK(o.caps.graceful_restart->restart_state);
  CHECK_FALSE(o.caps.graceful_restart->notification);
  CHECK(o.caps.graceful_restart->restart_time == 90);
  REQUIRE(o.caps.graceful_restart->families.size() == 2);
  CHECK(o.caps.graceful_restart->families[0].family == kIpv4Unicast);
  CHECK_FALSE(o.caps.graceful_restart->families[0].forwarding_preserved);
  CHECK(o.caps.graceful_restart->families[1].family == kIpv6Unicast);
  CHECK(o.caps.graceful_restart->families[1].forwarding_preserved);
}

TEST_CASE("our OPEN leaves out what is not configured") {
  SessionConfig c = base_config();
  c.four_octet_as = false;
  c.route_refresh = false;
  c.enhanced_route_refresh = true;  // needs route refresh (RFC 7313 §3)
  c.extended_next_hop = true;
  c.families = {kIpv6Unicast};      // no IPv4 NLRI: nothing to carry over IPv6
  OpenMessage o = build_open(c);
  CHECK_FALSE(o.caps.four_octet_as);
  CHECK_FALSE(o.caps.route_refresh);
  CHECK_FALSE(o.caps.enhanced_route_refresh);
  CHECK(o.caps.extended_next_hop.empty());
  CHECK_FALSE(o.caps.graceful_restart);
}

TEST_CASE("hold time is the smaller of both; keepalive a third of it") {
  SessionConfig c = base_config();
  SUBCASE("peer offers less") {
    auto r = negotiate(c, peer_open(64513, "10.0.0.2", 30));
    REQUIRE(r.ok());
    CHECK(r->hold_time == 30);
    CHECK(r->keepalive_time == 10);
  }
  SUBCASE("peer offers more") {
    auto r = negotiate(c, peer_open(64513, "10.0.0.2", 240));
    REQUIRE(r.ok());
    CHECK(r->hold_time == 90);
    CHECK(r->keepalive_time == 30);
  }
  SUBCASE("peer offers 0: no hold timer, no keepalives") {
    auto r = negotiate(c, peer_open(64513, "10.0.0.2", 0));
    REQUIRE(r.ok());
    CHECK(r->hold_time == 0);
    CHECK(r->keepalive_time == 0);
  }
  SUBCASE("configured keepalive is kept below a third of the negotiated hold time") {
    c.keepalive_time = 20;
    auto r = negotiate(c, peer_open(64513, "10.0.0.2", 90));
    REQUIRE(r.ok());
    CHECK(r->keepalive_time == 20);
    r = negotiate(c, peer_open(64513, "10.0.0.2", 9));
    REQUIRE(r.ok());
    CHECK(r->hold_time == 9);
    CHECK(r->keepalive_time == 3);
  }
  SUBCASE("hold time 1 or 2 is unacceptable") {
    for (uint16_t h : {1, 2}) {
      auto r = negotiate(c, peer_open(64513, "10.0.0.2", h));
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == 2);
      CHECK(r.error().subcode == open_sub::UnacceptableHoldTime);
    }
  }
}

TEST_CASE("peer AS is checked, with the 4-octet capability taking precedence over AS_TRANS") {
  SessionConfig c = base_config();
  auto bad = negotiate(c, peer_open(64999, "10.0.0.2"));
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == 2);
  CHECK(bad.error().subcode == open_sub::BadPeerAs);
  CHECK(bad.error().reason.find("64999") != std::string::npos);

  c.peer_as = 4200000002;
  OpenMessage o = peer_open(kAsTrans, "10.0.0.2");
  o.caps.four_octet_as = 4200000002;
  auto r = negotiate(c, o);
  REQUIRE(r.ok());
  CHECK(r->peer_as == 4200000002u);
  CHECK(r->four_octet_as);
  CHECK(r->codec.four_octet_as);
  CHECK_FALSE(r->ibgp);

  // A 2-octet peer: the OPEN's field is the AS.
  c.peer_as = 64513;
  OpenMessage two = peer_open(64513, "10.0.0.2");
  two.caps.four_octet_as.reset();
  r = negotiate(c, two);
  REQUIRE(r.ok());
  CHECK_FALSE(r->four_octet_as);
  CHECK_FALSE(r->codec.four_octet_as);

  // peer_as 0 accepts any AS.
  c.peer_as = 0;
  r = negotiate(c, peer_open(65111, "10.0.0.2"));
  REQUIRE(r.ok());
  CHECK(r->peer_as == 65111u);
}

TEST_CASE("BGP identifier: non-zero, and different from ours on iBGP only (RFC 6286)") {
  SessionConfig c = base_config();
  c.peer_as = 64512;  // iBGP
  auto r = negotiate(c, peer_open(64512, "10.0.0.1"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == 2);
  CHECK(r.error().subcode == open_sub::BadBgpId);

  r = negotiate(c, peer_open(64512, "0.0.0.0"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().subcode == open_sub::BadBgpId);

  r = negotiate(c, peer_open(64512, "10.0.0.2"));
  REQUIRE(r.ok());
  CHECK(r->ibgp);
  CHECK(r->codec.ibgp);
  CHECK(r->peer_router_id == ip("10.0.0.2"));

  c.peer_as = 64513;  // eBGP: an equal identifier is allowed
  r = negotiate(c, peer_open(64513, "10.0.0.1"));
  REQUIRE(r.ok());
  CHECK_FALSE(r->ibgp);
}

TEST_CASE("families: intersection; no multiprotocol capability means IPv4 unicast") {
  SessionConfig c = base_config();
  c.families = {kIpv4Unicast, kIpv6Unicast};
  OpenMessage o = peer_open(64513, "10.0.0.2");
  o.caps.multiprotocol = {kIpv6Unicast};
  auto r = negotiate(c, o);
  REQUIRE(r.ok());
  CHECK(r->families == std::vector<Family>{kIpv6Unicast});

  o.caps.multiprotocol.clear();  // RFC 4760 §8
  r = negotiate(c, o);
  REQUIRE(r.ok());
  CHECK(r->families == std::vector<Family>{kIpv4Unicast});

  c.families = {kIpv6Unicast};
  r = negotiate(c, o);  // peer: IPv4 only, we: IPv6 only
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == 2);
  CHECK(r.error().subcode == open_sub::UnsupportedCapability);
  // Data: our required capability, MP IPv6 unicast (RFC 5492 §3).
  CHECK(r.error().data == std::vector<uint8_t>{1, 4, 0, 2, 0, 1});
}

TEST_CASE("unknown capabilities are ignored and noted; optional ones are negotiated") {
  SessionConfig c = base_config();
  c.extended_next_hop = true;
  c.families = {kIpv4Unicast, kIpv6Unicast};
  OpenMessage o = peer_open(64513, "10.0.0.2");
  o.caps.multiprotocol = {kIpv4Unicast, kIpv6Unicast};
  o.caps.unknown = {{99, {1, 2, 3}}, {73, {}}};
  o.caps.enhanced_route_refresh = true;
  o.caps.extended_next_hop = {{kIpv4Unicast, Afi::Ipv6}};
  auto r = negotiate(c, o);
  REQUIRE(r.ok());
  CHECK(r->ignored_capabilities == std::vector<uint8_t>{99, 73});
  CHECK(r->route_refresh);
  CHECK(r->enhanced_route_refresh);
  CHECK(r->extended_next_hop_ipv4);
  CHECK(r->codec.extended_next_hop_ipv4);
  CHECK(r->peer_open == o);

  c.enhanced_route_refresh = false;
  c.extended_next_hop = false;
  r = negotiate(c, o);
  REQUIRE(r.ok());
  CHECK(r->route_refresh);
  CHECK_FALSE(r->enhanced_route_refresh);
  CHECK_FALSE(r->extended_next_hop_ipv4);

  o.caps.route_refresh = false;  // enhanced needs plain route refresh too
  c.enhanced_route_refresh = true;
  r = negotiate(c, o);
  REQUIRE(r.ok());
  CHECK_FALSE(r->route_refresh);
  CHECK_FALSE(r->enhanced_route_refresh);
}

TEST_CASE("graceful restart capabilities of both sides are recorded") {
  SessionConfig c = base_config();
  c.families = {kIpv4Unicast, kIpv6Unicast};
  c.graceful_restart.enabled = true;
  OpenMessage o = peer_open(64513, "10.0.0.2");
  o.caps.multiprotocol = {kIpv4Unicast, kIpv6Unicast};
  GracefulRestartCapability gr;
  gr.restart_state = true;
  gr.restart_time = 200;
  gr.families = {{kIpv4Unicast, true}, {kIpv6Unicast, false}};
  o.caps.graceful_restart = gr;
  auto r = negotiate(c, o);
  REQUIRE(r.ok());
  REQUIRE(r->peer_graceful_restart);
  CHECK(*r->peer_graceful_restart == gr);
  REQUIRE(r->local_graceful_restart);
  CHECK(r->local_graceful_restart->restart_time == 120);
  CHECK(gr_forwarding_preserved(*r) == std::vector<Family>{kIpv4Unicast});

  c.graceful_restart.enabled = false;  // not a helper: nothing preserved
  r = negotiate(c, o);
  REQUIRE(r.ok());
  CHECK(gr_forwarding_preserved(*r).empty());
}

TEST_CASE("config checks") {
  CHECK(check_config(base_config()).ok());
  SessionConfig c = base_config();
  c.hold_time = 2;
  CHECK_FALSE(check_config(c).ok());
  c = base_config();
  c.local_router_id = IpAddress{};
  CHECK_FALSE(check_config(c).ok());
  c = base_config();
  c.four_octet_as = false;
  c.local_as = 4200000001;
  CHECK_FALSE(check_config(c).ok());
  c = base_config();
  c.connect_retry_max_ms = 1000;
  CHECK_FALSE(check_config(c).ok());
  c = base_config();
  c.hold_time = 0;  // allowed: no keepalives
  CHECK(check_config(c).ok());
}
