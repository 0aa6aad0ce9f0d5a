// rib_test.cpp — Adj-RIB-In and Loc-RIB: import rules (RFC 4271 §9.1.2,
// RFC 4456 §8), implicit withdraw, remove_peer, best path and ECMP inside the
// table, change tracking, graceful-restart stale handling (RFC 4724 §4.2),
// attribute sharing.
#include <doctest/doctest.h>

#include <algorithm>

#include "test/unit/bgp/rib_test_util.hpp"

using namespace tabby;
using namespace tabby::bgp;
using namespace tabby::bgp::test;

namespace {
constexpr uint32_t kLocalAs = 64512;

struct Fixture {
  AttrStore store;
  Rib rib{store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt}};

  PeerId add(const char* addr, uint32_t asn, const char* router_id, bool client = false) {
    PeerConfig c;
    c.address = ip(addr);
    c.asn = asn;
    c.router_id = ip(router_id);
    c.rr_client = client;
    c.local_v4 = ip("10.0.0.1");
    c.local_v6 = ip("2001:db8::1");
    return rib.add_peer(c);
  }
  AttrRef at(const PathAttributes& a) { return store.intern(a); }
  ImportResult ann(PeerId p, const char* prefix, const PathAttributes& a) {
    Prefix px = pfx(prefix);
    return rib.announce(p, px.is_v4() ? kIpv4Unicast : kIpv6Unicast, std::span(&px, 1), at(a));
  }
  void wd(PeerId p, const char* prefix) {
    Prefix px = pfx(prefix);
    rib.withdraw(p, px.is_v4() ? kIpv4Unicast : kIpv6Unicast, std::span(&px, 1));
  }
  std::optional<RouteView> get(const char* prefix, bool reason = false) {
    Prefix px = pfx(prefix);
    return rib.lookup(px.is_v4() ? kIpv4Unicast : kIpv6Unicast, px, reason);
  }
  std::vector<std::string> changes(Family f = kIpv4Unicast) {
    std::vector<std::string> out;
    for (const auto& p : rib.take_changes(f)) out.push_back(p.str());
    std::sort(out.begin(), out.end());
    return out;
  }
};
}  // namespace

TEST_CASE("rib: announce, lookup, counters") {
  Fixture f;
  PeerId e = f.add("10.1.0.2", 65001, "1.1.1.1");
  CHECK(f.ann(e, "198.19.0.0/26", A().path({65001}).nh("10.1.0.2")) == ImportResult::Accepted);
  auto v = f.get("198.19.0.0/26", true);
  REQUIRE(v);
  REQUIRE(v->paths.size() == 1);
  CHECK(v->best() != nullptr);
  CHECK(v->paths[0].peer == e);
  CHECK(v->paths[0].multipath);
  CHECK(v->reason == BestPathReason::OnlyPath);
  CHECK(v->reason_text == "only path");
  CHECK(f.rib.route_count(kIpv4Unicast) == 1);
  CHECK(f.rib.path_count(kIpv4Unicast) == 1);
  CHECK(f.rib.stats(e).received == 1);
  CHECK(f.rib.stats(e).accepted[0] == 1);
  CHECK_FALSE(f.get("198.19.0.64/26"));
}

TEST_CASE("rib: IPv6 family") {
  Fixture f;
  PeerId e = f.add("2001:db8:1::2", 65001, "1.1.1.1");
  CHECK(f.ann(e, "2001:db8:100::/48", A().path({65001}).nh("2001:db8:1::2")) == ImportResult::Accepted);
  CHECK(f.get("2001:db8:100::/48"));
  CHECK(f.rib.route_count(kIpv6Unicast) == 1);
  CHECK(f.rib.route_count(kIpv4Unicast) == 0);
  CHECK(f.rib.stats(e).accepted[1] == 1);
  CHECK(f.changes(kIpv6Unicast) == std::vector<std::string>{"2001:db8:100::/48"});
  f.wd(e, "2001:db8:100::/48");
  CHECK_FALSE(f.get("2001:db8:100::/48"));
}

