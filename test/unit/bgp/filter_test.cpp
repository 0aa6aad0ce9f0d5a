// filter_test.cpp — route filters (bgp/filter.hpp) and how the RIB applies
// them: first match wins, default accept, Calico prefix operators and lengths,
// communities / origin AS / AS-path regex, fail-closed unresolved filters;
// import filter re-evaluation without the peer resending (rejected paths kept
// aside); export filters in update groups; RFC 4271 §5.1.3 own NEXT_HOP and
// §6.3 enforceFirstAS (treat-as-withdraw).
#include <doctest/doctest.h>

#include <random>

#include "bgp/filter.hpp"
#include "test/unit/bgp/rib_test_util.hpp"

using namespace tabby;
using namespace tabby::bgp;
using namespace tabby::bgp::test;

namespace {

FilterRule rule(FilterAction act, std::optional<MatchOperator> op = std::nullopt, const char* cidr = nullptr) {
  FilterRule r;
  r.action = act;
  r.op = op;
  if (cidr) r.cidr = pfx(cidr);
  return r;
}

bool accepts(const RouteFilter& f, const char* p, const PathAttributes* a = nullptr, bool from_peer = true) {
  return evaluate_filter(f, pfx(p), a, from_peer).accepted;
}

}  // namespace

TEST_CASE("filter: first matching rule decides; no match is accepted (Calico default)") {
  RouteFilter f;
  f.rules.push_back(rule(FilterAction::Accept, MatchOperator::Equal, "0.0.0.0/0"));
  f.rules.push_back(rule(FilterAction::Reject));  // catch-all
  CHECK(accepts(f, "0.0.0.0/0"));
  CHECK_FALSE(accepts(f, "203.0.113.0/24"));
  CHECK(evaluate_filter(f, pfx("0.0.0.0/0"), nullptr, true).rule == 0);
  CHECK(evaluate_filter(f, pfx("203.0.113.0/24"), nullptr, true).rule == 1);

  RouteFilter only_reject;
  only_reject.rules.push_back(rule(FilterAction::Reject, MatchOperator::In, "198.19.0.0/16"));
  CHECK_FALSE(accepts(only_reject, "198.19.4.0/26"));
  FilterVerdict v = evaluate_filter(only_reject, pfx("203.0.113.0/24"), nullptr, true);
  CHECK(v.accepted);
  CHECK(v.rule == FilterVerdict::kDefault);
}

TEST_CASE("filter: Equal / NotEqual / In / NotIn with prefixLength") {
  FilterRule in = rule(FilterAction::Accept, MatchOperator::In, "10.0.0.0/8");
  CHECK(rule_prefix_matches(in, pfx("10.0.0.0/8")));
  CHECK(rule_prefix_matches(in, pfx("10.1.2.3/32")));
  CHECK_FALSE(rule_prefix_matches(in, pfx("11.0.0.0/8")));
  CHECK_FALSE(rule_prefix_matches(in, pfx("0.0.0.0/0")));  // shorter than the cidr
  in.min_len = 16;
  in.max_len = 24;
  CHECK_FALSE(rule_prefix_matches(in, pfx("10.0.0.0/8")));
  CHECK(rule_prefix_matches(in, pfx("10.1.0.0/16")));
  CHECK(rule_prefix_matches(in, pfx("10.1.2.0/24")));
  CHECK_FALSE(rule_prefix_matches(in, pfx("10.1.2.0/25")));
  FilterRule not_in = in;
  not_in.op = MatchOperator::NotIn;
  CHECK(rule_prefix_matches(not_in, pfx("10.1.2.0/25")));
  CHECK_FALSE(rule_prefix_matches(not_in, pfx("10.1.2.0/24")));
  CHECK(rule_prefix_matches(not_in, pfx("2001:db8::/32")));  // other family: not inside

  FilterRule eq = rule(FilterAction::Accept, MatchOperator::Equal, "10.0.0.0/8");
  CHECK(rule_prefix_matches(eq, pfx("10.0.0.0/8")));
  CHECK_FALSE(rule_prefix_matches(eq, pfx("10.0.0.0/9")));
  FilterRule ne = eq;
  ne.op = MatchOperator::NotEqual;
  CHECK(rule_prefix_matches(ne, pfx("10.0.0.0/9")));
  CHECK_FALSE(rule_prefix_matches(ne, pfx("10.0.0.0/8")));
}

