// update_group_test.cpp — update groups (rib.hpp): what each member of a group
// receives (the group's update through plan_member) must leave it holding
// exactly what the per-peer Adj-RIB-Out export (export_changes / full_dump)
// would have sent it alone, for random mixes of peers (eBGP, iBGP non-clients,
// RR clients; next-hop modes; export filters; session addresses; router IDs
// that collide with ORIGINATOR_IDs), random announcements and withdrawals,
// sessions going up and down (with and without graceful restart), route
// refresh, configuration changes that move a peer to another group, and
// cluster ID changes. RFC 4271 §9.2, RFC 4456 §6/§8, RFC 1997, RFC 4724.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>

#include "test/unit/bgp/rib_test_util.hpp"

using namespace tabby;
using namespace tabby::bgp;
using namespace tabby::bgp::test;

namespace {

constexpr uint32_t kLocalAs = 64512;

// What a peer holds from us: prefix -> outgoing attribute set.
using View = std::map<Prefix, const AttrNode*>;

// Applies an update to a view; a withdrawal of something the peer does not hold
// is a defect (the per-peer export never sends one).
void apply_update(View& v, const OutUpdate& u) {
  for (const auto& p : u.withdrawn) {
    INFO("withdrawn " << p.str());
    CHECK(v.erase(p) == 1);
  }
  for (const auto& b : u.announced)
    for (const auto& p : b.prefixes) v[p] = b.attrs.node();
}

struct PeerSpec {
  uint32_t asn;
  bool client;
  NextHopMode mode;
  int filter;  // 0 none, 1 allowed prefixes, 2 denied community
  int local;   // which of two session addresses
};

struct Mix {
  std::mt19937 rng;
  AttrStore store;
  Rib ref{store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt}};
  Rib grp{store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt}};
  std::vector<PeerId> ids;  // the same ids in both RIBs
  std::vector<uint32_t> encoding;
  std::map<PeerId, View> ref_view, grp_view;
  std::vector<Prefix> pool4, pool6;
  std::vector<IpAddress> rids;  // router IDs peers get and ORIGINATOR_IDs routes carry
  std::set<std::pair<PeerId, int>> stale;  // (peer, family index) marked stale

  explicit Mix(uint32_t seed) : rng(seed) {
    for (int i = 0; i < 24; ++i) pool4.push_back(pfx(("198.19." + std::to_string(i) + ".0/26").c_str()));
    for (int i = 0; i < 8; ++i) pool6.push_back(pfx(("2001:db8:" + std::to_string(i) + "::/64").c_str()));
    for (int i = 1; i <= 6; ++i) rids.push_back(ip(("3.3.3." + std::to_string(i)).c_str()));
  }

  uint32_t pick(uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(rng); }
  bool coin(int percent) { return pick(100) < static_cast<uint32_t>(percent); }

  PeerConfig config(size_t i, const PeerSpec& s) {
    PeerConfig c;
    c.address = IpAddress::v4(0x0A000100u + static_cast<uint32_t>(i) + 2);
    c.asn = s.asn;
    c.rr_client = s.client;
    c.next_hop = s.mode;
    if (s.filter == 1) c.export_filter.allowed_prefixes = {pfx("198.19.0.0/20"), pfx("2001:db8::/48")};
    if (s.filter == 2) c.export_filter.denied_communities = {0xFDE80001u};
    c.local_v4 = s.local ? ip("10.0.0.1") : ip("10.0.9.1");
    c.local_v6 = s.local ? ip("2001:db8:ffff::1") : ip("2001:db8:ffff::9");
    return c;
  }

  PeerSpec random_spec() {
    PeerSpec s;
    uint32_t kind = pick(4);
    s.asn = kind == 0 ? 65001 + pick(2) : kLocalAs;
    s.client = kind >= 2;
    s.mode = static_cast<NextHopMode>(pick(3));
    s.filter = coin(70) ? 0 : 1 + static_cast<int>(pick(2));
    s.local = coin(80) ? 1 : 0;
    return s;
  }

  void add_peers(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      PeerConfig c = config(i, random_spec());
      PeerId a = ref.add_peer(c), b = grp.add_peer(c);
      REQUIRE(a == b);
      ids.push_back(a);
      encoding.push_back(coin(85) ? 1 : 0);
    }
  }

  PathAttributes random_attrs(bool v6) {
    PathAttributes a;
    a.origin = static_cast<Origin>(pick(3));
    a.next_hop = v6 ? IpAddress::parse("2001:db8:1::" + std::to_string(1 + pick(4))).value()
                    : IpAddress::v4(0xC0000200u + 1 + pick(4));
    if (coin(60)) a.as_path = seq({65001 + pick(3)});
    if (coin(30)) a.local_pref = 100 + 50 * pick(3);
    if (coin(20)) a.med = pick(3);
    if (coin(10)) a.communities.push_back(kNoExport);
    if (coin(5)) a.communities.push_back(kNoAdvertise);
    if (coin(15)) a.communities.push_back(0xFDE80001u);
    if (coin(30)) a.originator_id = rids[pick(static_cast<uint32_t>(rids.size()))];
    if (coin(15)) a.cluster_list = {0x05050505u};
    return a;
  }

  bool up(PeerId id) const { return ref.is_up(id); }

  void session_up(PeerId id, uint32_t enc) {
    // A peer keeps its router ID across sessions (IDs collide between peers and
    // with the ORIGINATOR_IDs routes carry).
    IpAddress rid = rids[id % rids.size()];
    for (Rib* r : {&ref, &grp}) {
      r->set_peer_router_id(id, rid);
      r->peer_up(id);
    }
    ref_view[id].clear();
    grp_view[id].clear();
    for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
      apply_update(ref_view[id], ref.full_dump(id, f));
      // The initial table as the speaker sends it: the group's snapshot, each
      // member skipping what excludes it (full_dump gives the same; see refresh).
      GroupId g = grp.join_group(id, f, enc);
      apply_update(grp_view[id], member_update(grp.group_snapshot(g), id, grp.peer_rid(id)));
    }
  }

  void session_down(PeerId id, bool graceful) {
    for (Rib* r : {&ref, &grp}) r->peer_down(id);
    ref_view.erase(id);
    grp_view.erase(id);
    for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
      int fi = f.afi == Afi::Ipv4 ? 0 : 1;
      if (graceful) {
        for (Rib* r : {&ref, &grp}) r->mark_stale(id, f);
        stale.insert({id, fi});
      } else {
        for (Rib* r : {&ref, &grp}) r->withdraw_all(id, f);
        stale.erase({id, fi});
      }
    }
  }

  // Loc-RIB changes -> every up peer (reference: per peer; grouped: per group).
  void flush() {
    for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
      auto c1 = ref.take_changes(f);
      auto c2 = grp.take_changes(f);
      CAPTURE(c1.size());
      CAPTURE(c2.size());
      REQUIRE(std::set<Prefix>(c1.begin(), c1.end()) == std::set<Prefix>(c2.begin(), c2.end()));
      for (PeerId id : ids)
        if (up(id)) apply_update(ref_view[id], ref.export_changes(id, f, c1));
      for (GroupId g : grp.groups(f)) {
        GroupUpdate gu = grp.export_group(g, f, c2);
        for (PeerId id : grp.group_members(g)) apply_update(grp_view[id], member_update(gu, id, grp.peer_rid(id)));
      }
    }
  }

  void compare(const char* when) {
    INFO("after " << std::string(when));
    for (PeerId id : ids) {
      if (!up(id)) continue;
      INFO("peer " << id);
      CHECK(grp_view[id] == ref_view[id]);
      for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
        CHECK(grp.group_of(id, f) != kNoGroup);
        CHECK(grp.advertised_count(id, f) == ref.advertised_count(id, f));
        for (const auto& pool : {pool4, pool6})
          for (const auto& p : pool) CHECK(grp.advertised(id, f, p).node() == ref.advertised(id, f, p).node());
      }
    }
  }

  void step() {
    uint32_t what = pick(100);
    if (what < 45) {  // announce from a peer (or locally)
      bool v6 = coin(25);
      Family f = v6 ? kIpv6Unicast : kIpv4Unicast;
      PeerId from = coin(10) ? kLocalPeer : ids[pick(static_cast<uint32_t>(ids.size()))];
      if (from != kLocalPeer && !up(from)) return;
      const auto& pool = v6 ? pool6 : pool4;
      std::vector<Prefix> ps;
      for (uint32_t n = 1 + pick(3); n; --n) {
        Prefix p = pool[pick(static_cast<uint32_t>(pool.size()))];
        if (std::find(ps.begin(), ps.end(), p) == ps.end()) ps.push_back(p);
      }
      AttrRef a = store.intern(random_attrs(v6));
      CHECK(ref.announce(from, f, ps, a) == grp.announce(from, f, ps, a));
    } else if (what < 65) {  // withdraw
      bool v6 = coin(25);
      Family f = v6 ? kIpv6Unicast : kIpv4Unicast;
      PeerId from = coin(10) ? kLocalPeer : ids[pick(static_cast<uint32_t>(ids.size()))];
      const auto& pool = v6 ? pool6 : pool4;
      Prefix p[] = {pool[pick(static_cast<uint32_t>(pool.size()))]};
      for (Rib* r : {&ref, &grp}) r->withdraw(from, f, p);
    } else if (what < 75) {  // a session goes up or down
      flush();  // what happened before the session change is exported first (as the speaker does)
      PeerId id = ids[pick(static_cast<uint32_t>(ids.size()))];
      size_t idx = static_cast<size_t>(std::find(ids.begin(), ids.end(), id) - ids.begin());
      if (up(id)) session_down(id, coin(40));
      else session_up(id, encoding[idx]);
    } else if (what < 80) {  // End-of-RIB / restart timer: sweep stale paths
      if (stale.empty()) return;
      auto it = stale.begin();
      std::advance(it, pick(static_cast<uint32_t>(stale.size())));
      Family f = it->second == 0 ? kIpv4Unicast : kIpv6Unicast;
      for (Rib* r : {&ref, &grp}) r->sweep_stale(it->first, f);
      stale.erase(it);
    } else if (what < 85) {  // route refresh: a full re-send leaves the peer's view as it is
      flush();
      PeerId id = ids[pick(static_cast<uint32_t>(ids.size()))];
      if (!up(id)) return;
      for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
        View before = grp_view[id];
        View fresh;
        apply_update(fresh, grp.full_dump(id, f));
        for (auto it = before.begin(); it != before.end();)
          it = (it->first.is_v4() == (f.afi == Afi::Ipv4)) ? ++it : before.erase(it);
        CHECK(fresh == before);
      }
    } else if (what < 92) {  // configuration change of an up peer: it may change group
      flush();
      PeerId id = ids[pick(static_cast<uint32_t>(ids.size()))];
      size_t idx = static_cast<size_t>(std::find(ids.begin(), ids.end(), id) - ids.begin());
      PeerSpec s = random_spec();
      // Its role stays: a role change (AS, client flag) restarts the session in
      // the speaker (it changes how its own routes are exported too).
      s.asn = ref.peer(id).asn;
      s.client = ref.peer(id).rr_client;
      PeerConfig c = config(idx, s);
      c.router_id = ref.peer(id).router_id;
      for (Rib* r : {&ref, &grp}) r->update_peer(id, c);
      if (!up(id)) return;
      for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
        apply_update(ref_view[id], ref.full_dump(id, f));  // per peer: re-send, withdraw what no longer passes
        apply_update(grp_view[id], grp.regroup(id, f));
      }
    } else if (what < 94) {  // cluster ID change: every route re-evaluated in place
      flush();
      RibConfig rc{kLocalAs, ip("10.0.0.1"), coin(50) ? std::optional<uint32_t>(0x05050505u) : std::nullopt};
      for (Rib* r : {&ref, &grp}) {
        r->set_identity(rc);
        r->recheck_imports();
      }
      flush();
      for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
        std::vector<Prefix> all;
        ref.for_each_route(f, [&](const RouteView& rv) { all.push_back(rv.prefix); });
        for (PeerId id : ids)
          if (up(id)) apply_update(ref_view[id], ref.export_changes(id, f, all));
        for (GroupId g : grp.groups(f)) {
          GroupUpdate gu = grp.export_group(g, f, all);
          for (PeerId id : grp.group_members(g)) apply_update(grp_view[id], member_update(gu, id, grp.peer_rid(id)));
        }
      }
    } else {
      flush();
    }
  }
};

}  // namespace