TEST_CASE("rib: implicit withdraw replaces the peer's previous path") {
  Fixture f;
  PeerId e = f.add("10.1.0.2", 65001, "1.1.1.1");
  f.ann(e, "198.19.0.0/26", A().path({65001, 1}));
  CHECK(f.store.size() == 1);
  f.ann(e, "198.19.0.0/26", A().path({65001, 2}));
  auto v = f.get("198.19.0.0/26");
  REQUIRE(v);
  REQUIRE(v->paths.size() == 1);
  CHECK(v->paths[0].attrs->as_path == seq({65001, 2}));
  CHECK(f.store.size() == 1);  // the old set was released
  CHECK(f.rib.path_count(kIpv4Unicast) == 1);
}

TEST_CASE("rib: withdraw") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId e2 = f.add("10.1.0.3", 65002, "2.2.2.2");
  f.ann(e1, "198.19.0.0/26", A().path({65001}));
  f.ann(e2, "198.19.0.0/26", A().path({65002, 3}));
  f.wd(e1, "198.19.0.0/26");
  auto v = f.get("198.19.0.0/26");
  REQUIRE(v);
  REQUIRE(v->paths.size() == 1);
  CHECK(v->paths[0].peer == e2);
  CHECK(v->paths[0].best);
  f.wd(e1, "198.19.0.0/26");  // nothing left from e1: no-op
  f.wd(e2, "198.19.0.0/26");
  CHECK_FALSE(f.get("198.19.0.0/26"));
  CHECK(f.rib.stats(e1).withdrawn == 2);
  v.reset();  // the view held a reference
  CHECK(f.store.size() == 0);
}

TEST_CASE("rib: import rules reject loops and unusable next hops") {
  Fixture f;
  PeerId e = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId i = f.add("10.0.0.2", kLocalAs, "2.2.2.2");
  SUBCASE("eBGP path with our AS (RFC 4271 §9.1.2)") {
    CHECK(f.ann(e, "198.19.0.0/26", A().path({65001, kLocalAs, 3})) == ImportResult::OwnAsInPath);
    CHECK_FALSE(f.get("198.19.0.0/26"));
    CHECK(f.rib.stats(e).rejected == 1);
  }
  SUBCASE("ORIGINATOR_ID is our router ID (RFC 4456 §8)") {
    CHECK(f.ann(i, "198.19.0.0/26", A().path({}).orig_id("10.0.0.1").clusters({99})) ==
          ImportResult::OwnOriginatorId);
    CHECK_FALSE(f.get("198.19.0.0/26"));
  }
  SUBCASE("CLUSTER_LIST contains our cluster ID (default: router ID)") {
    CHECK(f.ann(i, "198.19.0.0/26", A().path({}).orig_id("3.3.3.3").clusters({7, rid("10.0.0.1")})) ==
          ImportResult::OwnClusterId);
    CHECK_FALSE(f.get("198.19.0.0/26"));
    CHECK(f.ann(i, "198.19.0.0/26", A().path({}).orig_id("3.3.3.3").clusters({7, 8})) ==
          ImportResult::Accepted);
  }
  SUBCASE("unspecified or multicast next hop") {
    CHECK(f.ann(e, "198.19.0.0/26", A().path({65001}).no_nh()) == ImportResult::BadNextHop);
    CHECK(f.ann(e, "198.19.0.0/26", A().path({65001}).nh("224.0.0.5")) == ImportResult::BadNextHop);
    CHECK_FALSE(f.get("198.19.0.0/26"));
  }
  SUBCASE("a refused re-announce withdraws the previous path") {
    CHECK(f.ann(e, "198.19.0.0/26", A().path({65001})) == ImportResult::Accepted);
    CHECK(f.ann(e, "198.19.0.0/26", A().path({65001, kLocalAs})) == ImportResult::OwnAsInPath);
    CHECK_FALSE(f.get("198.19.0.0/26"));
  }
  SUBCASE("an iBGP path is not checked for our AS") {
    CHECK(f.ann(i, "198.19.0.0/26", A().path({65001, kLocalAs})) == ImportResult::Accepted);
  }
  CHECK(import_result_text(ImportResult::OwnClusterId).find("CLUSTER_LIST") != std::string::npos);
}