TEST_CASE("filter: per-family rules (importV4 vs importV6)") {
  RouteFilter f;
  FilterRule v4_reject_all = rule(FilterAction::Reject);
  v4_reject_all.v6 = false;
  f.rules.push_back(v4_reject_all);
  CHECK_FALSE(accepts(f, "203.0.113.0/24"));
  CHECK(accepts(f, "2001:db8::/48"));
}

TEST_CASE("filter: communities, origin AS, AS-path regex, source RemotePeers") {
  PathAttributes a = A().path({65001, 65010, 65020}).comm(65001u << 16 | 666);
  RouteFilter f;
  FilterRule by_comm = rule(FilterAction::Reject);
  by_comm.communities = {65001u << 16 | 666};
  f.rules.push_back(by_comm);
  CHECK_FALSE(accepts(f, "203.0.113.0/24", &a));
  PathAttributes clean = A().path({65001, 65010, 65020});
  CHECK(accepts(f, "203.0.113.0/24", &clean));

  RouteFilter origin;
  FilterRule o = rule(FilterAction::Accept);
  o.origin_as = {65020};
  origin.rules.push_back(o);
  origin.rules.push_back(rule(FilterAction::Reject));
  CHECK(accepts(origin, "203.0.113.0/24", &clean));
  PathAttributes other = A().path({65001, 65030});
  CHECK_FALSE(accepts(origin, "203.0.113.0/24", &other));
  CHECK(as_path_origin(clean.as_path) == 65020u);
  CHECK_FALSE(as_path_origin({}).has_value());

  RouteFilter re;
  FilterRule r = rule(FilterAction::Reject);
  auto rx = make_as_path_regex("_65010_");
  REQUIRE(rx);
  r.as_path_regex = *rx;
  re.rules.push_back(r);
  CHECK_FALSE(accepts(re, "203.0.113.0/24", &clean));
  PathAttributes near = A().path({65001, 650100});
  CHECK(accepts(re, "203.0.113.0/24", &near));  // '_' is a boundary, not a substring match
  CHECK_FALSE(make_as_path_regex("(unclosed"));

  RouteFilter remote;
  FilterRule rp = rule(FilterAction::Reject);
  rp.remote_peers_only = true;
  remote.rules.push_back(rp);
  CHECK_FALSE(accepts(remote, "203.0.113.0/24", &clean, true));
  CHECK(accepts(remote, "198.19.0.0/26", &clean, false));  // originated here
}

TEST_CASE("filter: fails closed (unresolved filter, interface condition)") {
  RouteFilter f;
  f.unresolved = true;
  f.problem = "BGPFilter 'nope' not found";
  CHECK_FALSE(f.empty());
  FilterVerdict v = evaluate_filter(f, pfx("0.0.0.0/0"), nullptr, true);
  CHECK_FALSE(v.accepted);
  CHECK(v.rule == FilterVerdict::kUnresolved);
  CHECK(filter_verdict_text(f, v).find("nope") != std::string::npos);

  RouteFilter iface;
  FilterRule acc = rule(FilterAction::Accept);
  acc.interface = "*.calico";
  iface.rules.push_back(acc);
  FilterRule rej = rule(FilterAction::Reject);
  rej.interface = "*.calico";
  iface.rules.push_back(rej);
  // The Accept rule cannot match, the Reject rule does.
  CHECK_FALSE(accepts(iface, "198.19.0.0/26"));
}

// ---------------------------------------------------------------- the RIB

namespace {
constexpr uint32_t kLocalAs = 64512;

struct Lab {
  AttrStore store;
  Rib rib{store, RibConfig{kLocalAs, ip("10.0.0.1"), std::nullopt}};
  PeerId tor = 0, other = 0;
  PeerConfig tor_cfg;

