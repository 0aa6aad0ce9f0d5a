// network_set_test.cpp — Calico NetworkSet / GlobalNetworkSet: manifests (fields,
// errors naming the field), which rule selectors see which set (Calico's scope
// rules, network_set.cpp), and the compiler's CIDR interval sets c-<h>/c6-<h>:
// present only while a selector matches CIDRs of that family, their elements,
// the rules that use them, and the deltas when a set changes (element changes;
// a rewrite of the policies whose selectors start or stop matching CIDRs).
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>

#include "policy/policy.hpp"
#include "test/unit/policy/manifest_objects.hpp"
#include "test/unit/policy/script_sets.hpp"

using namespace tabby;
using namespace tabby::policy;
using tabby::policy_test::obj;
using tabby::policy_test::pol;

namespace {

NetworkSet gns(const std::string& name, const std::string& labels, const std::string& nets) {
  auto o = obj("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: " + name +
               ", labels: " + labels + "}\nspec: {nets: " + nets + "}\n");
  REQUIRE(o.kind == Object::NetworkSetObj);
  return o.network_set;
}

NetworkSet nset(const std::string& ns, const std::string& name, const std::string& labels, const std::string& nets) {
  auto o = obj("apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: " + name + ", namespace: " + ns +
               ", labels: " + labels + "}\nspec: {nets: " + nets + "}\n");
  REQUIRE(o.kind == Object::NetworkSetObj);
  return o.network_set;
}

// A GlobalNetworkPolicy on app == 'web' with one ingress rule whose source is `source`.
Policy gnp_from(const std::string& name, const std::string& action, const std::string& source) {
  return pol("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " + name +
             "}\nspec:\n  selector: app == 'web'\n  types: [Ingress]\n  ingress:\n  - action: " + action +
             "\n    source: " + source + "\n");
}

// A namespaced Calico NetworkPolicy in x with one ingress rule.
Policy np_from(const std::string& name, const std::string& source) {
  return pol("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: " + name +
             ", namespace: x}\nspec:\n  selector: all()\n  types: [Ingress]\n  ingress:\n  - action: Allow\n"
             "    source: " +
             source + "\n");
}

Endpoint web(const std::string& ns = "x") {
  Endpoint e;
  e.ns = ns;
  e.name = "web";
  e.labels = {{"app", "web"}};
  e.ips = {*IpAddress::parse("198.19.1.1")};
  e.iface = "caliweb";
  return e;
}

// Set name -> elements of every set in the full script whose name starts with `prefix`.
std::map<std::string, std::set<std::string>> sets_with(PolicyCompiler& c, const std::string& prefix) {
  std::map<std::string, std::set<std::string>> out;
  for (auto& [name, elems] : policy_test::script_sets(c.full_script()))
    if (name.rfind(prefix, 0) == 0) out[name] = elems;
  return out;
}

std::string joined_rules(PolicyCompiler& c, const std::string& policy_id) {
  auto rules = c.chain_rules(c.chain_for(policy_id, Direction::Ingress));
  REQUIRE(rules);
  std::string s;
  for (const auto& r : *rules) s += r + "\n";
  return s;
}

}  // namespace

TEST_CASE("network set manifests: fields, both kinds, errors name the field") {
  auto g = gns("office", "{role: office}", "[203.0.113.0/24, \"2001:db8:5::/48\"]");
  CHECK(g.global());
  CHECK(g.key() == "office");
  CHECK(g.labels.at("role") == "office");
  REQUIRE(g.nets.size() == 2);
  CHECK(g.nets[1].str() == "2001:db8:5::/48");
  auto n = nset("x", "partner", "{role: partner}", "[198.51.100.7]");  // a bare address is a host prefix
  CHECK(n.key() == "x/partner");
  CHECK(n.nets.at(0).str() == "198.51.100.7/32");

  auto bad = parse_object("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: g}\n"
                          "spec: {nets: [10.0.0.0/8, 10.0.0.300/32]}\n");
  REQUIRE(!bad.ok());
  CHECK_MESSAGE(bad.error().message.find("GlobalNetworkSet g: spec.nets[1]: invalid CIDR") != std::string::npos,
                bad.error().message);
  auto typo = parse_object("apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: n, namespace: x}\n"
                           "spec: {net: [10.0.0.0/8]}\n");
  REQUIRE(!typo.ok());
  CHECK_MESSAGE(typo.error().message.find("NetworkSet x/n: spec.net: unknown field (did you mean \"nets\"?") !=
                    std::string::npos,
                typo.error().message);
  auto shape = parse_object("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: g}\n"
                            "spec: {nets: 10.0.0.0/8}\n");
  REQUIRE(!shape.ok());
  CHECK(shape.error().message.find("spec.nets: expected a list") != std::string::npos);
}

