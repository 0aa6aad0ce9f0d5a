// best_path_test.cpp — the decision process (RFC 4271 §9.1.2, RFC 4456 §9):
// each rule in isolation, a few combined, the reason text and the ECMP set.
#include <doctest/doctest.h>

#include <algorithm>

#include "test/unit/bgp/rib_test_util.hpp"

using namespace tabby;
using namespace tabby::bgp;
using namespace tabby::bgp::test;

namespace {
constexpr uint32_t kLocalAs = 64512;

struct Cands {
  std::vector<PathAttributes> attrs;
  std::vector<PathCandidate> c;
  // Adds a candidate; attributes are kept alive in `attrs` (reserved up front).
  Cands() { attrs.reserve(32); }
  Cands& add(PathAttributes a, bool ebgp, const char* peer_rid, const char* peer_addr,
             bool local = false) {
    attrs.push_back(std::move(a));
    PathCandidate pc;
    pc.attrs = &attrs.back();
    pc.ebgp = ebgp;
    pc.local = local;
    pc.peer_router_id = rid(peer_rid);
    pc.peer_address = ip(peer_addr);
    c.push_back(pc);
    return *this;
  }
  BestPathResult run() { return best_path(c, kLocalAs); }
  std::string text(const BestPathResult& r) { return best_path_reason_text(r, c, kLocalAs); }
};
}  // namespace

TEST_CASE("best path: no candidates and a single one") {
  Cands none;
  CHECK(none.run().reason == BestPathReason::None);
  Cands one;
  one.add(A().path({65001}), true, "1.1.1.1", "10.0.0.1");
  auto r = one.run();
  CHECK(r.best == 0);
  CHECK(r.reason == BestPathReason::OnlyPath);
  CHECK(one.text(r) == "only path");
  CHECK(one.c[0].multipath);
}

TEST_CASE("best path: locally originated wins over everything") {
  Cands c;
  c.add(A().path({65001}).lp(500), false, "1.1.1.1", "10.0.0.1");
  c.add(A().path({}).no_nh(), false, "9.9.9.9", "0.0.0.0", /*local=*/true);
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::LocallyOriginated);
  CHECK(c.text(r) == "locally originated");
}

TEST_CASE("best path: highest LOCAL_PREF (RFC 4271 §9.1.1)") {
  Cands c;
  c.add(A().path({65001}).lp(100), false, "1.1.1.1", "10.0.0.1");
  c.add(A().path({65001, 65002, 65003}).lp(200), false, "2.2.2.2", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::LocalPref);
  CHECK(c.text(r) == "higher LOCAL_PREF (200 > 100)");
}

TEST_CASE("best path: LOCAL_PREF received over eBGP is ignored (default 100)") {
  Cands c;
  c.add(A().path({65001}).lp(300), true, "1.1.1.1", "10.0.0.1");   // eBGP: counts as 100
  c.add(A().path({65002, 65003}).lp(150), false, "2.2.2.2", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::LocalPref);
  CHECK(c.text(r) == "higher LOCAL_PREF (150 > 100)");
}

TEST_CASE("best path: absent LOCAL_PREF counts as 100") {
  Cands c;
  c.add(A().path({65001}), false, "1.1.1.1", "10.0.0.1");
  c.add(A().path({65001, 65002}).lp(99), false, "2.2.2.2", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 0);
  CHECK(r.reason == BestPathReason::LocalPref);
}

TEST_CASE("best path: shortest AS_PATH (§9.1.2.2 a), a SET counts one") {
  Cands c;
  c.add(A().path({65001, 65002, 65003}), true, "1.1.1.1", "10.0.0.1");
  c.add(A().path({65004, 65005}), true, "2.2.2.2", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::AsPathLength);
  CHECK(c.text(r) == "lower AS_PATH length (2 < 3)");

  Cands s;
  PathAttributes with_set = A().path({65001});
  with_set.as_path.push_back(AsPathSegment{AsPathSegment::Type::Set, {1, 2, 3, 4}});  // length 2
  s.add(with_set, true, "1.1.1.1", "10.0.0.1");
  s.add(A().path({65004, 65005, 65006}), true, "2.2.2.2", "10.0.0.2");
  auto rs = s.run();
  CHECK(rs.best == 0);
  CHECK(s.text(rs) == "lower AS_PATH length (2 < 3)");
}