  Lab() {
    tor_cfg.address = ip("198.18.0.2");
    tor_cfg.asn = 65001;
    tor_cfg.router_id = ip("198.18.0.2");
    tor_cfg.local_v4 = ip("198.18.0.1");
    tor_cfg.enforce_first_as = true;
    tor = rib.add_peer(tor_cfg);
    PeerConfig o;
    o.address = ip("198.18.1.2");
    o.asn = 65002;
    o.router_id = ip("198.18.1.2");
    o.local_v4 = ip("198.18.1.1");
    other = rib.add_peer(o);
    rib.peer_up(tor);
    rib.peer_up(other);
  }
  ImportResult ann(PeerId p, std::vector<const char*> prefixes, const PathAttributes& a) {
    std::vector<Prefix> v;
    for (auto* s : prefixes) v.push_back(pfx(s));
    return rib.announce(p, kIpv4Unicast, v, store.intern(a));
  }
  bool has(const char* p) { return rib.lookup(kIpv4Unicast, pfx(p)).has_value(); }
  size_t rejected(PeerId p) {
    size_t n = 0;
    rib.for_each_rejected_from(p, kIpv4Unicast, [&](const Prefix&, const AttrRef&, int) { ++n; });
    return n;
  }
};

RouteFilter default_only() {
  RouteFilter f;
  f.rules.push_back(rule(FilterAction::Accept, MatchOperator::Equal, "0.0.0.0/0"));
  f.rules.push_back(rule(FilterAction::Reject));
  return f;
}
}  // namespace

TEST_CASE("rib import filter: only accepted prefixes enter the Loc-RIB; rejected ones are kept aside") {
  Lab l;
  l.tor_cfg.import_filter = default_only();
  l.rib.update_peer(l.tor, l.tor_cfg);
  PathAttributes a = A().path({65001}).nh("198.18.0.2");
  l.ann(l.tor, {"0.0.0.0/0", "203.0.113.0/24", "203.0.113.7/32"}, a);
  CHECK(l.has("0.0.0.0/0"));
  CHECK_FALSE(l.has("203.0.113.0/24"));
  CHECK_FALSE(l.has("203.0.113.7/32"));
  CHECK(l.rejected(l.tor) == 2);
  CHECK(l.rib.stats(l.tor).filtered[0] == 2);
  CHECK(l.rib.stats(l.tor).accepted[0] == 1);
  // A withdrawal forgets a rejected path too.
  Prefix gone = pfx("203.0.113.7/32");
  l.rib.withdraw(l.tor, kIpv4Unicast, std::span(&gone, 1));
  CHECK(l.rejected(l.tor) == 1);
}

TEST_CASE("rib import filter: a filter change flips held and rejected paths, reported as changes") {
  Lab l;
  l.tor_cfg.import_filter = default_only();
  l.rib.update_peer(l.tor, l.tor_cfg);
  PathAttributes a = A().path({65001}).nh("198.18.0.2");
  l.ann(l.tor, {"0.0.0.0/0", "203.0.113.0/24", "198.51.100.0/24"}, a);
  l.rib.take_changes(kIpv4Unicast);
  // Now accept the test table but not the default route.
  RouteFilter f;
  f.rules.push_back(rule(FilterAction::Accept, MatchOperator::In, "203.0.113.0/24"));
  f.rules.push_back(rule(FilterAction::Reject));
  l.tor_cfg.import_filter = f;
  l.rib.update_peer(l.tor, l.tor_cfg);
  CHECK_FALSE(l.has("0.0.0.0/0"));
  CHECK(l.has("203.0.113.0/24"));
  CHECK_FALSE(l.has("198.51.100.0/24"));
  auto changes = l.rib.take_changes(kIpv4Unicast);
  std::sort(changes.begin(), changes.end());
  CHECK(changes == std::vector<Prefix>{pfx("0.0.0.0/0"), pfx("203.0.113.0/24")});
  // The other peer is sent only the difference: the default route withdrawn,
  // the test table announced (its Adj-RIB-Out had the default route).
  // Removing the filter accepts everything held aside.
  l.tor_cfg.import_filter = RouteFilter{};
  l.rib.update_peer(l.tor, l.tor_cfg);
  CHECK(l.has("0.0.0.0/0"));
  CHECK(l.has("198.51.100.0/24"));
  CHECK(l.rejected(l.tor) == 0);
}

