// adj_rib_out_test.cpp — Adj-RIB-Out and export rules: iBGP split horizon
// (RFC 4271 §9.2), reflection (RFC 4456 §6/§8), eBGP attribute rewriting
// (RFC 4271 §5.1), next-hop modes, well-known communities (RFC 1997), export
// filters, batching by outgoing attribute set, withdrawals, full dump / refresh.
#include <doctest/doctest.h>

#include <algorithm>

#include "test/unit/bgp/rib_test_util.hpp"

using namespace tabby;
using namespace tabby::bgp;
using namespace tabby::bgp::test;

namespace {
constexpr uint32_t kLocalAs = 64512;
constexpr const char* kPrefix = "198.19.0.0/26";

// Topology: we are 10.0.0.1 (AS 64512, RR with cluster ID = router ID).
//   E1, E2: eBGP peers; I1, I2: iBGP non-clients; C1, C2: RR clients.
struct Fixture {
  AttrStore store;
  Rib rib{store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt}};
  PeerId E1, E2, I1, I2, C1, C2;

  Fixture() {
    E1 = add("10.1.0.2", 65001, "1.1.1.1");
    E2 = add("10.1.0.3", 65002, "1.1.1.2");
    I1 = add("10.0.0.2", kLocalAs, "2.2.2.1");
    I2 = add("10.0.0.3", kLocalAs, "2.2.2.2");
    C1 = add("10.0.0.4", kLocalAs, "3.3.3.1", true);
    C2 = add("10.0.0.5", kLocalAs, "3.3.3.2", true);
    for (PeerId p : {E1, E2, I1, I2, C1, C2}) f_up(p);
  }
  PeerId add(const char* addr, uint32_t asn, const char* router_id, bool client = false,
             NextHopMode mode = NextHopMode::Auto) {
    PeerConfig c;
    c.address = ip(addr);
    c.asn = asn;
    c.router_id = ip(router_id);
    c.rr_client = client;
    c.next_hop = mode;
    c.local_v4 = ip("10.9.9.9");  // our session address (next hop self)
    c.local_v6 = ip("2001:db8::9");
    return rib.add_peer(c);
  }
  void f_up(PeerId p) { rib.peer_up(p); }
  void ann(PeerId p, const char* prefix, const PathAttributes& a) {
    Prefix px = pfx(prefix);
    CHECK(rib.announce(p, px.is_v4() ? kIpv4Unicast : kIpv6Unicast, std::span(&px, 1),
                       store.intern(a)) == ImportResult::Accepted);
  }
  void wd(PeerId p, const char* prefix) {
    Prefix px = pfx(prefix);
    rib.withdraw(p, kIpv4Unicast, std::span(&px, 1));
  }
  // Takes the changes and exports them to every peer; returns per-peer updates.
  std::vector<OutUpdate> flush(Family fam = kIpv4Unicast) {
    auto ch = rib.take_changes(fam);
    std::vector<OutUpdate> out(C2 + 1);
    for (PeerId p : {E1, E2, I1, I2, C1, C2}) out[p] = rib.export_changes(p, fam, ch);
    return out;
  }
  // The attribute set advertised to p for the prefix (null if none).
  AttrRef adv(PeerId p, const char* prefix = kPrefix) {
    Prefix px = pfx(prefix);
    return rib.advertised(p, px.is_v4() ? kIpv4Unicast : kIpv6Unicast, px);
  }
};
}  // namespace