TEST_CASE("rib: configured cluster ID is used for loop rejection") {
  AttrStore store;
  Rib rib(store, RibConfig{kLocalAs, ip("10.0.0.1"), 0x01020304u});
  CHECK(rib.cluster_id() == 0x01020304u);
  PeerConfig c;
  c.address = ip("10.0.0.2");
  c.asn = kLocalAs;
  c.router_id = ip("2.2.2.2");
  PeerId i = rib.add_peer(c);
  Prefix p = pfx("198.19.0.0/26");
  CHECK(rib.announce(i, kIpv4Unicast, std::span(&p, 1),
                     store.intern(A().path({}).orig_id("3.3.3.3").clusters({0x01020304u}))) ==
        ImportResult::OwnClusterId);
  CHECK(rib.announce(i, kIpv4Unicast, std::span(&p, 1),
                     store.intern(A().path({}).orig_id("3.3.3.3").clusters({rid("10.0.0.1")}))) ==
        ImportResult::Accepted);
}

TEST_CASE("rib: decision process inside the table, reason and ECMP flags") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId e2 = f.add("10.1.0.3", 65001, "2.2.2.2");
  PeerId e3 = f.add("10.1.0.4", 65003, "0.0.0.3");
  f.ann(e3, "198.19.0.0/26", A().path({65003, 5, 6}).nh("10.1.0.4"));
  f.ann(e2, "198.19.0.0/26", A().path({65001, 5}).nh("10.1.0.3"));
  f.ann(e1, "198.19.0.0/26", A().path({65001, 6}).nh("10.1.0.2"));
  auto v = f.get("198.19.0.0/26", true);
  REQUIRE(v);
  REQUIRE(v->paths.size() == 3);
  CHECK(v->paths[0].peer == e1);  // best first: lower router ID than e2
  CHECK(v->paths[0].best);
  CHECK(v->reason == BestPathReason::RouterId);
  CHECK(v->reason_text == "lower router ID (1.1.1.1 < 2.2.2.2)");
  int mp = 0;
  for (const auto& p : v->paths) {
    if (p.peer == e3) CHECK_FALSE(p.multipath);
    mp += p.multipath;
  }
  CHECK(mp == 2);
}

TEST_CASE("rib: locally originated routes") {
  Fixture f;
  PeerId i = f.add("10.0.0.2", kLocalAs, "2.2.2.2");
  f.ann(i, "198.19.0.0/26", A().path({}).nh("10.0.0.2").lp(500));
  CHECK(f.ann(kLocalPeer, "198.19.0.0/26", A().path({}).no_nh()) == ImportResult::Accepted);
  auto v = f.get("198.19.0.0/26", true);
  REQUIRE(v);
  CHECK(v->paths[0].peer == kLocalPeer);
  CHECK(v->reason == BestPathReason::LocallyOriginated);
}

TEST_CASE("rib: remove_peer drops everything from that peer") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId e2 = f.add("10.1.0.3", 65002, "2.2.2.2");
  for (int n = 0; n < 100; ++n) {
    std::string p = "198.19." + std::to_string(n) + ".0/24";
    f.ann(e1, p.c_str(), A().path({65001}));
  }
  f.ann(e1, "2001:db8:5::/48", A().path({65001}).nh("2001:db8::2"));
  f.ann(e2, "198.19.7.0/24", A().path({65002, 9}));
  f.changes();
  f.rib.remove_peer(e1);
  CHECK(f.rib.route_count(kIpv4Unicast) == 1);
  CHECK(f.rib.route_count(kIpv6Unicast) == 0);
  auto v = f.get("198.19.7.0/24");
  REQUIRE(v);
  CHECK(v->paths[0].peer == e2);
  CHECK(v->paths[0].best);
  CHECK(f.changes().size() == 100);  // 99 gone + 1 whose best changed
  CHECK_FALSE(f.rib.has_peer(e1));
  CHECK(f.rib.has_peer(e2));
}