TEST_CASE("rib import filter: the peers are sent only the difference after a change") {
  Lab l;
  l.tor_cfg.import_filter = default_only();
  l.rib.update_peer(l.tor, l.tor_cfg);
  l.ann(l.tor, {"0.0.0.0/0", "203.0.113.0/24"}, A().path({65001}).nh("198.18.0.2"));
  auto first = l.rib.export_changes(l.other, kIpv4Unicast, l.rib.take_changes(kIpv4Unicast));
  CHECK(first.announced_count() == 1);
  RouteFilter none;  // accept all
  l.tor_cfg.import_filter = none;
  l.rib.update_peer(l.tor, l.tor_cfg);
  auto second = l.rib.export_changes(l.other, kIpv4Unicast, l.rib.take_changes(kIpv4Unicast));
  REQUIRE(second.announced.size() == 1);
  CHECK(second.announced[0].prefixes == std::vector<Prefix>{pfx("203.0.113.0/24")});
  CHECK(second.withdrawn.empty());
}

TEST_CASE("rib import filter: evaluators reused across UPDATEs follow the attribute set, the filter and peer moves") {
  // The RIB keeps the evaluator of a peer's recent attribute sets (rib_impl.hpp
  // PeerState::evals). Each verdict here must be the one a fresh evaluation gives.
  Lab l;
  RouteFilter f;
  FilterRule r = rule(FilterAction::Reject);
  auto rx = make_as_path_regex("_65010_");
  REQUIRE(rx);
  r.as_path_regex = *rx;
  f.rules.push_back(r);
  f.rules.push_back(rule(FilterAction::Accept, MatchOperator::In, "203.0.113.0/24"));
  f.rules.push_back(rule(FilterAction::Reject));
  l.tor_cfg.import_filter = f;
  l.rib.update_peer(l.tor, l.tor_cfg);
  // More attribute sets than the evaluator cache holds, interleaved.
  std::vector<PathAttributes> sets;
  for (uint32_t i = 0; i < 7; ++i) sets.push_back(A().path({65001, i % 2 ? 65010u : 65020u, 64600 + i}).nh("198.18.0.2"));
  auto p = [](uint32_t i, uint32_t k) { return "203.0.113." + std::to_string(i * 16 + k) + "/32"; };
  auto check_all = [&](bool regex_rejects, bool only_test_net) {
    for (uint32_t k = 0; k < 3; ++k)
      for (uint32_t i = 0; i < sets.size(); ++i) {
        std::string a = p(i, k), b = "198.51.100." + std::to_string(i * 16 + k) + "/32";
        l.ann(l.tor, {a.c_str(), b.c_str()}, sets[i]);
        const bool odd = i % 2;
        CHECK(l.has(a.c_str()) == !(regex_rejects && odd));
        CHECK(l.has(b.c_str()) == (!(regex_rejects && odd) && !only_test_net));
      }
  };
  check_all(true, true);
  // The filter changes: no evaluator built on the old one may answer.
  RouteFilter g;
  g.rules.push_back(rule(FilterAction::Accept));
  l.tor_cfg.import_filter = g;
  l.rib.update_peer(l.tor, l.tor_cfg);
  check_all(false, false);
  l.tor_cfg.import_filter = f;
  l.rib.update_peer(l.tor, l.tor_cfg);
  // Peers added after the evaluators were built move the peer table.
  for (int i = 0; i < 40; ++i) {
    PeerConfig c;
    c.address = IpAddress::v4(0xC6120100u + static_cast<uint32_t>(i));
    c.asn = 65100;
    l.rib.add_peer(c);
  }
  check_all(true, true);
  // The evaluators count their attribute sets; the session going down lets them go.
  l.rib.withdraw_all(l.tor, kIpv4Unicast);
  l.rib.peer_down(l.tor);
  l.rib.peer_down(l.other);
  l.rib.take_changes(kIpv4Unicast);
  CHECK(l.store.size() == 0);
}