TEST_CASE("adj-rib-out: never back to the peer it came from; eBGP route goes everywhere else") {
  Fixture f;
  f.ann(f.E1, kPrefix, A().path({65001}).nh("10.1.0.2").med(7));
  auto u = f.flush();
  CHECK(u[f.E1].empty());
  CHECK_FALSE(f.adv(f.E1));
  for (PeerId p : {f.E2, f.I1, f.I2, f.C1, f.C2}) {
    REQUIRE(u[p].announced.size() == 1);
    CHECK(u[p].announced[0].prefixes == std::vector<Prefix>{pfx(kPrefix)});
    CHECK(f.adv(p) == u[p].announced[0].attrs);
  }
  // iBGP: next hop kept, LOCAL_PREF 100 added, MED kept, no reflection attributes.
  const auto& ib = *f.adv(f.I1);
  CHECK(ib.next_hop == ip("10.1.0.2"));
  CHECK(ib.local_pref == 100u);
  CHECK(ib.med == 7u);
  CHECK(ib.as_path == seq({65001}));
  CHECK_FALSE(ib.originator_id);
  CHECK(ib.cluster_list.empty());
  // The four iBGP peers share one outgoing set.
  CHECK(f.adv(f.I1) == f.adv(f.C2));
  // eBGP: our AS prepended, next hop self, MED dropped.
  const auto& eb = *f.adv(f.E2);
  CHECK(eb.as_path == seq({kLocalAs, 65001}));
  CHECK(eb.next_hop == ip("10.9.9.9"));
  CHECK_FALSE(eb.med);
  CHECK_FALSE(eb.local_pref);
}

TEST_CASE("adj-rib-out: iBGP split horizon and reflection from a non-client") {
  Fixture f;
  f.ann(f.I1, kPrefix, A().path({65010}).nh("10.0.0.2").lp(150));
  f.flush();
  CHECK_FALSE(f.adv(f.I1));  // not back to the source
  CHECK_FALSE(f.adv(f.I2));  // RFC 4271 §9.2 split horizon: non-client to non-client
  REQUIRE(f.adv(f.C1));      // RFC 4456 §6: non-client to clients
  REQUIRE(f.adv(f.C2));
  REQUIRE(f.adv(f.E1));      // eBGP: normal
  const auto& c = *f.adv(f.C1);
  CHECK(c.originator_id == ip("2.2.2.1"));               // set to the source's router ID
  CHECK(c.cluster_list == std::vector<uint32_t>{rid("10.0.0.1")});  // our cluster ID
  CHECK(c.local_pref == 150u);
  CHECK(c.next_hop == ip("10.0.0.2"));                   // reflection does not touch NEXT_HOP
  const auto& e = *f.adv(f.E1);
  CHECK_FALSE(e.originator_id);
  CHECK(e.cluster_list.empty());
  CHECK_FALSE(e.local_pref);
}

TEST_CASE("adj-rib-out: reflection from a client goes to clients and non-clients") {
  Fixture f;
  f.ann(f.C1, kPrefix, A().path({}).nh("10.0.0.4"));
  f.flush();
  CHECK_FALSE(f.adv(f.C1));
  for (PeerId p : {f.C2, f.I1, f.I2}) {
    REQUIRE(f.adv(p));
    CHECK(f.adv(p)->originator_id == ip("3.3.3.1"));
    CHECK(f.adv(p)->cluster_list == std::vector<uint32_t>{rid("10.0.0.1")});
  }
  REQUIRE(f.adv(f.E1));
  CHECK(f.adv(f.E1)->as_path == seq({kLocalAs}));
}

TEST_CASE("adj-rib-out: an existing ORIGINATOR_ID is kept, our cluster ID prepended, originator skipped") {
  Fixture f;
  // Learned from client C1, already reflected once by another RR (cluster 77),
  // originated by C2's router ID.
  f.ann(f.C1, kPrefix, A().path({}).nh("10.0.0.5").orig_id("3.3.3.2").clusters({77}));
  f.flush();
  REQUIRE(f.adv(f.I1));
  CHECK(f.adv(f.I1)->originator_id == ip("3.3.3.2"));
  CHECK(f.adv(f.I1)->cluster_list == std::vector<uint32_t>{rid("10.0.0.1"), 77});
  CHECK_FALSE(f.adv(f.C2));  // RFC 4456 §8: C2 is the originator
}