TEST_CASE("update groups: every member holds what the per-peer export would send it, for random peer mixes") {
  for (uint32_t seed = 1; seed <= 60; ++seed) {
    CAPTURE(seed);
    Mix m(seed);
    m.add_peers(4 + m.pick(9));
    for (size_t i = 0; i < m.ids.size(); ++i)
      if (m.coin(70)) m.session_up(m.ids[i], m.encoding[i]);
    for (int s = 0; s < 300; ++s) {
      m.step();
      if (s % 7 == 6) {
        m.flush();
        m.compare("a flush");
      }
    }
    m.flush();
    m.compare("the last flush");
    // Peers with the same key share a group: never more groups than members.
    for (Family f : {kIpv4Unicast, kIpv6Unicast}) {
      size_t members = 0;
      for (GroupId g : m.grp.groups(f)) {
        CHECK(!m.grp.group_members(g).empty());
        members += m.grp.group_members(g).size();
        auto counts = m.grp.member_route_counts(g);
        REQUIRE(counts.size() == m.grp.group_members(g).size());
        for (size_t i = 0; i < counts.size(); ++i)
          CHECK(counts[i] == m.ref.advertised_count(m.grp.group_members(g)[i], f));
      }
      size_t up = 0;
      for (PeerId id : m.ids) up += m.up(id);
      CHECK(members == up);
    }
  }
}

