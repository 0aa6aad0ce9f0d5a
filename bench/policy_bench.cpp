// policy_bench.cpp — tabby-policy-bench: programming cost of the policy
// compiler + nft executor at cluster scale. Runs in the network
// namespace it is started in (bench/policy_bench.sh makes one). Prints a table
// and `BENCH key=value` lines; asserts nothing about time.
//
//   tabby-policy-bench [--policies N] [--endpoints N] [--local N] [--iters N] [--naive-iters N]
//       cold programming, p50/p99 of one pod add / delete / policy change as
//       deltas, the same as naive full regenerate+reload, ruleset size.
//   tabby-policy-bench --program N --client IF,IP --server IF,IP
//       programs the same cluster with N policies plus two real pods (client
//       -> server TCP 5001 allowed) and exits, leaving the ruleset in place for
//       the per-packet test.
//   Both take --tiers N (policies over N Calico tiers) and --no-rule-counters
//   (policy rules without their counter: what the counters cost).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "policy/policy.hpp"

using namespace tabby;
using namespace tabby::policy;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct Cfg {
  int policies = 1000, endpoints = 10000, local = 500, iters = 200, naive_iters = 10;
  int tiers = 1;  // > 1: the policies spread over this many Calico tiers (see make_policy)
  int program = -1;
  std::string client_if, client_ip, server_if, server_ip;
};

Selector S(const std::string& s) { return *Selector::parse(s); }

Endpoint make_ep(int k, int local) {
  Endpoint e;
  e.ns = "ns-" + std::to_string(k % 100);
  e.name = "p-" + std::to_string(k);
  e.labels = {{"app", "app-" + std::to_string(k % 200)}, {"tier", "tier-" + std::to_string(k % 5)},
              {"version", "v" + std::to_string(k % 3)}};
  e.ips.push_back(IpAddress::v4((198u << 24) | (19u << 16) | static_cast<uint32_t>(k + 1)));
  if (k < local) e.iface = "cali" + std::to_string(k);
  e.ports.push_back({"http", 6, 8080});
  return e;
}

EntityRule peer_pods(const std::string& sel, const std::string& ns) {
  EntityRule e;
  e.has_selector = true;
  e.selector = S(sel);
  e.scope.kind = NamespaceScope::Exact;
  e.scope.ns = ns;
  return e;
}

// With --tiers N (N > 1): policy i goes to tier "tier<i % N>" (named
// "tier<k>.<name>", Kubernetes ones as Calico NetworkPolicies, which tiers
// hold), every fourth one ends with a Pass rule, and the tiers (order 10, 20,
// ...) alternate defaultAction Deny and Pass: endpoints meet several tiers,
// tier chains and the pass-bit checks.
int g_tiers = 1;
// --no-rule-counters: policy rules without their counter (what the counters
// that `tabby policy` and `tabby policy trace` read cost; same run).
bool g_rule_counters = true;
CompilerOptions bench_options() {
  CompilerOptions o;
  o.rule_counters = g_rule_counters;
  return o;
}

Policy make_policy_flat(int i, int variant);
Policy make_policy(int i, int variant = 0) {
  Policy p = make_policy_flat(i, variant);
  if (g_tiers <= 1) return p;
  p.tier = "tier" + std::to_string(i % g_tiers);
  if (p.kind == PolicyKind::K8sNetworkPolicy) p.kind = PolicyKind::CalicoNetworkPolicy;
  p.name = p.tier + "." + p.name;
  if (i % 4 == 0) {
    Rule pass;
    pass.action = Action::Pass;
    pass.protocol = 17;
    p.ingress_rules.push_back(pass);
  }
  return p;
}

