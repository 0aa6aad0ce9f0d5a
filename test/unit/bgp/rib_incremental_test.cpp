// rib_incremental_test.cpp — the Loc-RIB's incremental decision process
// (rib.cpp: upsert/remove settle most changes without running the decision,
// recompute() runs it over the pre-MED group only) cross-checked against the full
// best_path() (RFC 4271 §9.1.2, RFC 4456 §9) on random path sets: after every
// random announce / implicit withdraw / withdraw, the winner and the ECMP set in
// the table must be exactly what best_path() picks from all of the prefix's
// paths, and change tracking must report the prefix iff they changed.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "test/unit/bgp/rib_test_util.hpp"

using namespace tabby;
using namespace tabby::bgp;
using namespace tabby::bgp::test;

namespace {

constexpr uint32_t kLocalAs = 64512;

// The best path and ECMP set as the table shows them: (peer, attribute set).
using Chosen = std::set<std::pair<PeerId, const AttrNode*>>;

struct World {
  AttrStore store;
  Rib rib{store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt}};
  std::vector<PeerId> peers;  // kLocalPeer included
  std::vector<AttrRef> sets;
  std::vector<Prefix> prefixes;
  std::mt19937 rng;

  explicit World(uint32_t seed) : rng(seed) {
    peers.push_back(kLocalPeer);
    // eBGP peers in a few ASes (two per AS so ECMP sets form), iBGP clients and non-clients.
    const uint32_t asns[] = {65001, 65001, 65002, 65002, 65003, kLocalAs, kLocalAs, kLocalAs};
    for (size_t i = 0; i < std::size(asns); ++i) {
      PeerConfig c;
      c.address = IpAddress::v4(0xC6120000u + 2 + static_cast<uint32_t>(rng() % 200) * 8 + static_cast<uint32_t>(i));
      c.asn = asns[i];
      c.router_id = IpAddress::v4(0x01000000u + rng() % 4);  // equal router IDs happen
      c.rr_client = rng() % 2;
      c.local_v4 = ip("10.0.0.1");
      peers.push_back(rib.add_peer(c));
    }
    const uint32_t first_as[] = {65001, 65002, 65003, 65009};
    for (int i = 0; i < 60; ++i) {
      PathAttributes a;
      a.next_hop = IpAddress::v4(0xC0000200u + rng() % 4);
      size_t len = rng() % 4;
      if (len) {
        AsPathSegment seg;
        seg.asns.push_back(first_as[rng() % 4]);
        while (seg.asns.size() < len) seg.asns.push_back(100 + rng() % 3);
        a.as_path.push_back(seg);
        if (rng() % 8 == 0) a.as_path.push_back(AsPathSegment{AsPathSegment::Type::Set, {7, 8}});
      }
      a.origin = static_cast<Origin>(rng() % 6 == 0 ? 2 : rng() % 6 == 0 ? 1 : 0);
      if (rng() % 3 == 0) a.local_pref = rng() % 2 ? 100 : 200;
      if (rng() % 2 == 0) a.med = (rng() % 3) * 5;
      if (rng() % 6 == 0) a.originator_id = IpAddress::v4(0x01000000u + rng() % 4);
      for (uint32_t n = rng() % 3; n; --n) a.cluster_list.push_back(0x02000000u + n);
      sets.push_back(store.intern(std::move(a)));
    }
    for (uint32_t i = 0; i < 6; ++i) prefixes.push_back(Prefix(IpAddress::v4(0xC6130000u + (i << 8)), 24));
  }

  Chosen chosen(const Prefix& p) {
    Chosen c;
    if (auto rv = rib.lookup(kIpv4Unicast, p))
      for (const auto& pv : rv->paths)
        if (pv.best || pv.multipath) c.emplace(pv.peer, pv.attrs.node());
    return c;
  }

  // The table's view of p must be what the full decision process picks.
  void check(const Prefix& p) {
    auto rv = rib.lookup(kIpv4Unicast, p);
    if (!rv) return;
    REQUIRE(!rv->paths.empty());
    std::vector<PathCandidate> cand;
    for (const auto& pv : rv->paths) {
      PathCandidate c;
      c.attrs = pv.attrs.get();
      c.local = pv.peer == kLocalPeer;
      c.ebgp = pv.peer != kLocalPeer && rib.is_ebgp(pv.peer);
      c.peer_router_id = pv.peer == kLocalPeer ? rid("10.0.0.1") : rib.peer(pv.peer).router_id.v4_host_order();
      c.peer_address = rib.peer(pv.peer).address;
      cand.push_back(c);
    }
    // Shuffled: best_path() does not depend on the order.
    std::vector<size_t> order(cand.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<PathCandidate> shuffled;
    for (size_t i : order) shuffled.push_back(cand[i]);
    BestPathResult r = best_path(shuffled, kLocalAs);
    INFO("prefix " << p.str() << " with " << cand.size() << " paths");
    CHECK(order[r.best] == 0);  // the table keeps its best first
    for (size_t j = 0; j < shuffled.size(); ++j) {
      const PathView& pv = rv->paths[order[j]];
      CHECK(pv.best == (j == r.best));
      CHECK(pv.multipath == shuffled[j].multipath);
    }
  }
};

}  // namespace