TEST_CASE("which rule selectors see which network set (Calico's scopes)") {
  const auto office = *Selector::parse("role == 'office'");
  NetworkSet global = gns("g", "{role: office}", "[203.0.113.0/24]");
  NetworkSet in_x = nset("x", "n", "{role: office}", "[198.51.100.0/24]");
  NetworkSet in_y = nset("y", "n", "{role: office}", "[192.0.2.0/24]");
  const Labels x_labels{{"env", "prod"}, {"projectcalico.org/name", "x"}};
  const Labels y_labels{{"env", "dev"}, {"projectcalico.org/name", "y"}};
  NamespaceScope any;  // a GlobalNetworkPolicy rule without namespaceSelector
  NamespaceScope exact_x{NamespaceScope::Exact, "x", {}};  // a NetworkPolicy in x
  NamespaceScope prod{NamespaceScope::BySelector, "", *Selector::parse("env == 'prod'")};
  NamespaceScope globals{NamespaceScope::BySelector, "", *Selector::parse("global()")};
  const auto gnp = PolicyKind::CalicoGlobalNetworkPolicy, np = PolicyKind::CalicoNetworkPolicy,
             knp = PolicyKind::K8sNetworkPolicy;
  // GNP without namespaceSelector: every network set, global or not.
  CHECK(network_set_matches(global, gnp, any, office, {}));
  CHECK(network_set_matches(in_x, gnp, any, office, x_labels));
  CHECK(network_set_matches(in_y, gnp, any, office, y_labels));
  // A namespaced policy: its own namespace's sets only, never global ones.
  CHECK(network_set_matches(in_x, np, exact_x, office, x_labels));
  CHECK(!network_set_matches(in_y, np, exact_x, office, y_labels));
  CHECK(!network_set_matches(global, np, exact_x, office, {}));
  // namespaceSelector: the selected namespaces' sets; global() the global ones.
  CHECK(network_set_matches(in_x, gnp, prod, office, x_labels));
  CHECK(!network_set_matches(in_y, gnp, prod, office, y_labels));
  CHECK(!network_set_matches(global, gnp, prod, office, {}));
  CHECK(network_set_matches(global, np, globals, office, {}));
  CHECK(!network_set_matches(in_x, np, globals, office, x_labels));
  // The label selector applies (namespaced sets carry projectcalico.org/namespace).
  CHECK(!network_set_matches(global, gnp, any, *Selector::parse("role == 'partner'"), {}));
  CHECK(network_set_matches(in_x, gnp, any, *Selector::parse("projectcalico.org/namespace == 'x'"), x_labels));
  // Kubernetes NetworkPolicy peers are pods only.
  CHECK(!network_set_matches(in_x, knp, exact_x, office, x_labels));
}

TEST_CASE("a selector matching network sets matches their CIDRs through an interval set, both families") {
  PolicyCompiler c;
  c.upsert_endpoint(web());
  c.upsert_network_set(gns("office", "{role: office}", "[203.0.113.0/25, 203.0.113.128/25, \"2001:db8:5::/48\"]"));
  c.upsert_policy(gnp_from("from-office", "Allow", "{selector: role == 'office'}"));
  auto cidr = sets_with(c, "c");
  REQUIRE(cidr.size() == 2);
  std::string v4, v6;
  for (auto& [name, elems] : cidr) (name.rfind("c6-", 0) == 0 ? v6 : v4) = name;
  REQUIRE(!v4.empty());
  REQUIRE(!v6.empty());
  CHECK(cidr[v4] == std::set<std::string>{"203.0.113.0/24"});  // the two halves merged, as nft lists them
  CHECK(cidr[v6] == std::set<std::string>{"2001:db8:5::/48"});
  std::string full = c.full_script();
  CHECK(full.find("set " + v4 + " { type ipv4_addr; flags interval;") != std::string::npos);
  CHECK(full.find("set " + v6 + " { type ipv6_addr; flags interval;") != std::string::npos);
  std::string rules = joined_rules(c, "gnp.from-office");
  CHECK_MESSAGE(rules.find("ip saddr @" + v4 + " ") != std::string::npos, rules);
  CHECK_MESSAGE(rules.find("ip6 saddr @" + v6 + " ") != std::string::npos, rules);
  CHECK_MESSAGE(rules.find("ip saddr @s-") != std::string::npos, rules);  // the endpoints still match too
  // The drift check expects the interval count.
  CHECK(c.shape().set_elements.at(v4) == 1);
}