Policy make_policy_flat(int i, int variant) {
  Policy p;
  int kind = i % 10;  // 0-5 k8s, 6-8 Calico NP, 9 GNP
  if (i < 10) kind = 9;  // the first ten: GNPs selecting every endpoint
  if (kind <= 5) {
    p.kind = PolicyKind::K8sNetworkPolicy;
    p.ns = "ns-" + std::to_string(i % 100);
    p.name = "knp-" + std::to_string(i);
    p.order = 1000;
    p.scope = {NamespaceScope::Exact, p.ns, {}};
    p.selector = S("app == 'app-" + std::to_string(i % 200) + "'");
    p.ingress = true;
    for (int proto : {6, 17}) {
      Rule r;
      r.protocol = proto;
      r.src = peer_pods("app in {'app-" + std::to_string((i + 1) % 200) + "', 'app-" + std::to_string((i + 2) % 200) + "'}", p.ns);
      r.dst.ports.ranges = {{static_cast<uint16_t>(80 + variant), static_cast<uint16_t>(80 + variant)}, {443, 443}};
      if (proto == 6) r.dst.ports.names = {"http"};
      p.ingress_rules.push_back(r);
      Rule n = r;
      n.src = EntityRule{};
      n.src.has_selector = true;
      n.src.scope.kind = NamespaceScope::BySelector;
      n.src.scope.ns_selector = S("team == 't" + std::to_string(i % 10) + "'");
      p.ingress_rules.push_back(n);
    }
    if (i % 3 == 0) {
      p.egress = true;
      Rule r;
      r.protocol = 17;
      r.dst.nets = {*Prefix::parse("10." + std::to_string(i % 256) + ".0.0/16")};
      r.dst.not_nets = {*Prefix::parse("10." + std::to_string(i % 256) + ".1.0/24")};
      r.dst.ports.ranges = {{53, 53}};
      p.egress_rules.push_back(r);
    }
  } else if (kind <= 8) {
    p.kind = PolicyKind::CalicoNetworkPolicy;
    p.ns = "ns-" + std::to_string(i % 100);
    p.name = "cnp-" + std::to_string(i);
    p.order = i % 500;
    p.scope = {NamespaceScope::Exact, p.ns, {}};
    p.selector = S("tier == 'tier-" + std::to_string(i % 5) + "' && version != 'v1'");
    p.ingress = true;
    Rule d;
    d.action = Action::Deny;
    d.protocol = 6;
    d.src = peer_pods("app == 'app-" + std::to_string((i * 7) % 200) + "'", p.ns);
    d.dst.ports.ranges = {{1000, static_cast<uint16_t>(2000 + variant)}};
    p.ingress_rules.push_back(d);
    Rule a;
    a.src.nets = {*Prefix::parse("172.16." + std::to_string(i % 256) + ".0/24")};
    p.ingress_rules.push_back(a);
  } else {
    p.kind = PolicyKind::CalicoGlobalNetworkPolicy;
    p.name = "gnp-" + std::to_string(i);
    p.order = 100 + i;
    p.selector = i < 10 ? Selector::all() : S("has(tier) && app == 'app-" + std::to_string(i % 200) + "'");
    p.ingress = true;
    Rule d;
    d.action = Action::Deny;
    d.src.nets = {*Prefix::parse("203.0.113." + std::to_string(i % 64 * 4) + "/30")};
    d.dst.ports.ranges = {{static_cast<uint16_t>(9000 + variant), 9000}};
    if (variant) d.dst.ports.ranges = {{9000, static_cast<uint16_t>(9000 + variant)}};
    d.protocol = 6;
    p.ingress_rules.push_back(d);
  }
  return p;
}