TEST_CASE("rib: change tracking reports best/ECMP changes only, once each") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId e2 = f.add("10.1.0.3", 65001, "2.2.2.2");
  PeerId e3 = f.add("10.1.0.4", 65003, "3.3.3.3");
  f.ann(e1, "198.19.0.0/26", A().path({65001}).nh("10.1.0.2"));
  f.ann(e1, "198.19.0.64/26", A().path({65001}).nh("10.1.0.2"));
  f.ann(e1, "198.19.0.0/26", A().path({65001}).nh("10.1.0.2").med(0));  // changed again: once
  CHECK(f.changes() == std::vector<std::string>{"198.19.0.0/26", "198.19.0.64/26"});
  CHECK(f.changes().empty());
  CHECK(f.rib.pending_changes(kIpv4Unicast) == 0);

  // A worse path (longer AS_PATH): neither best nor ECMP changes.
  f.ann(e3, "198.19.0.0/26", A().path({65003, 1, 2}).nh("10.1.0.4"));
  CHECK(f.changes().empty());
  // Same attributes again: nothing.
  f.ann(e1, "198.19.0.64/26", A().path({65001}).nh("10.1.0.2"));
  CHECK(f.changes().empty());
  // An equal-cost path joins the ECMP set: a change.
  f.ann(e2, "198.19.0.0/26", A().path({65001}).nh("10.1.0.3"));
  CHECK(f.changes() == std::vector<std::string>{"198.19.0.0/26"});
  // The non-best ECMP member changes attributes: a change.
  f.ann(e2, "198.19.0.0/26", A().path({65001}).nh("10.1.0.33"));
  CHECK(f.changes() == std::vector<std::string>{"198.19.0.0/26"});
  // The worse path goes: no change.
  f.wd(e3, "198.19.0.0/26");
  CHECK(f.changes().empty());
  // Removed, re-added, removed again: reported once.
  f.wd(e1, "198.19.0.64/26");
  f.ann(e1, "198.19.0.64/26", A().path({65001}).nh("10.1.0.2"));
  f.wd(e1, "198.19.0.64/26");
  CHECK(f.changes() == std::vector<std::string>{"198.19.0.64/26"});
}

TEST_CASE("rib: graceful restart stale mark, refresh and sweep (RFC 4724 §4.2)") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId e2 = f.add("10.1.0.3", 65002, "2.2.2.2");
  f.ann(e1, "198.19.0.0/26", A().path({65001}));
  f.ann(e1, "198.19.0.64/26", A().path({65001}));
  f.ann(e1, "198.19.0.128/26", A().path({65001}));
  f.ann(e2, "198.19.0.128/26", A().path({65002, 1, 2}));
  f.ann(e1, "2001:db8:5::/48", A().path({65001}).nh("2001:db8::2"));
  f.changes();

  CHECK(f.rib.mark_stale(e1, kIpv4Unicast) == 3);
  CHECK(f.rib.stats(e1).stale[0] == 3);
  CHECK(f.changes().empty());  // stale paths stay in use
  auto v = f.get("198.19.0.128/26");
  REQUIRE(v);
  CHECK(v->paths[0].peer == e1);  // still best: staleness is not a decision rule
  CHECK(v->paths[0].stale);
  CHECK_FALSE(v->paths[1].stale);
  CHECK_FALSE(f.get("2001:db8:5::/48")->paths[0].stale);  // other family untouched

  // The restarted peer re-announces one prefix (same attributes): the mark goes.
  f.ann(e1, "198.19.0.0/26", A().path({65001}));
  CHECK_FALSE(f.get("198.19.0.0/26")->paths[0].stale);
  CHECK(f.rib.stats(e1).stale[0] == 2);
  CHECK(f.changes().empty());

  // End-of-RIB: the rest goes.
  CHECK(f.rib.sweep_stale(e1, kIpv4Unicast) == 2);
  CHECK(f.get("198.19.0.0/26"));
  CHECK_FALSE(f.get("198.19.0.64/26"));
  v = f.get("198.19.0.128/26");
  REQUIRE(v);
  CHECK(v->paths.size() == 1);
  CHECK(v->paths[0].peer == e2);
  CHECK(f.changes() == std::vector<std::string>{"198.19.0.128/26", "198.19.0.64/26"});
  CHECK(f.rib.stats(e1).stale[0] == 0);
  CHECK(f.rib.stats(e1).accepted[0] == 1);
  CHECK(f.rib.sweep_stale(e1, kIpv4Unicast) == 0);
}