TEST_CASE("rib import filter: unresolved filter rejects everything (fail closed)") {
  Lab l;
  RouteFilter broken;
  broken.unresolved = true;
  l.tor_cfg.import_filter = broken;
  l.rib.update_peer(l.tor, l.tor_cfg);
  CHECK(l.ann(l.tor, {"0.0.0.0/0"}, A().path({65001}).nh("198.18.0.2")) == ImportResult::Filtered);
  CHECK_FALSE(l.has("0.0.0.0/0"));
}

TEST_CASE("rib: a NEXT_HOP that is our own session address is ignored (RFC 4271 §5.1.3)") {
  Lab l;
  CHECK(l.ann(l.tor, {"203.0.113.0/24"}, A().path({65001}).nh("198.18.0.1")) == ImportResult::OwnNextHop);
  CHECK_FALSE(l.has("203.0.113.0/24"));
  // It replaces (withdraws) an earlier usable path for the prefix.
  CHECK(l.ann(l.tor, {"198.51.100.0/24"}, A().path({65001}).nh("198.18.0.2")) == ImportResult::Accepted);
  CHECK(l.has("198.51.100.0/24"));
  CHECK(l.ann(l.tor, {"198.51.100.0/24"}, A().path({65001}).nh("198.18.0.1")) == ImportResult::OwnNextHop);
  CHECK_FALSE(l.has("198.51.100.0/24"));
}

TEST_CASE("rib: enforceFirstAS treats an eBGP path not starting with the peer's AS as withdrawn") {
  Lab l;
  CHECK(l.ann(l.tor, {"203.0.113.0/24"}, A().path({65001, 65010}).nh("198.18.0.2")) == ImportResult::Accepted);
  CHECK(l.has("203.0.113.0/24"));
  CHECK(l.ann(l.tor, {"203.0.113.0/24"}, A().path({65099, 65010}).nh("198.18.0.2")) == ImportResult::FirstAsMismatch);
  CHECK_FALSE(l.has("203.0.113.0/24"));
  CHECK(l.ann(l.tor, {"203.0.113.0/24"}, A().path({}).nh("198.18.0.2")) == ImportResult::FirstAsMismatch);
  // Off for this peer (a route server that does not prepend its AS): accepted.
  l.tor_cfg.enforce_first_as = false;
  l.rib.update_peer(l.tor, l.tor_cfg);
  CHECK(l.ann(l.tor, {"203.0.113.0/24"}, A().path({65099, 65010}).nh("198.18.0.2")) == ImportResult::Accepted);
}

TEST_CASE("rib export filter: rules per peer; peers with different filters are in different update groups") {
  Lab l;
  l.rib.announce(kLocalPeer, kIpv4Unicast, std::vector<Prefix>{pfx("198.19.0.0/26")},
                 l.store.intern(A().path({}).no_nh()));
  l.ann(l.tor, {"0.0.0.0/0"}, A().path({65001}).nh("198.18.0.2"));
  // To `other`: no pod blocks.
  PeerConfig o = l.rib.peer(l.other);
  RouteFilter ex;
  ex.rules.push_back(rule(FilterAction::Reject, MatchOperator::In, "198.19.0.0/16"));
  o.export_filter.rules = ex;
  l.rib.update_peer(l.other, o);
  GroupId g_tor = l.rib.join_group(l.tor, kIpv4Unicast, 0);
  GroupId g_other = l.rib.join_group(l.other, kIpv4Unicast, 0);
  CHECK(g_tor != g_other);
  OutUpdate to_other = l.rib.full_dump(l.other, kIpv4Unicast);
  REQUIRE(to_other.announced.size() == 1);
  CHECK(to_other.announced[0].prefixes == std::vector<Prefix>{pfx("0.0.0.0/0")});
  OutUpdate to_tor = l.rib.full_dump(l.tor, kIpv4Unicast);
  REQUIRE(to_tor.announced_count() == 1);
  CHECK(to_tor.announced[0].prefixes == std::vector<Prefix>{pfx("198.19.0.0/26")});
  // Unresolved export filter: nothing goes out.
  o.export_filter.rules.unresolved = true;
  l.rib.update_peer(l.other, o);
  l.rib.regroup(l.other, kIpv4Unicast);
  CHECK(l.rib.full_dump(l.other, kIpv4Unicast).announced_count() == 0);
}