TEST_CASE("rib: incremental decision matches best_path() on random path sets") {
  uint64_t ops = 0, runs = 0;
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    World w(seed);
    for (int step = 0; step < 1500; ++step) {
      std::map<Prefix, Chosen> before;
      for (const auto& p : w.prefixes) before[p] = w.chosen(p);
      const Prefix& p = w.prefixes[w.rng() % w.prefixes.size()];
      PeerId peer = w.peers[w.rng() % w.peers.size()];
      uint32_t op = w.rng() % 100;
      if (op < 2 && peer != kLocalPeer) {
        w.rib.withdraw_all(peer, kIpv4Unicast);  // session down without graceful restart
      } else if (op < 4 && peer != kLocalPeer) {
        // RFC 4724 §4.2: stale, some paths refreshed, then the sweep.
        w.rib.mark_stale(peer, kIpv4Unicast);
        const AttrRef& a = w.sets[w.rng() % w.sets.size()];
        w.rib.announce(peer, kIpv4Unicast, std::span(&p, 1), a);
        w.rib.sweep_stale(peer, kIpv4Unicast);
      } else if (op < 25) {
        w.rib.withdraw(peer, kIpv4Unicast, std::span(&p, 1));
      } else {
        const AttrRef& a = w.sets[w.rng() % w.sets.size()];
        CHECK(w.rib.announce(peer, kIpv4Unicast, std::span(&p, 1), a) == ImportResult::Accepted);
      }
      ++ops;
      // Change tracking: exactly the prefixes whose best path or ECMP set changed.
      auto changed = w.rib.take_changes(kIpv4Unicast);
      std::set<Prefix> reported(changed.begin(), changed.end());
      INFO("seed " << seed << " step " << step << " op " << op);
      CHECK(reported.size() == changed.size());  // each once
      for (const auto& q : w.prefixes) {
        w.check(q);
        CHECK(reported.count(q) == (before[q] != w.chosen(q) ? 1u : 0u));
      }
    }
    runs += w.rib.decision_runs();
  }
  // The point of the fast path: most changes never run the decision.
  MESSAGE("full decisions: " << runs << " of " << ops << " changes");
  CHECK(runs < ops);
}

TEST_CASE("rib: incremental decision with many peers on one prefix (only ties run it)") {
  AttrStore store;
  Rib rib(store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt});
  Prefix p = pfx("198.19.0.0/24");
  std::vector<PeerId> ids;
  for (uint32_t n = 0; n < 50; ++n) {
    PeerConfig c;
    c.address = IpAddress::v4(0xC6120100u + n + 1);
    c.asn = 65001 + n;
    c.router_id = IpAddress::v4(0x01000000u + n);
    ids.push_back(rib.add_peer(c));
  }
  // Peer 0 has the shortest AS_PATH; every later path is longer: none of them
  // runs the decision, and the best never changes.
  auto short_path = store.intern(A().path({65001, 1}));
  CHECK(rib.announce(ids[0], kIpv4Unicast, std::span(&p, 1), short_path) == ImportResult::Accepted);
  rib.take_changes(kIpv4Unicast);
  for (uint32_t n = 1; n < 50; ++n) {
    auto longer = store.intern(A().path({65001 + n, 1, 2, 3}));
    rib.announce(ids[n], kIpv4Unicast, std::span(&p, 1), longer);
  }
  CHECK(rib.decision_runs() == 0);
  CHECK(rib.take_changes(kIpv4Unicast).empty());
  auto v = rib.lookup(kIpv4Unicast, p);
  REQUIRE(v);
  CHECK(v->paths.size() == 50);
  CHECK(v->paths[0].peer == ids[0]);
  // Withdrawing a losing path changes nothing either; withdrawing the best does.
  rib.withdraw(ids[7], kIpv4Unicast, std::span(&p, 1));
  CHECK(rib.decision_runs() == 0);
  CHECK(rib.take_changes(kIpv4Unicast).empty());
  rib.withdraw(ids[0], kIpv4Unicast, std::span(&p, 1));
  CHECK(rib.decision_runs() == 1);
  CHECK(rib.take_changes(kIpv4Unicast).size() == 1);
  v = rib.lookup(kIpv4Unicast, p);
  REQUIRE(v);
  CHECK(v->paths[0].peer == ids[1]);  // lowest router ID among the equal-length rest
  // A strictly better path wins at once, alone in its ECMP set.
  auto shortest = store.intern(A().path({65050}));
  rib.announce(ids[49], kIpv4Unicast, std::span(&p, 1), shortest);
  CHECK(rib.decision_runs() == 2);  // it replaced peer 49's own path (not in the ECMP set, worse rank)
  v = rib.lookup(kIpv4Unicast, p);
  REQUIRE(v);
  CHECK(v->paths[0].peer == ids[49]);
  int mp = 0;
  for (const auto& pv : v->paths) mp += pv.multipath;
  CHECK(mp == 1);
}