TEST_CASE("adj-rib-out: locally originated routes") {
  Fixture f;
  f.ann(kLocalPeer, kPrefix, A().path({}).no_nh().med(5));
  f.flush();
  REQUIRE(f.adv(f.I1));
  CHECK(f.adv(f.I1)->next_hop == ip("10.9.9.9"));  // next hop self: there was none
  CHECK(f.adv(f.I1)->local_pref == 100u);
  CHECK_FALSE(f.adv(f.I1)->originator_id);          // not reflected: our own route
  REQUIRE(f.adv(f.I2));                             // to every iBGP peer
  REQUIRE(f.adv(f.E1));
  CHECK(f.adv(f.E1)->as_path == seq({kLocalAs}));
  CHECK(f.adv(f.E1)->med == 5u);                    // our own MED goes out
  CHECK(f.adv(f.E1)->next_hop == ip("10.9.9.9"));
}

TEST_CASE("adj-rib-out: next-hop modes") {
  Fixture f;
  PeerId iself = f.add("10.0.0.6", kLocalAs, "4.4.4.1", false, NextHopMode::Self);
  PeerId ekeep = f.add("10.1.0.6", 65006, "4.4.4.2", false, NextHopMode::Keep);
  PeerId ikeep = f.add("10.0.0.7", kLocalAs, "4.4.4.3", false, NextHopMode::Keep);
  for (PeerId p : {iself, ekeep, ikeep}) f.rib.peer_up(p);
  f.ann(f.E1, kPrefix, A().path({65001}).nh("10.1.0.2"));
  auto ch = f.rib.take_changes(kIpv4Unicast);
  for (PeerId p : {iself, ekeep, ikeep, f.I1, f.E2}) (void)f.rib.export_changes(p, kIpv4Unicast, ch);
  CHECK(f.adv(iself)->next_hop == ip("10.9.9.9"));  // Self on iBGP
  CHECK(f.adv(ekeep)->next_hop == ip("10.1.0.2"));  // Keep on eBGP
  CHECK(f.adv(ekeep)->as_path == seq({kLocalAs, 65001}));
  CHECK(f.adv(ikeep)->next_hop == ip("10.1.0.2"));  // Keep on iBGP
  CHECK(f.adv(f.I1)->next_hop == ip("10.1.0.2"));   // Auto on iBGP keeps
  CHECK(f.adv(f.E2)->next_hop == ip("10.9.9.9"));   // Auto on eBGP: self
}

TEST_CASE("adj-rib-out: next hop self without a session address is not advertised") {
  Fixture f;
  PeerConfig c;
  c.address = ip("10.1.0.9");
  c.asn = 65009;
  c.router_id = ip("9.9.9.9");  // no local_v4
  PeerId e = f.rib.add_peer(c);
  f.rib.peer_up(e);
  f.ann(f.E1, kPrefix, A().path({65001}).nh("10.1.0.2"));
  auto ch = f.rib.take_changes(kIpv4Unicast);
  CHECK(f.rib.export_changes(e, kIpv4Unicast, ch).empty());
}

TEST_CASE("adj-rib-out: IPv6 next hop self uses the IPv6 session address") {
  Fixture f;
  PathAttributes a = A().path({65001}).nh("2001:db8:1::2");
  a.link_local_next_hop = ip("fe80::2");
  f.ann(f.E1, "2001:db8:100::/48", a);
  auto u = f.flush(kIpv6Unicast);
  REQUIRE(f.adv(f.E2, "2001:db8:100::/48"));
  CHECK(f.adv(f.E2, "2001:db8:100::/48")->next_hop == ip("2001:db8::9"));
  CHECK_FALSE(f.adv(f.E2, "2001:db8:100::/48")->link_local_next_hop);
  CHECK(u[f.E2].family == kIpv6Unicast);
  CHECK(f.adv(f.I1, "2001:db8:100::/48")->link_local_next_hop == ip("fe80::2"));  // iBGP keeps
}