TEST_CASE("rib import filter: turning unresolved at run time removes everything the peer sent; resolving restores it") {
  Lab l;
  l.ann(l.tor, {"0.0.0.0/0", "203.0.113.0/24"}, A().path({65001}).nh("198.18.0.2"));
  l.rib.take_changes(kIpv4Unicast);
  RouteFilter broken;
  broken.unresolved = true;
  l.tor_cfg.import_filter = broken;
  l.rib.update_peer(l.tor, l.tor_cfg);
  CHECK_FALSE(l.has("0.0.0.0/0"));
  CHECK_FALSE(l.has("203.0.113.0/24"));
  CHECK(l.rib.take_changes(kIpv4Unicast).size() == 2);
  l.tor_cfg.import_filter = default_only();
  l.rib.update_peer(l.tor, l.tor_cfg);
  CHECK(l.has("0.0.0.0/0"));
  CHECK_FALSE(l.has("203.0.113.0/24"));
}

TEST_CASE("filter: compiled evaluation skips rules whose attribute conditions fail for the batch") {
  RouteFilter f;
  FilterRule by_comm = rule(FilterAction::Reject);
  by_comm.communities = {65001u << 16 | 666};
  f.rules.push_back(by_comm);
  f.rules.push_back(rule(FilterAction::Accept, MatchOperator::In, "203.0.113.0/24"));
  f.rules.push_back(rule(FilterAction::Reject));
  auto c = compile_filter(f);
  REQUIRE(c);
  PathAttributes tagged = A().path({65001}).comm(65001u << 16 | 666), clean = A().path({65001});
  FilterEval t(f, &tagged, true, c.get()), u(f, &clean, true, c.get());
  CHECK(t(pfx("203.0.113.0/25")).rule == 0);
  CHECK_FALSE(t(pfx("203.0.113.0/25")).accepted);
  CHECK(u(pfx("203.0.113.0/25")).rule == 1);
  CHECK(u(pfx("198.51.100.0/24")).rule == 2);
  CHECK(u(pfx("2001:db8::/48")).rule == 2);  // IPv6 takes the rule-by-rule path
}