void feed(PolicyCompiler& c, const Cfg& cfg, int npol) {
  for (int n = 0; n < 100; ++n)
    c.upsert_namespace({"ns-" + std::to_string(n), {{"team", "t" + std::to_string(n % 10)}}});
  for (int k = 0; k < cfg.endpoints; ++k) c.upsert_endpoint(make_ep(k, cfg.local));
  for (int k = 0; cfg.tiers > 1 && k < cfg.tiers; ++k)
    c.upsert_tier({"tier" + std::to_string(k), 10.0 * (k + 1), k % 2 ? Action::Pass : Action::Deny});
  for (int i = 0; i < npol; ++i) c.upsert_policy(make_policy(i));
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int program(const Cfg& cfg) {
  auto ex = NftExecutor::create();
  if (!ex) {
    std::fprintf(stderr, "%s\n", ex.error().message.c_str());
    return 1;
  }
  PolicyCompiler c(bench_options());
  feed(c, cfg, cfg.program > 0 ? cfg.program - 1 : 0);
  c.upsert_namespace({"bench", {}});
  for (auto [name, iface, ip] : {std::tuple{"rr-client", cfg.client_if, cfg.client_ip},
                                 std::tuple{"rr-server", cfg.server_if, cfg.server_ip}}) {
    Endpoint e;
    e.ns = "bench";
    e.name = name;
    e.labels = {{"app", name}};
    e.ips.push_back(*IpAddress::parse(ip));
    e.iface = iface;
    c.upsert_endpoint(e);
  }
  if (cfg.program > 0) {
    Policy p;
    p.kind = PolicyKind::K8sNetworkPolicy;
    p.ns = "bench";
    p.name = "rr";
    p.order = 1000;
    p.scope = {NamespaceScope::Exact, "bench", {}};
    p.selector = S("app == 'rr-server'");
    p.ingress = true;
    Rule r;
    r.protocol = 6;
    r.src = peer_pods("app == 'rr-client'", "bench");
    r.dst.ports.ranges = {{5001, 5001}};
    p.ingress_rules.push_back(r);
    c.upsert_policy(p);
    // With tiers, the pods' traffic crosses every tier: each tier's last policy
    // (after its other policies' rules) passes the benchmark's flow on to the
    // next tier, and the default tier's policy above allows it.
    for (int k = 0; cfg.tiers > 1 && k < cfg.tiers; ++k) {
      Policy pass;
      pass.kind = PolicyKind::CalicoGlobalNetworkPolicy;
      pass.tier = "tier" + std::to_string(k);
      pass.name = pass.tier + ".rr-pass";
      pass.order = 1e9;
      pass.selector = S("app in {'rr-client', 'rr-server'}");
      pass.scope = {NamespaceScope::Any, "", {}};
      pass.ingress = pass.egress = true;
      Rule rr;
      rr.action = Action::Pass;
      rr.protocol = 6;
      rr.dst.ports.ranges = {{5001, 5001}};
      pass.ingress_rules.push_back(rr);
      pass.egress_rules.push_back(rr);
      c.upsert_policy(pass);
    }
  }
  auto s = (*ex)->sync(c, true);
  if (!s) {
    std::fprintf(stderr, "%s\n", s.error().message.c_str());
    return 1;
  }
  for (const auto& e : c.endpoint_policies())
    if (e.endpoint == "bench/rr-server")
      std::printf("programmed %zu policies; rr-server ingress walks %zu policy chains\n", c.policy_count(),
                  e.ingress.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Cfg cfg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    auto split = [](const std::string& v, std::string& x, std::string& y) {
      auto c = v.find(',');
      x = v.substr(0, c);
      y = c == std::string::npos ? "" : v.substr(c + 1);
    };
    if (a == "--policies") cfg.policies = std::atoi(next().c_str());
    else if (a == "--endpoints") cfg.endpoints = std::atoi(next().c_str());
    else if (a == "--local") cfg.local = std::atoi(next().c_str());
    else if (a == "--iters") cfg.iters = std::atoi(next().c_str());
    else if (a == "--naive-iters") cfg.naive_iters = std::atoi(next().c_str());
    else if (a == "--program") cfg.program = std::atoi(next().c_str());
    else if (a == "--tiers") cfg.tiers = std::atoi(next().c_str());
    else if (a == "--no-rule-counters") g_rule_counters = false;
    else if (a == "--client") split(next(), cfg.client_if, cfg.client_ip);
    else if (a == "--server") split(next(), cfg.server_if, cfg.server_ip);
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  g_tiers = cfg.tiers;
  if (cfg.program >= 0) return program(cfg);

  auto exr = NftExecutor::create();
  if (!exr) {
    std::fprintf(stderr, "%s\n", exr.error().message.c_str());
    return 1;
  }
  NftExecutor& ex = **exr;
  PolicyCompiler c(bench_options());
  auto t0 = Clock::now();
  feed(c, cfg, cfg.policies);
  double feed_ms = ms_since(t0);
  auto t1 = Clock::now();
  std::string full = c.full_script();
  double script_ms = ms_since(t1);
  auto t2 = Clock::now();
  if (auto st = ex.apply(full); !st) {
    std::fprintf(stderr, "cold apply failed: %s\n", st.error().message.substr(0, 2000).c_str());
    return 1;
  }
  double apply_ms = ms_since(t2);
  RulesetShape shape = c.shape();
  size_t rules = 0, elems = 0;
  for (const auto& [n, r] : shape.chain_rules) rules += r;
  for (const auto& [n, e] : shape.set_elements) elems += e;

  int failures = 0;
  std::vector<double> nft_ms;  // the libnftables part of each delta
  int via_netlink = 0, via_nft = 0;
  auto apply_delta = [&]() {
    Delta delta = c.take_delta_ops();
    const std::string& d = delta.script;
    auto tn = Clock::now();
    // As NftExecutor::sync does it: structured deltas (pod churn, policy rule
    // changes) go straight to netlink as one batch; deltas that create or delete
    // sets, or use a rule form the encoder does not cover, through libnftables.
    Status st;
    bool netlink = false;
    if (delta.structured) {
      auto r = ex.apply_structured("tabby", delta);
      if (!r) st = fail(r.error());
      else if (*r) netlink = true;
      else st = ex.apply(d);
    } else {
      st = ex.apply(d);
    }
    (netlink ? via_netlink : via_nft)++;
    nft_ms.push_back(ms_since(tn));
    if (!st) {
      ++failures;
      std::fprintf(stderr, "delta failed: %s\n", st.error().message.substr(0, 500).c_str());
    }
    return d.size();
  };
  // One pod add / delete (a local pod whose labels match an existing pod's).
  std::vector<double> add_ms, del_ms, pol_ms;
  size_t add_bytes = 0, pol_bytes = 0;
  for (int i = 0; i < cfg.iters; ++i) {
    Endpoint e = make_ep((i * 7919) % cfg.endpoints, 0);
    e.name = "new-" + std::to_string(i);
    e.iface = "calinew" + std::to_string(i);
    e.ips = {IpAddress::v4((198u << 24) | (19u << 16) | (200u << 8) | static_cast<uint32_t>(i % 250 + 1))};
    auto t = Clock::now();
    c.upsert_endpoint(e);
    add_bytes += apply_delta();
    add_ms.push_back(ms_since(t));
    t = Clock::now();
    c.remove_endpoint(e.key());
    apply_delta();
    del_ms.push_back(ms_since(t));
  }
  std::vector<double> pod_nft_ms = nft_ms;
  nft_ms.clear();
  // One policy change (a port in one of its rules).
  for (int i = 0; i < cfg.iters; ++i) {
    int j = (i * 37) % cfg.policies;
    auto t = Clock::now();
    c.upsert_policy(make_policy(j, 1 + i % 2));
    pol_bytes += apply_delta();
    pol_ms.push_back(ms_since(t));
  }
  std::vector<double> pol_nft_ms = nft_ms;
  // The same policy changes through libnftables (the delta script), as before
  // the netlink encoder: libnftables dumps every chain and set of the ruleset
  // into its cache before each change.
  std::vector<double> pol_script_ms;
  for (int i = 0; i < cfg.iters; ++i) {
    int j = (i * 37) % cfg.policies;
    auto t = Clock::now();
    c.upsert_policy(make_policy(j, 1 + (i + 1) % 2));
    Delta delta = c.take_delta_ops();
    if (!ex.apply(delta.script)) ++failures;
    pol_script_ms.push_back(ms_since(t));
  }
  // Drift check (read back + compare) cost.
  auto td = Clock::now();
  auto drift = ex.drift(c);
  double drift_ms = ms_since(td);
  size_t drift_n = drift ? drift->size() : 999;
  // Naive: regenerate the whole ruleset and reload it for the same changes.
  std::vector<double> naive_add, naive_pol;
  for (int i = 0; i < cfg.naive_iters; ++i) {
    Endpoint e = make_ep((i * 7919) % cfg.endpoints, 0);
    e.name = "naive-" + std::to_string(i);
    e.iface = "calinaive" + std::to_string(i);
    e.ips = {IpAddress::v4((198u << 24) | (19u << 16) | (201u << 8) | static_cast<uint32_t>(i % 250 + 1))};
    auto t = Clock::now();
    c.upsert_endpoint(e);
    if (!ex.apply(c.full_script())) ++failures;
    naive_add.push_back(ms_since(t));
    t = Clock::now();
    c.upsert_policy(make_policy((i * 37) % cfg.policies, i % 2));
    if (!ex.apply(c.full_script())) ++failures;
    naive_pol.push_back(ms_since(t));
  }
  auto td2 = Clock::now();
  auto drift2 = ex.drift(c);
  (void)drift2;
  (void)td2;

  double cold = feed_ms + script_ms + apply_ms;
  std::printf("policy programming, %d policies in %d tier(s), %d endpoints (%d local), %d iterations (naive: %d)\n",
              cfg.policies, cfg.tiers, cfg.endpoints, cfg.local, cfg.iters, cfg.naive_iters);
  std::printf("  %-40s %10s %10s\n", "", "p50 ms", "p99 ms");
  std::printf("  %-40s %10.1f\n", "cold: compile (feed state)", feed_ms);
  std::printf("  %-40s %10.1f\n", "cold: render full script", script_ms);
  std::printf("  %-40s %10.1f\n", "cold: apply (libnftables, 1 transaction)", apply_ms);
  std::printf("  %-40s %10.1f\n", "cold: total", cold);
  std::printf("  %-40s %10.3f %10.3f\n", "pod add (delta)", pct(add_ms, 50), pct(add_ms, 99));
  std::printf("  %-40s %10.3f %10.3f\n", "pod delete (delta)", pct(del_ms, 50), pct(del_ms, 99));
  std::printf("  %-40s %10.3f %10.3f\n", "policy change (delta)", pct(pol_ms, 50), pct(pol_ms, 99));
  std::printf("  %-40s %10.3f %10.3f\n", "  of which kernel apply (pod add/delete)", pct(pod_nft_ms, 50), pct(pod_nft_ms, 99));
  std::printf("  %-40s %10.3f %10.3f\n", "  of which kernel apply (policy change)", pct(pol_nft_ms, 50), pct(pol_nft_ms, 99));
  std::printf("  %-40s %10.3f %10.3f\n", "policy change (delta via libnftables)", pct(pol_script_ms, 50), pct(pol_script_ms, 99));
  std::printf("  %-40s %10.1f %10.1f\n", "pod add (naive full reload)", pct(naive_add, 50), pct(naive_add, 99));
  std::printf("  %-40s %10.1f %10.1f\n", "policy change (naive full reload)", pct(naive_pol, 50), pct(naive_pol, 99));
  std::printf("  %-40s %10.1f\n", "drift check (list + compare)", drift_ms);
  std::printf("  ruleset: %zu chains, %zu rules, %zu sets+maps, %zu elements, full script %zu bytes\n",
              shape.chain_rules.size(), rules, shape.set_elements.size(), elems, full.size());
  std::printf("  delta sizes: pod add %zu bytes avg, policy change %zu bytes avg\n",
              cfg.iters ? add_bytes / static_cast<size_t>(cfg.iters) : 0,
              cfg.iters ? pol_bytes / static_cast<size_t>(cfg.iters) : 0);
  std::printf("  ratios: pod add naive/delta p50 %.0fx, policy change naive/delta p50 %.0fx\n",
              pct(naive_add, 50) / std::max(pct(add_ms, 50), 1e-6), pct(naive_pol, 50) / std::max(pct(pol_ms, 50), 1e-6));
  std::printf("  deltas applied: %d via netlink batches, %d via libnftables\n", via_netlink, via_nft);
  std::printf("  failed applies: %d; drift after the deltas: %zu differences\n", failures, drift_n);
  std::printf("BENCH tiers=%d policy_cold_ms=%.1f policy_cold_apply_ms=%.1f policy_pod_add_p50_ms=%.3f policy_pod_add_p99_ms=%.3f "
              "policy_pod_del_p50_ms=%.3f policy_pod_del_p99_ms=%.3f policy_change_p50_ms=%.3f policy_change_p99_ms=%.3f "
              "policy_change_nft_p50_ms=%.3f policy_change_nft_p99_ms=%.3f "
              "naive_pod_add_p50_ms=%.1f naive_policy_change_p50_ms=%.1f ruleset_chains=%zu ruleset_rules=%zu "
              "ruleset_elements=%zu full_script_bytes=%zu failed_applies=%d drift=%zu\n",
              cfg.tiers, cold, apply_ms, pct(add_ms, 50), pct(add_ms, 99), pct(del_ms, 50), pct(del_ms, 99), pct(pol_ms, 50),
              pct(pol_ms, 99), pct(pol_script_ms, 50), pct(pol_script_ms, 99), pct(naive_add, 50), pct(naive_pol, 50),
              shape.chain_rules.size(), rules, elems,
              full.size(), failures, drift_n);
  return failures ? 1 : 0;
}