TEST_CASE("adj-rib-out: well-known communities (RFC 1997)") {
  Fixture f;
  f.ann(f.E1, "198.19.0.0/26", A().path({65001}).comm(kNoExport));
  f.ann(f.E1, "198.19.0.64/26", A().path({65001}).comm(kNoAdvertise));
  f.ann(f.E1, "198.19.0.128/26", A().path({65001}).comm(kNoExportSubconfed));
  f.flush();
  CHECK(f.adv(f.I1, "198.19.0.0/26"));         // NO_EXPORT: inside the AS only
  CHECK_FALSE(f.adv(f.E2, "198.19.0.0/26"));
  CHECK_FALSE(f.adv(f.I1, "198.19.0.64/26"));  // NO_ADVERTISE: nobody
  CHECK_FALSE(f.adv(f.E2, "198.19.0.64/26"));
  CHECK_FALSE(f.adv(f.C1, "198.19.0.64/26"));
  CHECK(f.adv(f.I1, "198.19.0.128/26"));       // NO_EXPORT_SUBCONFED: no confederation: like NO_EXPORT
  CHECK_FALSE(f.adv(f.E2, "198.19.0.128/26"));
}

TEST_CASE("adj-rib-out: export filters by prefix and community") {
  Fixture f;
  PeerConfig c = f.rib.peer(f.E2);
  c.export_filter.allowed_prefixes = {pfx("198.19.0.0/24")};
  c.export_filter.denied_communities = {(65000u << 16) | 666};
  f.rib.update_peer(f.E2, c);
  f.ann(f.E1, "198.19.0.0/26", A().path({65001}));
  f.ann(f.E1, "203.0.113.0/24", A().path({65001}));
  f.ann(f.E1, "198.19.0.64/26", A().path({65001}).comm((65000u << 16) | 666));
  f.ann(f.E1, "198.19.0.0/24", A().path({65001, 1}));
  f.flush();
  CHECK(f.adv(f.E2, "198.19.0.0/26"));
  CHECK(f.adv(f.E2, "198.19.0.0/24"));           // the allowed prefix itself
  CHECK_FALSE(f.adv(f.E2, "203.0.113.0/24"));    // outside the allowed prefixes
  CHECK_FALSE(f.adv(f.E2, "198.19.0.64/26"));    // denied community
  CHECK(f.adv(f.I1, "203.0.113.0/24"));          // other peers unaffected
  CHECK(f.adv(f.I1, "198.19.0.64/26"));
}

TEST_CASE("adj-rib-out: announcements batched by outgoing attribute set") {
  Fixture f;
  std::vector<Prefix> a, b;
  for (int n = 0; n < 3; ++n) a.push_back(pfx(("198.19." + std::to_string(n) + ".0/24").c_str()));
  for (int n = 0; n < 2; ++n) b.push_back(pfx(("198.51.100." + std::to_string(n * 64) + "/26").c_str()));
  (void)f.rib.announce(f.E1, kIpv4Unicast, a, f.store.intern(A().path({65001, 1})));
  (void)f.rib.announce(f.E1, kIpv4Unicast, b, f.store.intern(A().path({65001, 2})));
  auto u = f.flush();
  const auto& up = u[f.I1];
  REQUIRE(up.announced.size() == 2);
  CHECK(up.announced_count() == 5);
  for (const auto& batch : up.announced) {
    if (batch.attrs->as_path == seq({65001, 1})) {
      auto got = batch.prefixes;
      std::sort(got.begin(), got.end());
      CHECK(got == a);
    } else {
      CHECK(batch.attrs->as_path == seq({65001, 2}));
      CHECK(batch.prefixes.size() == 2);
    }
  }
  CHECK(up.withdrawn.empty());
  // Nothing changed: nothing to send.
  CHECK(f.rib.export_changes(f.I1, kIpv4Unicast, a).empty());
}