TEST_CASE("filter: the compiled IPv4 evaluation agrees with the rule-by-rule definition (random rules and prefixes)") {
  std::mt19937 rng(7);
  auto rand_v4 = [&](uint8_t len) { return Prefix::from_v4(static_cast<uint32_t>(rng()) & 0x0F0F00FFu, len); };
  size_t matched = 0, total = 0;
  for (int round = 0; round < 300; ++round) {
    RouteFilter f;
    const int nrules = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < nrules; ++i) {
      FilterRule r = rule(rng() % 2 ? FilterAction::Accept : FilterAction::Reject);
      if (rng() % 5) {
        r.op = static_cast<MatchOperator>(rng() % 4);
        if (rng() % 8 == 0) {
          r.cidr = pfx("2001:db8::/32");
        } else {
          r.cidr = rand_v4(static_cast<uint8_t>(rng() % 33));
          if ((*r.op == MatchOperator::In || *r.op == MatchOperator::NotIn) && rng() % 2) {
            uint8_t lo = static_cast<uint8_t>(r.cidr.len() + rng() % (33 - r.cidr.len()));
            r.min_len = lo;
            r.max_len = static_cast<uint8_t>(lo + rng() % (33 - lo));
          }
        }
      }
      if (rng() % 6 == 0) r.v4 = false;
      if (rng() % 5 == 0) r.communities = {rng() % 2 ? 65001u << 16 | 1 : 65001u << 16 | 2};
      f.rules.push_back(r);
    }
    PathAttributes attrs = A().path({65001}).comm(65001u << 16 | 1);  // carries 65001:1, not 65001:2
    FilterEval eval(f, &attrs, true);
    auto compiled = compile_filter(f);
    REQUIRE(compiled);
    FilterEval fast(f, &attrs, true, compiled.get());
    std::vector<std::pair<Prefix, FilterVerdict>> seen;
    for (int j = 0; j < 200; ++j) {
      Prefix p = rand_v4(static_cast<uint8_t>(rng() % 33));
      FilterVerdict want{true, FilterVerdict::kDefault};
      for (size_t i = 0; i < f.rules.size(); ++i)
        if (f.rules[i].v4 && rule_prefix_matches(f.rules[i], p) &&
            (f.rules[i].communities.empty() || f.rules[i].communities[0] == (65001u << 16 | 1))) {
          want = FilterVerdict{f.rules[i].action == FilterAction::Accept, static_cast<int>(i)};
          break;
        }
      FilterVerdict got = eval(p), got_fast = fast(p);
      CAPTURE(p.str());
      CHECK(got.accepted == want.accepted);
      CHECK(got.rule == want.rule);
      CHECK(got_fast.accepted == want.accepted);
      CHECK(got_fast.rule == want.rule);
      matched += want.rule != FilterVerdict::kDefault;
      ++total;
      seen.emplace_back(p, want);
    }
    // In address order (as a sorted feed arrives), the segment cache is hit.
    std::sort(seen.begin(), seen.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    FilterEval sorted(f, &attrs, true, compiled.get());
    FilterEval packed(f, &attrs, true, compiled.get());
    for (const auto& [p, want] : seen) {
      CAPTURE(p.str());
      CHECK(sorted(p).rule == want.rule);
      const auto& b = p.addr().bytes();
      const uint32_t host = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
      CHECK(packed.v4(host, p.len()).rule == want.rule);
    }
  }
  CHECK(matched > total / 4);  // the random rules do match often enough to mean something
  CHECK(matched < total);
}

TEST_CASE("filter: simple AS-path patterns match as the regex does (random patterns and paths)") {
  std::mt19937 rng(11);
  const uint32_t pool[] = {1, 12, 123, 65001, 650012, 65010, 2};
  auto pick = [&] { return pool[rng() % 7]; };
  size_t simple = 0, hits = 0, total = 0;
  for (int round = 0; round < 400; ++round) {
    std::string body;
    const int toks = 1 + static_cast<int>(rng() % 3);
    if (rng() % 2) body += '_';
    for (int t = 0; t < toks; ++t) {
      if (t) body += (rng() % 2) ? '_' : ' ';
      std::string num = std::to_string(pick());
      if (rng() % 4 == 0) num = num.substr(0, 1 + rng() % num.size());  // a partial number
      body += num;
    }
    if (rng() % 2) body += '_';
    std::string text = std::string(rng() % 3 == 0 ? "^" : "") + body + (rng() % 3 == 0 ? "$" : "");
    auto re = make_as_path_regex(text);
    REQUIRE(re);
    simple += re->simple;
    AsPathRegex slow = *re;
    slow.simple = false;
    for (int j = 0; j < 30; ++j) {
      AsPath path;
      const int segs = static_cast<int>(rng() % 3);
      for (int sgi = 0; sgi < segs; ++sgi) {
        AsPathSegment sg;
        sg.type = rng() % 4 == 0 ? AsPathSegment::Type::Set : AsPathSegment::Type::Sequence;
        const int n = 1 + static_cast<int>(rng() % 3);
        for (int k = 0; k < n; ++k) sg.asns.push_back(pick());
        path.push_back(sg);
      }
      CAPTURE(text);
      CAPTURE(as_path_str(path));
      const bool want = as_path_regex_matches(slow, path);
      CHECK(as_path_regex_matches(*re, path) == want);
      hits += want;
      ++total;
    }
  }
  CHECK(simple > 300);
  CHECK(hits > total / 20);
  CHECK(hits < total);
}