TEST_CASE("network set changes: element deltas; selectors starting or stopping to match rewrite their policies") {
  PolicyCompiler c;
  c.upsert_endpoint(web());
  c.upsert_policy(gnp_from("from-office", "Allow", "{selector: role == 'office'}"));
  (void)c.full_script();
  CHECK(joined_rules(c, "gnp.from-office").find("@c-") == std::string::npos);  // no set matches yet

  // The first set: the policy's chain now also matches its CIDRs (one transaction).
  c.upsert_network_set(gns("office", "{role: office}", "[203.0.113.0/24]"));
  std::string d1 = c.take_delta();
  CHECK_MESSAGE(d1.find("add set inet tabby c-") != std::string::npos, d1);
  CHECK_MESSAGE(d1.find("203.0.113.0/24") != std::string::npos, d1);
  CHECK_MESSAGE(d1.find("flush chain inet tabby pi-gnp.from-office") != std::string::npos, d1);
  CHECK(d1.find("c6-") == std::string::npos);  // no IPv6 CIDR: no IPv6 set
  CHECK(joined_rules(c, "gnp.from-office").find("@c-") != std::string::npos);

  // Its CIDRs change: element changes only, the chain stays.
  c.upsert_network_set(gns("office", "{role: office}", "[203.0.113.0/24, 198.51.100.0/24]"));
  std::string d2 = c.take_delta();
  CHECK_MESSAGE(d2.find("add element inet tabby c-") != std::string::npos, d2);
  CHECK(d2.find("198.51.100.0/24") != std::string::npos);
  CHECK(d2.find("203.0.113.0/24") == std::string::npos);  // unchanged element untouched
  CHECK(d2.find("chain") == std::string::npos);
  c.upsert_network_set(gns("office", "{role: office}", "[198.51.100.0/24]"));
  std::string d3 = c.take_delta();
  CHECK_MESSAGE(d3.find("delete element inet tabby c-") != std::string::npos, d3);
  CHECK(d3.find("203.0.113.0/24") != std::string::npos);

  // Relabelled away: the selector matches nothing; the chain loses the match, the set goes.
  c.upsert_network_set(gns("office", "{role: elsewhere}", "[198.51.100.0/24]"));
  std::string d4 = c.take_delta();
  CHECK_MESSAGE(d4.find("delete set inet tabby c-") != std::string::npos, d4);
  CHECK(joined_rules(c, "gnp.from-office").find("@c-") == std::string::npos);

  // A notSelector excludes the CIDRs as well as the endpoints.
  c.upsert_network_set(gns("office", "{role: office}", "[198.51.100.0/24]"));
  c.upsert_policy(gnp_from("deny-but-office", "Deny", "{notSelector: role == 'office'}"));
  std::string rules = joined_rules(c, "gnp.deny-but-office");
  CHECK_MESSAGE(rules.find("ip saddr != @s-") != std::string::npos, rules);
  CHECK_MESSAGE(rules.find("ip saddr != @c-") != std::string::npos, rules);
  // Removing the set takes the CIDR match away again.
  (void)c.take_delta();
  c.remove_network_set("office");
  CHECK(c.network_set_count() == 0);
  std::string d5 = c.take_delta();
  CHECK(d5.find("delete set inet tabby c-") != std::string::npos);
  CHECK(joined_rules(c, "gnp.deny-but-office").find("@c-") == std::string::npos);
}

TEST_CASE("namespaced policies see their namespace's NetworkSets; Kubernetes policies none") {
  PolicyCompiler c;
  c.upsert_endpoint(web());
  c.upsert_network_set(nset("x", "mine", "{role: office}", "[198.51.100.0/24]"));
  c.upsert_network_set(nset("y", "theirs", "{role: office}", "[192.0.2.0/24]"));
  c.upsert_network_set(gns("everyone", "{role: office}", "[203.0.113.0/24]"));
  c.upsert_policy(np_from("from-office", "{selector: role == 'office'}"));
  auto cidr = sets_with(c, "c-");
  REQUIRE(cidr.size() == 1);
  CHECK(cidr.begin()->second == std::set<std::string>{"198.51.100.0/24"});
  // namespaceSelector: global() sees only the global set.
  c.upsert_policy(np_from("from-office", "{selector: role == 'office', namespaceSelector: global()}"));
  cidr = sets_with(c, "c-");
  REQUIRE(cidr.size() == 1);
  CHECK(cidr.begin()->second == std::set<std::string>{"203.0.113.0/24"});
  // A namespace relabel moves a namespaceSelector's match.
  c.upsert_policy(np_from("from-office", "{selector: role == 'office', namespaceSelector: env == 'prod'}"));
  CHECK(sets_with(c, "c-").empty());
  (void)c.take_delta();
  c.upsert_namespace({"y", {{"env", "prod"}}});
  std::string d = c.take_delta();
  CHECK_MESSAGE(d.find("192.0.2.0/24") != std::string::npos, d);
  // A Kubernetes NetworkPolicy's namespaceSelector peer never matches network sets.
  c.upsert_policy(pol("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k, namespace: x}\n"
                      "spec:\n  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n"));
  CHECK(joined_rules(c, "knp.x.k").find("@c-") == std::string::npos);
}