TEST_CASE("rib: long-lived stale (RFC 9494): NO_LLGR dropped, LLGR_STALE added and least preferred, export") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId e2 = f.add("10.1.0.3", 65002, "2.2.2.2");
  PeerId plain = f.add("10.1.0.4", 65003, "3.3.3.3");   // did not advertise LLGR
  PeerId aware = f.add("10.1.0.5", 65004, "4.4.4.4");       // did
  PeerConfig llc = f.rib.peer(aware);
  llc.long_lived_peer = true;
  f.rib.update_peer(aware, llc);
  f.ann(e1, "198.19.0.0/26", A().path({65001}));            // e1 best (shorter path)
  f.ann(e2, "198.19.0.0/26", A().path({65002, 7, 8}));
  f.ann(e1, "198.19.0.64/26", A().path({65001}).comm(kNoLlgr));
  f.ann(e1, "198.19.0.128/26", A().path({65001}));          // e1 only
  f.changes();
  for (PeerId p : {plain, aware}) {
    f.rib.peer_up(p);
    auto u = f.rib.full_dump(p, kIpv4Unicast);
    CHECK(u.announced_count() == 3);
  }

  REQUIRE(f.rib.mark_stale(e1, kIpv4Unicast) == 3);
  auto [kept, removed] = f.rib.mark_long_lived_stale(e1, kIpv4Unicast);
  CHECK(kept == 2);
  CHECK(removed == 1);
  CHECK_FALSE(f.get("198.19.0.64/26"));  // NO_LLGR: not kept
  CHECK(f.rib.stats(e1).stale[0] == 2);
  // The alternative without LLGR_STALE wins, though its AS path is longer.
  auto v = f.get("198.19.0.0/26", true);
  REQUIRE(v);
  CHECK(v->paths[0].peer == e2);
  CHECK(v->reason == BestPathReason::NotLongLivedStale);
  CHECK(v->paths[1].stale);
  CHECK(std::count(v->paths[1].attrs->communities.begin(), v->paths[1].attrs->communities.end(), kLlgrStale) == 1);
  // The only path stays in use, with LLGR_STALE.
  v = f.get("198.19.0.128/26");
  REQUIRE(v);
  CHECK(v->paths[0].peer == e1);
  CHECK(v->paths[0].stale);
  auto changed = f.rib.take_changes(kIpv4Unicast);
  CHECK(changed.size() == 3);
  // Export: the LLGR_STALE route is withdrawn from the peer without LLGR and
  // sent with the community to the one with it.
  auto up = f.rib.export_changes(plain, kIpv4Unicast, changed);
  std::vector<std::string> wd;
  for (const auto& p : up.withdrawn) wd.push_back(p.str());
  std::sort(wd.begin(), wd.end());
  CHECK(wd == std::vector<std::string>{"198.19.0.128/26", "198.19.0.64/26"});
  auto ua = f.rib.export_changes(aware, kIpv4Unicast, changed);
  CHECK(ua.withdrawn.size() == 1);
  AttrRef sent = f.rib.advertised(aware, kIpv4Unicast, pfx("198.19.0.128/26"));
  REQUIRE(sent);
  CHECK(std::count(sent->communities.begin(), sent->communities.end(), kLlgrStale) == 1);

  // The peer is back: a re-announce replaces the long-lived path and its mark.
  f.ann(e1, "198.19.0.0/26", A().path({65001}));
  v = f.get("198.19.0.0/26");
  CHECK(v->paths[0].peer == e1);
  CHECK_FALSE(v->paths[0].stale);
  // End-of-RIB (or the stale timer): what is still stale goes.
  CHECK(f.rib.sweep_stale(e1, kIpv4Unicast) == 1);
  CHECK_FALSE(f.get("198.19.0.128/26"));
  CHECK(f.rib.stats(e1).stale[0] == 0);
}