TEST_CASE("best path: lowest ORIGIN (§9.1.2.2 b)") {
  Cands c;
  c.add(A().path({65001}).origin(Origin::Incomplete), true, "1.1.1.1", "10.0.0.1");
  c.add(A().path({65002}).origin(Origin::Egp), true, "2.2.2.2", "10.0.0.2");
  c.add(A().path({65003}).origin(Origin::Igp), true, "3.3.3.3", "10.0.0.3");
  auto r = c.run();
  CHECK(r.best == 2);
  CHECK(r.reason == BestPathReason::Origin);
  CHECK(c.text(r).rfind("lower ORIGIN (IGP < ", 0) == 0);
}

TEST_CASE("best path: MED compared only within the same neighbour AS (§9.1.2.2 c)") {
  SUBCASE("same neighbour AS: lower MED wins") {
    Cands c;
    c.add(A().path({65001, 7}).med(20), true, "1.1.1.1", "10.0.0.1");
    c.add(A().path({65001, 8}).med(10), true, "2.2.2.2", "10.0.0.2");
    auto r = c.run();
    CHECK(r.best == 1);
    CHECK(r.reason == BestPathReason::Med);
    CHECK(c.text(r) == "lower MED from AS 65001 (10 < 20)");
  }
  SUBCASE("missing MED counts as 0") {
    Cands c;
    c.add(A().path({65001, 7}).med(5), true, "1.1.1.1", "10.0.0.1");
    c.add(A().path({65001, 8}), true, "2.2.2.2", "10.0.0.2");
    CHECK(c.run().best == 1);
  }
  SUBCASE("different neighbour AS: MED not compared, falls to router ID") {
    Cands c;
    c.add(A().path({65001, 7}).med(0), true, "2.2.2.2", "10.0.0.1");
    c.add(A().path({65002, 8}).med(50), true, "1.1.1.1", "10.0.0.2");
    auto r = c.run();
    CHECK(r.best == 1);
    CHECK(r.reason == BestPathReason::RouterId);
  }
  SUBCASE("order independent (deterministic MED)") {
    // A(AS1, MED 10, rid 3), B(AS2, MED 5, rid 1), C(AS1, MED 5, rid 2).
    // RFC as written: A loses to C on MED; B and C remain; B wins on router ID.
    std::vector<int> order = {0, 1, 2};
    do {
      Cands c;
      const char* rids[] = {"3.3.3.3", "1.1.1.1", "2.2.2.2"};
      PathAttributes as[] = {A().path({1, 9}).med(10), A().path({2, 9}).med(5), A().path({1, 9}).med(5)};
      for (int i : order) c.add(as[i], true, rids[i], rids[i]);
      auto r = c.run();
      CHECK(c.c[r.best].peer_router_id == rid("1.1.1.1"));
    } while (std::next_permutation(order.begin(), order.end()));
  }
}

TEST_CASE("best path: eBGP over iBGP (§9.1.2.2 d)") {
  Cands c;
  c.add(A().path({65001}), false, "1.1.1.1", "10.0.0.1");
  c.add(A().path({65001}), true, "2.2.2.2", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::EbgpOverIbgp);
  CHECK(c.text(r) == "eBGP over iBGP");
}

TEST_CASE("best path: lowest router ID, ORIGINATOR_ID in its place (§9.1.2.2 f, RFC 4456 §9)") {
  Cands c;
  c.add(A().path({65001}), false, "2.2.2.2", "10.0.0.1");
  c.add(A().path({65001}), false, "1.1.1.1", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::RouterId);
  CHECK(c.text(r) == "lower router ID (1.1.1.1 < 2.2.2.2)");

  Cands o;  // the reflected path carries ORIGINATOR_ID 3.3.3.3: it is compared, not the RR's ID
  o.add(A().path({65001}).orig_id("3.3.3.3").clusters({1}), false, "1.1.1.1", "10.0.0.1");
  o.add(A().path({65001}), false, "2.2.2.2", "10.0.0.2");
  auto ro = o.run();
  CHECK(ro.best == 1);
  CHECK(ro.reason == BestPathReason::RouterId);
  CHECK(o.text(ro) == "lower ORIGINATOR_ID/router ID (2.2.2.2 < 3.3.3.3)");
}

TEST_CASE("best path: shortest CLUSTER_LIST (RFC 4456 §9)") {
  Cands c;
  c.add(A().path({65001}).orig_id("5.5.5.5").clusters({1, 2}), false, "1.1.1.1", "10.0.0.1");
  c.add(A().path({65001}).orig_id("5.5.5.5").clusters({3}), false, "2.2.2.2", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::ClusterListLength);
  CHECK(c.text(r) == "shorter CLUSTER_LIST (1 < 2)");
}

