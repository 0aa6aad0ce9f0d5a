// policy_corpus.hpp — a fixed, seeded corpus of policies, endpoints and
// namespaces covering every rule form the compiler writes (protocols and
// negated protocols, ipVersion, nets / notNets of 1-7 prefixes, selectors and
// notSelectors in every namespace scope, ports / notPorts with ranges and
// named ports, ICMP and notICMP with and without code, every action), and the
// transcript of compiling it (for one seed): a full script, then the delta scripts of a run
// of changes. Uses only the policy module's public API as it was before rules
// were typed, so the same header compiled against that older compiler made
// test/unit/policy/data/policy_corpus_7.golden (see nft_ir_test.cpp).
// Regenerated when rules gained their IPv6 form (added s6-/n6- sets and ip6
// rules) and when tiers came (Pass: mark bit + return, tier chains for the
// endpoints of policies with a Pass rule; Log: a rate limit before the log),
// and when selector rules lost their IPv6 twins while no endpoint has an IPv6
// address (the corpus has none: its ip6 rules are the CIDR and notSelector ones).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "policy/policy.hpp"

namespace tabby::policy::corpus {

inline std::string transcript(uint32_t seed) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const char* sels[] = {"all()", "app == 'web'", "app in {'web', 'db'}", "has(tier)", "tier != '1'", "!has(app)"};
  const char* port_names[] = {"http", "dns", "metrics"};
  const uint8_t protos[] = {6, 17, 1, 132, 47};
  auto selector = [&](const char* s) { return *Selector::parse(s); };
  auto scope = [&]() {
    NamespaceScope s;
    int k = pick(3);
    if (k == 1) {
      s.kind = NamespaceScope::Exact;
      s.ns = pick(2) ? "a" : "b";
    } else if (k == 2) {
      s.kind = NamespaceScope::BySelector;
      s.ns_selector = selector(pick(2) ? "team == 'red'" : "has(team)");
    }
    return s;
  };
  auto prefix = [&]() {
    static const char* bases[] = {"10.0.0.0",    "10.1.0.0",   "192.168.3.0", "198.51.100.7", "203.0.113.0", "172.16.0.0",
                                  "192.0.2.128", "100.64.9.1", "198.18.4.0",  "169.254.7.7",  "11.12.13.14", "44.0.0.0"};
    static const uint8_t lens[] = {8, 16, 23, 24, 29, 32};
    auto a = *IpAddress::parse(bases[pick(12)]);
    if (pick(10) == 0) a = *IpAddress::parse("2001:db8::");
    return Prefix(a, pick(40) == 0 ? 0 : lens[pick(6)]);
  };
  auto ports = [&](bool with_names) {
    PortMatch m;
    int n = pick(7);
    for (int i = 0; i < n; ++i) {
      uint16_t first = static_cast<uint16_t>(pick(3) ? 20 + pick(60) : 1000 + pick(3000));
      uint16_t last = pick(3) ? first : static_cast<uint16_t>(first + pick(100));
      if (pick(25) == 0) first = 0, last = 65535;
      m.ranges.push_back({first, last});
    }
    if (with_names && pick(3) == 0) {
      int k = 1 + pick(2);
      for (int i = 0; i < k; ++i) m.names.push_back(port_names[pick(3)]);
    }
    return m;
  };
  auto entity = [&](bool can_ports) {
    EntityRule e;
    if (pick(3) == 0)
      for (int i = 0, n = 1 + pick(7); i < n; ++i) e.nets.push_back(prefix());
    if (pick(4) == 0)
      for (int i = 0, n = 1 + pick(6); i < n; ++i) e.not_nets.push_back(prefix());
    if (pick(2)) {
      e.has_selector = true;
      e.selector = selector(sels[pick(6)]);
      e.scope = scope();
    }
    if (pick(5) == 0) e.not_selector = selector(sels[pick(6)]);
    if (can_ports && pick(2)) e.ports = ports(true);
    if (can_ports && pick(4) == 0) e.not_ports = ports(true);
    return e;
  };
  auto rule = [&]() {
    Rule r;
    r.action = static_cast<Action>(pick(4));
    int p = pick(6);
    if (p < 5) r.protocol = protos[p];
    if (pick(6) == 0) r.not_protocol = protos[pick(5)];
    if (pick(8) == 0) r.ip_version = pick(3) ? 4 : 6;
    bool l4 = r.protocol == 6 || r.protocol == 17 || r.protocol == 132;
    if (r.protocol == 1) {
      if (pick(2)) r.icmp = IcmpMatch{pick(20), pick(2) ? pick(5) : -1};
      if (pick(3) == 0) r.not_icmp = IcmpMatch{pick(20), pick(2) ? pick(5) : -1};
    }
    r.src = entity(l4);
    r.dst = entity(l4);
    return r;
  };
  auto policy = [&](int i) {
    Policy p;
    int kind = pick(3);
    p.kind = static_cast<PolicyKind>(kind);
    p.name = "p" + std::to_string(i);
    if (p.kind != PolicyKind::CalicoGlobalNetworkPolicy) {
      p.ns = pick(2) ? "a" : "b";
      p.scope.kind = NamespaceScope::Exact;
      p.scope.ns = p.ns;
    }
    if (pick(4)) p.order = pick(5) * 10;
    p.selector = selector(sels[pick(6)]);
    p.ingress = pick(4) != 0;
    p.egress = pick(3) == 0;
    for (int k = 0, n = pick(4); k < n && p.ingress; ++k) p.ingress_rules.push_back(rule());
    for (int k = 0, n = pick(3); k < n && p.egress; ++k) p.egress_rules.push_back(rule());
    return p;
  };
  auto endpoint = [&](int i) {
    Endpoint e;
    e.ns = pick(2) ? "a" : "b";
    e.name = "pod" + std::to_string(i);
    if (pick(4)) e.labels["app"] = pick(2) ? "web" : "db";
    if (pick(2)) e.labels["tier"] = std::to_string(1 + pick(2));
    e.ips.push_back(IpAddress::v4(0xC6130000u + static_cast<uint32_t>(i * 3 + pick(3))));
    if (pick(3) == 0) e.iface = "cali" + std::to_string(i);
    if (pick(2)) e.ports.push_back({port_names[pick(3)], protos[pick(2)], static_cast<uint16_t>(8000 + pick(100))});
    return e;
  };

  std::string out;
  PolicyCompiler c;
  c.upsert_namespace({"a", {{"team", "red"}}});
  c.upsert_namespace({"b", {}});
  for (int i = 0; i < 12; ++i) c.upsert_endpoint(endpoint(i));
  for (int i = 0; i < 24; ++i) c.upsert_policy(policy(i));
  out += "### full\n" + c.full_script();
  for (int step = 0; step < 30; ++step) {
    int op = pick(5);
    if (op == 0) c.upsert_policy(policy(pick(34)));
    else if (op == 1) c.remove_policy("gnp.p" + std::to_string(pick(30)));
    else if (op == 2) c.upsert_endpoint(endpoint(pick(16)));
    else if (op == 3) c.remove_endpoint((pick(2) ? "a/pod" : "b/pod") + std::to_string(pick(12)));
    else c.upsert_namespace({"b", pick(2) ? Labels{{"team", "red"}} : Labels{}});
    out += "### delta " + std::to_string(step) + "\n" + c.take_delta();
  }
  out += "### full again\n" + c.full_script();
  return out;
}

}  // namespace tabby::policy::corpus