TEST_CASE("adj-rib-out: withdraw when the best path becomes non-exportable or goes") {
  Fixture f;
  f.ann(f.E1, kPrefix, A().path({65001}).nh("10.1.0.2"));
  f.flush();
  REQUIRE(f.adv(f.I1));
  // A better path from non-client I2: I1 must not get it (split horizon), so I1's
  // copy is withdrawn; E1 now gets it (the source changed).
  f.ann(f.I2, kPrefix, A().path({65001}).nh("10.0.0.3").lp(200));
  auto u = f.flush();
  CHECK(u[f.I1].withdrawn == std::vector<Prefix>{pfx(kPrefix)});
  CHECK(u[f.I1].announced.empty());
  CHECK_FALSE(f.adv(f.I1));
  CHECK(u[f.I2].withdrawn == std::vector<Prefix>{pfx(kPrefix)});  // its own route: not back
  CHECK(u[f.E1].announced_count() == 1);
  CHECK(u[f.C1].announced_count() == 1);  // the new path, reflected
  CHECK(f.adv(f.C1)->originator_id == ip("2.2.2.2"));
  // All paths go: withdrawn everywhere it was advertised.
  f.wd(f.E1, kPrefix);
  f.wd(f.I2, kPrefix);
  u = f.flush();
  for (PeerId p : {f.E1, f.E2, f.C1, f.C2})
    CHECK(u[p].withdrawn == std::vector<Prefix>{pfx(kPrefix)});
  CHECK(u[f.I1].empty());
  CHECK(f.rib.advertised_count(f.C1, kIpv4Unicast) == 0);
}

TEST_CASE("adj-rib-out: full dump, route refresh, peer down") {
  Fixture f;
  PeerId late = f.add("10.0.0.8", kLocalAs, "5.5.5.5", true);
  for (int n = 0; n < 10; ++n)
    f.ann(f.E1, ("198.19." + std::to_string(n) + ".0/24").c_str(), A().path({65001}));
  f.ann(f.I1, "203.0.113.0/24", A().path({}).nh("10.0.0.2"));
  auto ch = f.rib.take_changes(kIpv4Unicast);
  CHECK(f.rib.export_changes(late, kIpv4Unicast, ch).empty());  // not up yet: nothing
  f.rib.peer_up(late);
  auto d = f.rib.full_dump(late, kIpv4Unicast);
  CHECK(d.announced_count() == 11);  // client: gets the non-client's route too
  CHECK(d.announced.size() == 2);
  CHECK(f.rib.advertised_count(late, kIpv4Unicast) == 11);
  CHECK(f.rib.stats(late).advertised[0] == 11);
  // Route refresh: everything again.
  auto r = f.rib.full_dump(late, kIpv4Unicast);
  CHECK(r.announced_count() == 11);
  CHECK(r.withdrawn.empty());
  // A refresh also withdraws what is no longer exportable (here: the speaker did
  // not pass on the change before the refresh).
  f.wd(f.E1, "198.19.0.0/24");
  auto r2 = f.rib.full_dump(late, kIpv4Unicast);
  CHECK(r2.withdrawn == std::vector<Prefix>{pfx("198.19.0.0/24")});
  CHECK(r2.announced_count() == 10);
  // Down: forgotten.
  f.rib.peer_down(late);
  CHECK(f.rib.advertised_count(late, kIpv4Unicast) == 0);
  CHECK_FALSE(f.rib.is_up(late));
  CHECK(f.rib.full_dump(late, kIpv4Unicast).empty());
}

TEST_CASE("adj-rib-out: identical outgoing sets are shared across peers and prefixes") {
  Fixture f;
  f.ann(f.E1, "198.19.0.0/26", A().path({65001}));
  f.ann(f.E1, "198.19.0.64/26", A().path({65001}));
  f.flush();
  size_t before = f.store.size();
  CHECK(f.adv(f.I1, "198.19.0.0/26") == f.adv(f.I2, "198.19.0.64/26"));
  CHECK(f.adv(f.E2, "198.19.0.0/26") == f.adv(f.E2, "198.19.0.64/26"));
  // in: 1 set; out: 1 for iBGP, 1 for eBGP
  CHECK(before == 3);
}
