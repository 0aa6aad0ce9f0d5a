// policy_delta_check.cpp — tabby-policy-delta-check: checks that deltas applied
// by NftExecutor::sync (raw netlink batches with rules encoded from the
// compiler's text, or libnftables for what the encoder does not cover) leave
// the kernel with exactly the table a full script load gives.
//
// Runs in the network namespace it is started in (test/integration/
// policy_delta_equiv makes one). Builds a cluster from manifests covering the
// rule forms the compiler emits, applies a sequence of changes (pods added,
// relabelled, removed; policies changed, added, deleted; namespaces
// relabelled; network sets and a Service's endpoints changed) one sync() each, then compares `nft -j list table inet tabby`
// with the listing after a full reload. Prints the differences; exit 0 = equal
// and both delta paths were used, 1 = not.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/policy.hpp"

using namespace tabby;
using namespace tabby::policy;

namespace {

// The listing as sorted lines: handles dropped (they differ by history), set
// elements sorted, rules keyed by chain and position (their order matters),
// other objects by content (their listing order follows creation order).
std::vector<std::string> normalise(const std::string& text) {
  auto j = nlohmann::json::parse(text);
  std::vector<std::string> out;
  std::map<std::string, int> pos;
  for (auto& item : j.at("nftables")) {
    if (item.contains("metainfo")) continue;
    for (auto& [kind, obj] : item.items()) {
      obj.erase("handle");
      if (obj.contains("elem") && obj["elem"].is_array()) {
        std::vector<std::string> e;
        for (const auto& x : obj["elem"]) e.push_back(x.dump());
        std::sort(e.begin(), e.end());
        obj["elem"] = e;
      }
    }
    if (item.contains("rule")) {
      std::string chain = item["rule"].at("chain").get<std::string>();
      char n[16];
      std::snprintf(n, sizeof n, "%05d", pos[chain]++);
      out.push_back("rule " + chain + " #" + n + " " + item.dump());
    } else {
      out.push_back(item.dump());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string ns_doc(const std::string& name, const std::string& team) {
  return "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + name + ", labels: {team: " + team + "}}\n";
}

// Every pod is dual-stack: 198.19.C.D also has 2001:db8:19::C:D.
std::string v6_twin(const std::string& ip) {
  std::string cd = ip.substr(ip.find('.', ip.find('.') + 1) + 1);
  cd[cd.find('.')] = ':';
  return "2001:db8:19::" + cd;
}

std::string tier_doc(const std::string& name, double order, const std::string& action) {
  return "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: " + name + "}\nspec: {order: " +
         std::to_string(order) + ", defaultAction: " + action + "}\n";
}

std::string pod_doc(const std::string& ns, const std::string& name, const std::string& app, const std::string& ip,
                     const std::string& iface) {
  std::string d = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: " + name +
                  ", namespace: " + ns + ", labels: {app: " + app + "}}\nspec:\n  ipNetworks: [" + ip + "/32, \"" +
                  v6_twin(ip) + "/128\"]\n";
  if (!iface.empty()) d += "  interfaceName: " + iface + "\n";
  d += "  ports:\n  - {name: http, protocol: TCP, port: 8080}\n  - {name: dns, protocol: UDP, port: 5353}\n";
  return d;
}

// One policy per rule shape the compiler knows; `v` varies ports/nets/order.
std::vector<std::string> policies(int v) {
  std::string p = std::to_string(80 + v), q = std::to_string(9000 + v);
  std::vector<std::string> d;
  d.push_back("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: a}\nspec:\n"
              "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n"
              "    - podSelector: {matchLabels: {app: " + std::string(v % 3 == 2 ? "web" : "db") + "}}\n    - namespaceSelector: {matchLabels: {team: t1}}\n"
              "    ports:\n    - port: " + p + "\n    - port: 443\n    - port: http\n    - {port: 5000, endPort: 50" +
              std::to_string(10 + v) + ", protocol: UDP}\n"
              "  - from:\n    - ipBlock: {cidr: 10." + std::to_string(v) + ".0.0/16, except: [10." + std::to_string(v) +
              ".1.0/24, 10." + std::to_string(v) + ".2.128/25]}\n"
              "  - from:\n    - ipBlock: {cidr: \"2001:db8:" + std::to_string(v) + "::/48\", except: [\"2001:db8:" +
              std::to_string(v) + ":1::/64\"]}\n"
              "  egress:\n  - to:\n    - ipBlock: {cidr: 172.16.0.0/12}\n    - ipBlock: {cidr: \"fd00::/8\"}\n    ports:\n"
              "    - {port: 53, protocol: UDP}\n    - {port: dns, protocol: UDP}\n");
  // Six ports: stays an anonymous set (netlink path creates it).
  d.push_back("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: many, namespace: b}\nspec:\n"
              "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 21\n    - port: 22\n    - port: 23\n"
              "    - port: 25\n    - port: " + p + "\n    - port: 110\n");
  d.push_back("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: cal, namespace: a}\nspec:\n"
              "  order: " + std::to_string(100 + v) + "\n  selector: app == 'web' || app == 'db'\n  types: [Ingress, Egress]\n"
              "  ingress:\n  - action: Deny\n    protocol: TCP\n    source: {notSelector: \"app == 'db'\", notNets: [192.168.0.0/16, 10.9.0.0/20]}\n"
              "    destination: {notPorts: [22, '" + q + ":9100']}\n"
              "  - action: Log\n    source: {nets: [203.0.113.0/29, \"2001:db8:ffff::/47\"]}\n"
              "  - action: Deny\n    ipVersion: 6\n    source: {nets: [\"2001:db8:19::" + std::to_string(v) + "/128\"]}\n"
              "  - action: Pass\n    notProtocol: UDP\n    source: {namespaceSelector: team == 't2'}\n"
              "  - action: Allow\n    protocol: UDP\n    destination: {ports: [dns, 53, 54, 55, 56, 57]}\n"
              "  egress:\n  - action: Allow\n    protocol: TCP\n    destination: {nets: [198.51.100.0/24], ports: ['1000:2000', 3000]}\n"
              "  - action: Deny\n    protocol: UDP\n    source: {ports: [" + std::to_string(1234 + v) + "]}\n"
              "    destination: {nets: [198.51.100.128/25, 203.0.113.0/24], notPorts: [" + q + "]}\n");
  // ICMP matches are left to libnftables by the encoder.
  d.push_back("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: icmp}\nspec:\n"
              "  order: " + std::to_string(10 + v) + "\n  selector: has(app)\n  ingress:\n"
              "  - action: Allow\n    protocol: ICMP\n    icmp: {type: 8, code: " + std::to_string(v % 2) + "}\n"
              "  - action: Deny\n    protocol: ICMP\n    notICMP: {type: 3}\n"
              "  - action: Allow\n    protocol: ICMPv6\n    icmp: {type: 128, code: " + std::to_string(v % 2) + "}\n");
  // Network sets: an allow from the CIDRs of role=office sets, a deny of everything else.
  d.push_back("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: office}\nspec:\n"
              "  order: " + std::to_string(20 + v) + "\n  selector: app == 'db'\n  types: [Ingress]\n  ingress:\n"
              "  - action: Allow\n    source: {selector: role == 'office'}\n"
              "  - action: Deny\n    source: {notSelector: role == 'office'}\n");
  // Services: egress to x/db's endpoints (address . protocol . port sets), a deny from them.
  d.push_back("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: svc}\nspec:\n"
              "  order: " + std::to_string(30 + v) + "\n  selector: app == 'web'\n  types: [Ingress, Egress]\n"
              "  egress:\n  - action: Allow\n    destination: {services: {name: db, namespace: x}}\n"
              "  ingress:\n  - action: Deny\n    source: {services: {name: db, namespace: x}}\n  - action: Allow\n");
  // A security tier: Pass (mark bit + return), Deny, Log (rate-limited).
  d.push_back("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.gate}\nspec:\n"
              "  tier: sec\n  order: " + std::to_string(v) + "\n  selector: app == 'web'\n  types: [Ingress, Egress]\n"
              "  ingress:\n  - action: Log\n    source: {selector: app == 'db'}\n"
              "  - action: Deny\n    protocol: TCP\n    destination: {ports: [" + std::to_string(6000 + v) + "]}\n"
              "  - action: Pass\n  egress:\n  - action: Pass\n    source: {selector: app == 'web'}\n");
  return d;
}

Status feed(PolicyCompiler& c, const std::string& yaml) {
  auto objs = parse_manifests(yaml, "delta-check");
  if (!objs) return fail(objs.error());
  for (const auto& o : *objs) {
    if (o.kind == Object::PolicyObj) c.upsert_policy(o.policy);
    else if (o.kind == Object::NamespaceObj) c.upsert_namespace(o.ns);
    else if (o.kind == Object::TierObj) c.upsert_tier(o.tier);
    else if (o.kind == Object::NetworkSetObj) c.upsert_network_set(o.network_set);
    else c.upsert_endpoint(o.endpoint);
  }
  return {};
}

}  // namespace

int main() {
  auto exr = NftExecutor::create();
  if (!exr) {
    std::printf("%s\n", exr.error().message.c_str());
    return 1;
  }
  NftExecutor& ex = **exr;
  PolicyCompiler c;
  std::string yaml = ns_doc("a", "t1") + "---\n" + ns_doc("b", "t2") + "---\n" + tier_doc("sec", 100, "Deny") + "---\n";
  for (int i = 0; i < 12; ++i)
    yaml += pod_doc(i % 2 ? "a" : "b", "p" + std::to_string(i), i % 3 ? "web" : "db",
                    "198.19.0." + std::to_string(i + 1), i < 8 ? "cali" + std::to_string(i) : "") + "---\n";
  for (const auto& p : policies(0)) yaml += p + "---\n";
  if (auto st = feed(c, yaml); !st) {
    std::printf("manifests: %s\n", st.error().message.c_str());
    return 1;
  }
  if (auto r = ex.sync(c); !r || !r->full) {
    std::printf("cold sync failed: %s\n", r ? "not full" : r.error().message.c_str());
    return 1;
  }
  int netlink = 0, fallback = 0, script = 0, full = 0, steps = 0, failed = 0;
  auto step = [&](const std::string& what, const std::string& docs) {
    if (auto st = feed(c, docs); !st) {
      std::printf("step %s: %s\n", what.c_str(), st.error().message.c_str());
      ++failed;
      return;
    }
    auto r = ex.sync(c);
    ++steps;
    if (!r) {
      std::printf("step %s: sync failed: %s\n", what.c_str(), r.error().message.c_str());
      ++failed;
      return;
    }
    if (r->full) {
      // A rejected delta: the fallback repaired it, but the delta itself was wrong.
      std::printf("step %s: delta rejected by the kernel, full resync needed\n", what.c_str());
      ++full;
      return;
    }
    if (r->netlink) ++netlink;
    else if (r->script_fallback) ++fallback;
    else if (r->script_bytes) ++script;
  };
  for (int v = 1; v <= 6; ++v) {
    auto ps = policies(v);
    for (size_t k = 0; k < ps.size(); ++k) step("policy " + std::to_string(k) + " v" + std::to_string(v), ps[k]);
    step("pod add v" + std::to_string(v), pod_doc("a", "n" + std::to_string(v), "web", "198.19.1." + std::to_string(v),
                                                  "calin" + std::to_string(v)));
    step("pod relabel v" + std::to_string(v), pod_doc("b", "p0", v % 2 ? "web" : "db", "198.19.0.1", "cali0"));
    step("namespace relabel v" + std::to_string(v), ns_doc("b", v % 2 ? "t1" : "t2"));
    // A GlobalNetworkSet a policy's selectors match: its CIDRs change (interval
    // element changes), it is relabelled away (the c- set goes, the chain is
    // rewritten) and back.
    std::string nets = v % 3 == 0 ? "[]" : v % 2 ? "[203.0.113.0/25, 203.0.113.128/25, \"2001:db8:5::/48\"]"
                                                  : "[203.0.113.0/24, 198.51.100.7]";
    step("network set v" + std::to_string(v), "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: "
                                               "{name: office, labels: {role: " + std::string(v == 4 ? "away" : "office") +
                                               "}}\nspec: {nets: " + nets + "}\n");
    // The service's endpoints change (EndpointSlices): element changes of its
    // v-/vs- sets, both families; none at all on v == 5.
    {
      ServiceEndpoints sv;
      sv.ns = "x";
      sv.name = "db";
      if (v != 5)
        for (int i = 0; i < v; ++i) {
          IpAddress a = *IpAddress::parse("198.19.2." + std::to_string(i + v));
          IpAddress a6 = *IpAddress::parse("fd00:2::" + std::to_string(i + v));
          for (const auto& x : {a, a6}) {
            sv.addrs.push_back(x);
            sv.targets.push_back({x, 6, static_cast<uint16_t>(5432 + v % 2)});
            sv.targets.push_back({x, 17, 53});
          }
        }
      std::sort(sv.addrs.begin(), sv.addrs.end());
      std::sort(sv.targets.begin(), sv.targets.end());
      c.upsert_service(sv);
      step("service endpoints v" + std::to_string(v), "");
    }
    // A tier order or action change rewrites endpoint chains (one delta).
    step("tier change v" + std::to_string(v), tier_doc("sec", v % 2 ? 2000000 : 100, v % 3 ? "Pass" : "Deny"));
    c.remove_endpoint("a/n" + std::to_string(v - 1));
    step("pod remove v" + std::to_string(v), "");
  }
  c.remove_policy("gnp.icmp");
  step("policy delete", "");
  c.remove_policy("knp.b.many");
  step("policy delete 2", "");
  step("policy re-add", policies(7)[1]);

  auto d = ex.drift(c);
  auto delta_listing = ex.list_json("tabby");
  if (!d || !delta_listing) {
    std::printf("listing failed\n");
    return 1;
  }
  if (auto r = ex.sync(c, true); !r) {
    std::printf("full reload failed: %s\n", r.error().message.c_str());
    return 1;
  }
  auto full_listing = ex.list_json("tabby");
  if (!full_listing) return 1;
  auto a = normalise(*delta_listing), b = normalise(*full_listing);
  std::vector<std::string> only_delta, only_full;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(only_delta));
  std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(only_full));
  for (const auto& s : only_delta) std::printf("only after deltas: %s\n", s.substr(0, 400).c_str());
  for (const auto& s : only_full) std::printf("only after full load: %s\n", s.substr(0, 400).c_str());
  for (const auto& s : *d) std::printf("drift: %s\n", s.c_str());
  std::printf("%d steps: %d netlink batches, %d libnftables (rule form not encoded), %d libnftables (sets "
              "created/deleted), %d rejected, %d failed; %zu listing lines, %zu/%zu differ\n",
              steps, netlink, fallback, script, full, failed, a.size(), only_delta.size(), only_full.size());
  bool ok = failed == 0 && full == 0 && only_delta.empty() && only_full.empty() && d->empty() && netlink > 0 &&
            fallback > 0 && script > 0 && a.size() > 50;
  std::printf("%s\n", ok ? "equal" : "NOT equal (or a delta path unused)");
  return ok ? 0 : 1;
}