TEST_CASE("best path: lowest peer address (§9.1.2.2 g)") {
  Cands c;
  c.add(A().path({65001}), false, "1.1.1.1", "10.0.0.9");
  c.add(A().path({65001}), false, "1.1.1.1", "10.0.0.3");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::PeerAddress);
  CHECK(c.text(r) == "lower peer address (10.0.0.3 < 10.0.0.9)");
}

TEST_CASE("best path: combined rules, the last deciding rule is the reason") {
  Cands c;
  c.add(A().path({65001}).lp(50), false, "1.1.1.1", "10.0.0.1");           // out at LOCAL_PREF
  c.add(A().path({65001, 65002, 65003}), true, "2.2.2.2", "10.0.0.2");      // out at AS_PATH
  c.add(A().path({65004, 65005}).origin(Origin::Incomplete), true, "3.3.3.3", "10.0.0.3");  // ORIGIN
  c.add(A().path({65006, 65007}), true, "4.4.4.4", "10.0.0.4");             // winner
  auto r = c.run();
  CHECK(r.best == 3);
  CHECK(r.reason == BestPathReason::Origin);
  CHECK(c.text(r) == "lower ORIGIN (IGP < INCOMPLETE)");
}

TEST_CASE("best path: ECMP set") {
  SUBCASE("eBGP, same neighbour AS and length: multipath") {
    Cands c;
    c.add(A().path({65001, 1}).nh("10.0.0.1"), true, "1.1.1.1", "10.0.0.1");
    c.add(A().path({65001, 2}).nh("10.0.0.2"), true, "2.2.2.2", "10.0.0.2");
    c.add(A().path({65002, 3}).nh("10.0.0.3"), true, "3.3.3.3", "10.0.0.3");  // other AS: no
    c.add(A().path({65001, 4, 5}).nh("10.0.0.4"), true, "0.0.0.4", "10.0.0.4");  // longer: no
    auto r = c.run();
    CHECK(r.best == 0);
    CHECK(r.multipath_count == 2);
    CHECK(c.c[0].multipath);
    CHECK(c.c[1].multipath);
    CHECK_FALSE(c.c[2].multipath);
    CHECK_FALSE(c.c[3].multipath);
  }
  SUBCASE("iBGP paths tie: multipath; eBGP beats iBGP: not") {
    Cands c;
    c.add(A().path({65001}).nh("10.0.0.1"), false, "1.1.1.1", "10.0.0.1");
    c.add(A().path({65009}).nh("10.0.0.2"), false, "2.2.2.2", "10.0.0.2");
    auto r = c.run();
    CHECK(r.multipath_count == 2);
    Cands d;
    d.add(A().path({65001}).nh("10.0.0.1"), false, "1.1.1.1", "10.0.0.1");
    d.add(A().path({65001}).nh("10.0.0.2"), true, "2.2.2.2", "10.0.0.2");
    auto rd = d.run();
    CHECK(rd.best == 1);
    CHECK(rd.multipath_count == 1);
    CHECK_FALSE(d.c[0].multipath);
  }
  SUBCASE("MED loser is not in the set") {
    Cands c;
    c.add(A().path({65001}).med(10), true, "1.1.1.1", "10.0.0.1");
    c.add(A().path({65001}).med(20), true, "2.2.2.2", "10.0.0.2");
    auto r = c.run();
    CHECK(r.multipath_count == 1);
    CHECK_FALSE(c.c[1].multipath);
  }
}

TEST_CASE("best path: reason names") {
  CHECK(best_path_reason_name(BestPathReason::AsPathLength) == "as-path-length");
  CHECK(best_path_reason_name(BestPathReason::OnlyPath) == "only-path");
}

TEST_CASE("best path: LLGR_STALE is least preferred, before every other rule (RFC 9494 §4.3)") {
  Cands c;
  c.add(A().path({65001}).lp(300), false, "1.1.1.1", "10.0.0.1");
  c.c.back().llgr_stale = true;
  c.add(A().path({65002, 1, 2, 3}).lp(100), false, "2.2.2.2", "10.0.0.2");
  auto r = c.run();
  CHECK(r.best == 1);
  CHECK(r.reason == BestPathReason::NotLongLivedStale);
  CHECK(c.text(r) == "not LLGR_STALE (RFC 9494)");
  CHECK_FALSE(c.c[0].multipath);
  // Among LLGR_STALE paths alone the usual rules decide.
  c.c[1].llgr_stale = true;
  r = c.run();
  CHECK(r.best == 0);
  CHECK(r.reason == BestPathReason::LocalPref);
}