TEST_CASE("rib: allow-own-AS (numAllowedLocalASNumbers) and a per-peer local AS (localASNumber)") {
  Fixture f;
  PeerId e = f.add("10.1.0.2", 65001, "1.1.1.1");
  // Default: any occurrence of our AS is a loop.
  CHECK(f.ann(e, "198.19.0.0/26", A().path({65001, kLocalAs, 7})) == ImportResult::OwnAsInPath);
  PeerConfig c = f.rib.peer(e);
  c.allow_own_as = 2;
  f.rib.update_peer(e, c);
  CHECK(f.ann(e, "198.19.0.0/26", A().path({65001, kLocalAs, 7})) == ImportResult::Accepted);
  CHECK(f.ann(e, "198.19.0.64/26", A().path({65001, kLocalAs, kLocalAs, 7})) == ImportResult::Accepted);
  CHECK(f.ann(e, "198.19.0.128/26", A().path({65001, kLocalAs, 7, kLocalAs, kLocalAs})) ==
        ImportResult::OwnAsInPath);
  CHECK(f.get("198.19.0.0/26"));
  CHECK(f.get("198.19.0.64/26"));
  CHECK_FALSE(f.get("198.19.0.128/26"));

  // A peer we present AS 65100 to: the AS it sees is prepended, and the same AS
  // on that peer makes the session iBGP.
  PeerId l = f.add("10.1.0.3", 65002, "2.2.2.2");
  c = f.rib.peer(l);
  c.local_as = 65100;
  f.rib.update_peer(l, c);
  CHECK(f.rib.is_ebgp(l));
  // A path holding the presented AS is a loop too.
  CHECK(f.ann(l, "198.19.1.0/26", A().path({65002, 65100})) == ImportResult::OwnAsInPath);
  f.rib.peer_up(l);
  f.rib.full_dump(l, kIpv4Unicast);
  auto changed = f.rib.take_changes(kIpv4Unicast);
  f.rib.export_changes(l, kIpv4Unicast, changed);
  AttrRef sent = f.rib.advertised(l, kIpv4Unicast, pfx("198.19.0.0/26"));
  REQUIRE(sent);
  CHECK(as_path_str(sent->as_path) == "65100 65001 64512 7");
  PeerId i = f.add("10.1.0.4", 65100, "3.3.3.3");
  c = f.rib.peer(i);
  c.local_as = 65100;
  f.rib.update_peer(i, c);
  CHECK_FALSE(f.rib.is_ebgp(i));
}

TEST_CASE("rib: withdraw_all and for_each_path_from") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  f.ann(e1, "198.19.0.0/26", A().path({65001}));
  f.ann(e1, "198.19.0.64/26", A().path({65001, 2}));
  int n = 0;
  f.rib.for_each_path_from(e1, kIpv4Unicast, [&](const Prefix&, const AttrRef& a, bool stale) {
    ++n;
    CHECK(a);
    CHECK_FALSE(stale);
  });
  CHECK(n == 2);
  CHECK(f.rib.withdraw_all(e1, kIpv4Unicast) == 2);
  CHECK(f.rib.route_count(kIpv4Unicast) == 0);
}

TEST_CASE("rib: attribute sets are shared, not copied") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  PeerId e2 = f.add("10.1.0.3", 65001, "2.2.2.2");
  std::vector<Prefix> ps;
  for (int n = 0; n < 500; ++n) ps.push_back(pfx(("198.19." + std::to_string(n % 256) + "." +
                                                  std::to_string((n / 256) * 64) + "/26").c_str()));
  f.rib.announce(e1, kIpv4Unicast, ps, f.at(A().path({65001})));
  f.rib.announce(e2, kIpv4Unicast, ps, f.at(A().path({65001})));  // an equal set, interned again
  CHECK(f.store.size() == 1);
  auto v1 = f.get("198.19.3.0/26");
  auto v2 = f.get("198.19.200.64/26");
  REQUIRE(v1);
  REQUIRE(v2);
  CHECK(v1->paths[0].attrs == v2->paths[1].attrs);  // same object
  CHECK(f.rib.path_count(kIpv4Unicast) == 1000);
}

TEST_CASE("rib: table survives growth and many deletions (probing invariants)") {
  Fixture f;
  PeerId e1 = f.add("10.1.0.2", 65001, "1.1.1.1");
  AttrRef a = f.at(A().path({65001}));
  std::vector<Prefix> all;
  for (uint32_t n = 0; n < 20000; ++n) all.emplace_back(IpAddress::v4(0x0A000000u + (n << 8)), 24);
  f.rib.announce(e1, kIpv4Unicast, all, a);
  CHECK(f.rib.route_count(kIpv4Unicast) == 20000);
  std::vector<Prefix> odd;
  for (size_t n = 1; n < all.size(); n += 2) odd.push_back(all[n]);
  f.rib.withdraw(e1, kIpv4Unicast, odd);
  CHECK(f.rib.route_count(kIpv4Unicast) == 10000);
  size_t found = 0;
  for (size_t n = 0; n < all.size(); ++n) found += f.rib.lookup(kIpv4Unicast, all[n]).has_value() == (n % 2 == 0);
  CHECK(found == all.size());
  CHECK(f.rib.take_changes(kIpv4Unicast).size() == 20000);
}