TEST_CASE("update groups: identical RR clients share one group, one table; each skips only its own route") {
  AttrStore store;
  Rib rib{store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt}};
  std::vector<PeerId> clients;
  for (uint32_t i = 0; i < 50; ++i) {
    PeerConfig c;
    c.address = IpAddress::v4(0xC6120100u + i + 1);
    c.asn = kLocalAs;
    c.rr_client = true;
    c.local_v4 = ip("198.18.0.1");
    PeerId id = rib.add_peer(c);
    rib.set_peer_router_id(id, c.address);
    rib.peer_up(id);
    rib.join_group(id, kIpv4Unicast, 1);
    clients.push_back(id);
  }
  REQUIRE(rib.groups(kIpv4Unicast).size() == 1);
  GroupId g = rib.groups(kIpv4Unicast)[0];
  CHECK(rib.group_members(g).size() == 50);
  for (uint32_t i = 0; i < 50; ++i) {
    PathAttributes a;
    a.next_hop = IpAddress::v4(0xC6120100u + i + 1);
    Prefix p[] = {Prefix::from_v4(0x0A000000u + (i << 6), 26)};
    rib.announce(clients[i], kIpv4Unicast, p, store.intern(std::move(a)));
  }
  auto changed = rib.take_changes(kIpv4Unicast);
  GroupUpdate gu = rib.export_group(g, kIpv4Unicast, changed);
  CHECK(gu.announced.size() == 50);  // one batch per source (ORIGINATOR_ID differs)
  CHECK(rib.group_info(g).routes == 50);
  for (PeerId id : clients) {
    MemberPlan plan = plan_member(gu, id, rib.peer_rid(id));
    CHECK(plan.shared_withdrawals);
    CHECK(plan.own_withdrawn.empty());
    REQUIRE(plan.skipped_batches.size() == 1);  // its own route only
    CHECK(gu.announced[plan.skipped_batches[0]].tag.source == id);
    CHECK(rib.advertised_count(id, kIpv4Unicast) == 49);
  }
  // The per-peer tables stay empty: the memory is the group's.
  CHECK(rib.memory().out_bytes == rib.group_info(g).table_bytes);
  // The last member leaving frees the group.
  for (PeerId id : clients) rib.peer_down(id);
  CHECK(rib.groups(kIpv4Unicast).empty());
}
