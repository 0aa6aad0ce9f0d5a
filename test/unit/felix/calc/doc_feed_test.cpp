// doc_feed_test.cpp — datastore documents into the Calc: a good document
// replaces what it produced before, a bad one changes nothing and is listed until
// fixed, a deletion removes what the document produced.
#include <doctest/doctest.h>

#include <set>

#include "felix/calc/doc_feed.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {

DocEvent doc(const std::string& name, const std::string& text) {
  return DocEvent{{"IPPool.projectcalico.org", "", name}, text, "1", false, "pools/" + name + ".yaml"};
}

std::string pool(const std::string& name, const std::string& cidr) {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: " + name + "}\nspec: {cidr: " + cidr + "}\n";
}

std::vector<std::string> pool_cidrs(const Calc& c) {
  std::vector<std::string> v;
  for (const auto& p : c.pools()) v.push_back(p.name + "=" + p.pool.cidr.str());
  return v;
}

}  // namespace

TEST_CASE("documents feed the calculation and bad versions keep the last good one") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  auto st = feed.feed({doc("a", pool("a", "198.19.0.0/16"))}, calc);
  CHECK(st.upserts == 1);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.19.0.0/16"});
  CHECK(feed.problems().empty());

  // An invalid CIDR: rejected with file, object and field; the old pool stays.
  st = feed.feed({doc("a", pool("a", "198.19.0.0/33"))}, calc);
  CHECK(st.rejected == 1);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.19.0.0/16"});
  REQUIRE(feed.problems().size() == 1);
  const std::string msg = feed.problems()[0].message;
  CHECK(msg.find("pools/a.yaml") != std::string::npos);
  CHECK(msg.find("IPPool a") != std::string::npos);
  CHECK(msg.find("spec.cidr") != std::string::npos);

  // A YAML syntax error: the same.
  feed.feed({doc("a", "apiVersion: [\n")}, calc);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.19.0.0/16"});
  CHECK(feed.problems().size() == 1);

  // Fixed: the problem goes, the new version is in force.
  feed.feed({doc("a", pool("a", "198.20.0.0/16"))}, calc);
  CHECK(feed.problems().empty());
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.20.0.0/16"});

  // An overlapping pool is the Calc's to reject; deleting its document removes it.
  feed.feed({doc("b", pool("b", "198.20.1.0/24"))}, calc);
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"a=198.20.0.0/16"});
  CHECK_FALSE(calc.problems().empty());
  feed.feed({doc("a", "")}, calc);  // a version with no object at all
  CHECK(feed.problems().size() == 1);  // an empty document holds no object
  DocEvent del = doc("a", "");
  del.deleted = true;
  feed.feed({del}, calc);
  CHECK(feed.problems().empty());
  // With "a" gone, "b" is re-admitted by the Calc.
  CHECK(pool_cidrs(calc) == std::vector<std::string>{"b=198.20.1.0/24"});
  del = doc("b", "");
  del.deleted = true;
  feed.feed({del}, calc);
  CHECK(pool_cidrs(calc).empty());
  CHECK(feed.document_count() == 0);
}

TEST_CASE("an unknown kind is reported with its document") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  DocEvent e{{"Deployment.apps", "default", "web"},
             "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\n", "1", false,
             "manifests/web.yaml"};
  feed.feed({e}, calc);
  REQUIRE(feed.problems().size() == 1);
  CHECK(feed.problems()[0].message.find("manifests/web.yaml") != std::string::npos);
  CHECK(feed.problems()[0].message.find("Deployment") != std::string::npos);
}

// ---------------------------------------------------------------- policies
namespace {

DocEvent policy_doc(const std::string& qualified_kind, const std::string& ns, const std::string& name,
                    const std::string& text) {
  return DocEvent{{qualified_kind, ns, name}, text, "1", false, "policies/" + name + ".yaml"};
}

// Deny-all-but-api for the pods of `default`: one ingress rule, from app=api.
std::string k8s_allow_api(const std::string& name, const std::string& peers_key) {
  return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: " + name +
         ", namespace: default}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - " + peers_key +
         ":\n    - podSelector: {matchLabels: {app: api}}\n";
}

std::string calico_allow_api(const std::string& name, const std::string& source_key) {
  return "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: " + name +
         ", namespace: default}\nspec:\n  selector: all()\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    " +
         source_key + ": {selector: app == 'api'}\n";
}

const policy::Policy* find_policy(const std::vector<policy::Policy>& ps, const std::string& id) {
  for (const auto& p : ps)
    if (p.id() == id) return &p;
  return nullptr;
}

// The programmed policy `id` restricts its single ingress rule to a selected source.
bool restricted_to_selected_source(const Calc& calc, const std::string& id) {
  auto ps = calc.policies();
  const policy::Policy* p = find_policy(ps, id);
  return p && p->ingress && p->ingress_rules.size() == 1 && p->ingress_rules[0].src.has_selector &&
         p->ingress_rules[0].src.selector.str().find("api") != std::string::npos;
}

struct TypoCase {
  const char* qualified_kind;
  std::string (*text)(const std::string&, const std::string&);
  const char* good_key;
  const char* typo_key;
  const char* id_prefix;
  const char* object;  // how the error names the object
};

const TypoCase kTypoCases[] = {
    {"NetworkPolicy.networking.k8s.io", k8s_allow_api, "from", "form", "knp.default.", "NetworkPolicy default/"},
    {"NetworkPolicy.projectcalico.org", calico_allow_api, "source", "sorce", "np.default.", "NetworkPolicy default/"},
};

}  // namespace

TEST_CASE("a policy update with an unknown field keeps the last good version programmed and says so") {
  for (const auto& tc : kTypoCases) {
    CAPTURE(tc.qualified_kind);
    Calc calc({.node_name = "node-1"});
    DocFeed feed;
    const std::string id = std::string(tc.id_prefix) + "allow-api";
    feed.feed({policy_doc(tc.qualified_kind, "default", "allow-api", tc.text("allow-api", tc.good_key))}, calc);
    REQUIRE(feed.problems().empty());
    REQUIRE(restricted_to_selected_source(calc, id));
    calc.take_changes();

    // The typo as an update: rejected, nothing changes downstream.
    auto st = feed.feed({policy_doc(tc.qualified_kind, "default", "allow-api", tc.text("allow-api", tc.typo_key))}, calc);
    CHECK(st.rejected == 1);
    CHECK(st.upserts == 0);
    CHECK(restricted_to_selected_source(calc, id));
    CalcChanges ch = calc.take_changes();
    CHECK(ch.policies_upserted.empty());
    CHECK(ch.policies_removed.empty());
    REQUIRE(feed.problems().size() == 1);
    const std::string msg = feed.problems()[0].message;
    CHECK_MESSAGE(msg.starts_with("policies/allow-api.yaml: " + std::string(tc.object) + "allow-api: spec.ingress[0]." +
                                  tc.typo_key + ": unknown field"),
                  msg);
    CHECK_MESSAGE(msg.find("the last good version of this policy stays programmed") != std::string::npos, msg);

    // Fixed: the problem goes.
    feed.feed({policy_doc(tc.qualified_kind, "default", "allow-api", tc.text("allow-api", tc.good_key))}, calc);
    CHECK(feed.problems().empty());
    CHECK(restricted_to_selected_source(calc, id));
  }
}

TEST_CASE("a new policy with an unknown field is not programmed and the problem says pods may be more open") {
  for (const auto& tc : kTypoCases) {
    CAPTURE(tc.qualified_kind);
    Calc calc({.node_name = "node-1"});
    DocFeed feed;
    const std::string id = std::string(tc.id_prefix) + "allow-api-new";
    auto st = feed.feed(
        {policy_doc(tc.qualified_kind, "default", "allow-api-new", tc.text("allow-api-new", tc.typo_key))}, calc);
    CHECK(st.rejected == 1);
    CHECK(calc.policies().empty());
    CHECK(calc.take_changes().policies_upserted.empty());
    REQUIRE(feed.problems().size() == 1);
    const std::string msg = feed.problems()[0].message;
    CHECK_MESSAGE(msg.find(std::string(tc.object) + "allow-api-new: spec.ingress[0]." + tc.typo_key + ": unknown field") !=
                      std::string::npos,
                  msg);
    CHECK_MESSAGE(msg.find("NOT programmed") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("may be more open than its author intended") != std::string::npos, msg);

    // Fixed: programmed, problem gone.
    feed.feed({policy_doc(tc.qualified_kind, "default", "allow-api-new", tc.text("allow-api-new", tc.good_key))}, calc);
    CHECK(feed.problems().empty());
    CHECK(restricted_to_selected_source(calc, id));
  }
}

TEST_CASE("security kinds tabby does not implement are refused as not enforced") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  const std::pair<const char*, const char*> kinds[] = {
      {"Profile.projectcalico.org", "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: p}\nspec: {}\n"},
      {"AdminNetworkPolicy.policy.networking.k8s.io",
       "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\nspec: {}\n"},
  };
  for (const auto& [qk, text] : kinds) {
    CAPTURE(qk);
    DocEvent e{{qk, "", "x"}, text, "1", false, "security.yaml"};
    feed.feed({e}, calc);
  }
  auto problems = feed.problems();
  REQUIRE(problems.size() == std::size(kinds));
  for (const auto& p : problems) {
    CAPTURE(p.message);
    CHECK(p.message.starts_with("security.yaml: "));
    CHECK(p.message.find("is a security control tabby does not implement: it is NOT enforced") != std::string::npos);
  }
}

TEST_CASE("HostEndpoints: read, only the local node's reach the policy compiler, deletes and moves remove them") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  auto doc = [](const std::string& name, const std::string& node, const std::string& iface) {
    return DocEvent{{"HostEndpoint.projectcalico.org", "", name},
                    "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: " + name +
                        ", labels: {role: node}}\nspec: {node: " + node + ", interfaceName: \"" + iface + "\"}\n",
                    "1", false, "heps.yaml"};
  };
  auto st = feed.feed({doc("n1-eth0", "node-1", "eth0"), doc("n2-eth0", "node-2", "eth0"), doc("n1-all", "node-1", "*")},
                      calc);
  CHECK(st.rejected == 0);
  CHECK(feed.problems().empty());
  auto ch = calc.take_changes(true);
  std::set<std::string> up;
  for (const auto& h : ch.host_endpoints_upserted) up.insert(h.name);
  CHECK(up == std::set<std::string>{"n1-all", "n1-eth0"});
  REQUIRE(calc.host_endpoints().size() == 2);
  CHECK(calc.host_endpoints()[1].labels == policy::Labels{{"role", "node"}});
  // Moved to another node: removed here.
  feed.feed({doc("n1-eth0", "node-2", "eth0")}, calc);
  ch = calc.take_changes(true);
  CHECK(ch.host_endpoints_removed == std::vector<std::string>{"n1-eth0"});
  // Deleted.
  DocEvent del{{"HostEndpoint.projectcalico.org", "", "n1-all"}, "", "2", true, "heps.yaml"};
  feed.feed({del}, calc);
  ch = calc.take_changes(true);
  CHECK(ch.host_endpoints_removed == std::vector<std::string>{"n1-all"});
  CHECK(calc.host_endpoints().empty());
  // A bad one is an error naming the field; another profile is reported, the object applies.
  DocEvent bad{{"HostEndpoint.projectcalico.org", "", "h"},
               "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec: {node: node-1}\n", "1",
               false, "bad.yaml"};
  st = feed.feed({bad}, calc);
  CHECK(st.rejected == 1);
  REQUIRE(feed.problems().size() == 1);
  CHECK(feed.problems()[0].message.find("bad.yaml: HostEndpoint h: spec.interfaceName: required") == 0);
}

TEST_CASE("policy strictness holds through the resource reader (JSON documents, duplicate fields)") {
  // resources.cpp re-emits a policy document before the policy module reads it: the
  // checks must see what the datastore held (etcd and Kubernetes deliver JSON).
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  const std::string json_typo =
      R"({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"j","namespace":"default"},)"
      R"("spec":{"podSelector":{},"ingress":[{"form":[{"podSelector":{}}]}]}})";
  const std::string yaml_duplicate =
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: d}\n"
      "spec:\n  ingress:\n  - action: Allow\n    source: {selector: app == 'api'}\n    source: {}\n";
  feed.feed({DocEvent{{"NetworkPolicy.networking.k8s.io", "default", "j"}, json_typo, "7", false,
                      "/registry/networkpolicies/default/j"},
             DocEvent{{"GlobalNetworkPolicy.projectcalico.org", "", "d"}, yaml_duplicate, "8", false, "gnp.yaml"}},
            calc);
  CHECK(calc.policies().empty());
  auto problems = feed.problems();
  REQUIRE(problems.size() == 2);
  std::string all = problems[0].message + "\n" + problems[1].message;
  CHECK_MESSAGE(all.find("/registry/networkpolicies/default/j: NetworkPolicy default/j: spec.ingress[0].form: unknown "
                         "field") != std::string::npos,
                all);
  CHECK_MESSAGE(all.find("gnp.yaml: GlobalNetworkPolicy d: spec.ingress[0].source: duplicate field") != std::string::npos,
                all);
}

// ======================================================================== unsupported Calico fields
namespace {

DocEvent kdoc(const std::string& type, const std::string& name, const std::string& text) {
  return DocEvent{{type, "", name}, text, "1", false, "manifests/" + name + ".yaml"};
}
std::string bgpconfig(const std::string& extra) {
  return "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n"
         "  asNumber: 64512\n" + extra;
}
std::string bgppeer(const std::string& extra) {
  return "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n"
         "  peerIP: 198.18.0.1\n  asNumber: 65001\n" + extra;
}
std::string ippool(const std::string& extra) {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-a}\nspec:\n"
         "  cidr: 198.19.0.0/16\n" + extra;
}
std::string calico_wep(const std::string& extra) {
  return "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: w1, namespace: default}\nspec:\n"
         "  node: node-1\n  pod: web\n  interfaceName: cali1\n  ipNetworks: [198.19.0.5/32]\n" + extra;
}
std::string two_nodes() {
  std::string s;
  for (auto [n, a] : {std::pair{"node-1", "198.18.0.11/24"}, std::pair{"node-2", "198.18.0.12/24"}})
    s += std::string("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: ") + n +
         "}\nspec:\n  bgp:\n    ipv4Address: " + a + "\n---\n";
  return s;
}
std::vector<std::string> peer_addrs(Calc& calc) {
  (void)calc.take_changes();
  std::vector<std::string> v;
  for (const auto& p : calc.speaker_config().peers) v.push_back(p.address.str());
  return v;
}

struct FieldCase {
  std::string type, name;
  std::string (*make)(const std::string&);
  std::string set;            // the field set to a value that changes behaviour in Calico
  std::string calico_default; // the same field at its Calico default (or empty): no problem
  std::string field;          // the path the problem names
};

}  // namespace

TEST_CASE("each unsupported Calico field set in a manifest is a problem naming file, object and field") {
  const std::vector<FieldCase> cases = {
      {"BGPConfiguration.projectcalico.org", "default", bgpconfig, "  logSeverityScreen: Debug\n",
       "  logSeverityScreen: Info\n", "spec.logSeverityScreen"},
      {"BGPConfiguration.projectcalico.org", "default", bgpconfig, "  bindMode: NodeIP\n", "  bindMode: None\n",
       "spec.bindMode"},
      {"BGPConfiguration.projectcalico.org", "default", bgpconfig, "  ignoredInterfaces: [eth9]\n",
       "  ignoredInterfaces: []\n", "spec.ignoredInterfaces"},
      {"BGPConfiguration.projectcalico.org", "default", bgpconfig, "  localWorkloadPeeringIPV4: 169.254.0.179\n",
       "", "spec.localWorkloadPeeringIPV4"},
      {"BGPConfiguration.projectcalico.org", "default", bgpconfig, "  localWorkloadPeeringIPV6: fe80::179\n", "",
       "spec.localWorkloadPeeringIPV6"},
      {"BGPPeer.projectcalico.org", "tor", bgppeer, "  birdGatewayMode: DirectIfDirectlyConnected\n",
       "  birdGatewayMode: Recursive\n", "spec.birdGatewayMode"},
      {"IPPool.projectcalico.org", "pool-a", ippool, "  allowedUses: [LoadBalancer]\n",
       "  allowedUses: [Workload, Tunnel]\n", "spec.allowedUses"},
      {"IPPool.projectcalico.org", "pool-a", ippool, "  assignmentMode: Manual\n", "  assignmentMode: Automatic\n",
       "spec.assignmentMode"},
      {"WorkloadEndpoint.projectcalico.org", "w1", calico_wep, "  allowSpoofedSourcePrefixes: [10.0.0.0/8]\n",
       "  allowSpoofedSourcePrefixes: []\n", "spec.allowSpoofedSourcePrefixes"},
      {"WorkloadEndpoint.projectcalico.org", "w1", calico_wep,
       "  ipNATs:\n  - {internalIP: 198.19.0.5, externalIP: 203.0.113.5}\n", "", "spec.ipNATs"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.field);
    Calc calc({.node_name = "node-1"});
    DocFeed feed;
    // Set: applied (no rejection), one problem naming file, object and field.
    auto st = feed.feed({kdoc(c.type, c.name, c.make(c.set))}, calc);
    CHECK(st.rejected == 0);
    CHECK(st.upserts == 1);
    auto probs = feed.problems();
    REQUIRE(probs.size() == 1);
    const std::string& m = probs[0].message;
    CAPTURE(m);
    CHECK(m.find("manifests/" + c.name + ".yaml") != std::string::npos);
    CHECK(m.find(c.name + ": " + c.field + ": ") != std::string::npos);  // the object, then its field
    CHECK(m.find(c.field + ": not supported by tabby (in Calico: ") != std::string::npos);
    // At its Calico default: no problem, and the earlier one clears.
    feed.feed({kdoc(c.type, c.name, c.make(c.calico_default))}, calc);
    CHECK(feed.problems().empty());
    // Set again, then the document deleted: the problem goes with it.
    feed.feed({kdoc(c.type, c.name, c.make(c.set))}, calc);
    CHECK(feed.problems().size() == 1);
    DocEvent del = kdoc(c.type, c.name, "");
    del.deleted = true;
    feed.feed({del}, calc);
    CHECK(feed.problems().empty());
  }
}

TEST_CASE("a rejected new version keeps the unsupported-field problem of the version in force") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  feed.feed({kdoc("IPPool.projectcalico.org", "pool-a", ippool("  assignmentMode: Manual\n"))}, calc);
  feed.feed({kdoc("IPPool.projectcalico.org", "pool-a", ippool("  assignmentMode: Manual\n  natOutgoing: maybe\n"))},
            calc);
  auto probs = feed.problems();
  REQUIRE(probs.size() == 2);
  CHECK(probs[0].message.find("'maybe' is not true or false") != std::string::npos);
  CHECK(probs[1].message.find("spec.assignmentMode: not supported by tabby") != std::string::npos);
}

TEST_CASE("natOutgoing is supported: no problem, and the pool is masqueraded from") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  feed.feed({kdoc("IPPool.projectcalico.org", "pool-a", ippool("  natOutgoing: true\n"))}, calc);
  (void)calc.take_changes();
  REQUIRE(calc.pools().size() == 1);
  CHECK(calc.pools()[0].pool.nat_outgoing);
  CHECK(feed.problems().empty());
  CHECK(calc.nat_outgoing_pools().masquerade == std::vector<Prefix>{*Prefix::parse("198.19.0.0/16")});
}

TEST_CASE("a BGPPeer with spec.filters naming no BGPFilter peers fail closed: a problem, nothing in or out") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  feed.feed({kdoc("Node.projectcalico.org", "nodes", two_nodes())}, calc);
  feed.feed({kdoc("BGPPeer.projectcalico.org", "tor", bgppeer("  filters: [only-pods]\n"))}, calc);
  // The session is made (filters are supported), with both directions unresolved.
  CHECK(peer_addrs(calc) == std::vector<std::string>{"198.18.0.1", "198.18.0.12"});
  CHECK(feed.problems().empty());  // the document itself is fine
  const bgp::NeighborConfig* tor = nullptr;
  for (const auto& p : calc.speaker_config().peers)
    if (p.address.str() == "198.18.0.1") tor = &p;
  REQUIRE(tor);
  CHECK(tor->import_filter.unresolved);
  CHECK(tor->export_filter.rules.unresolved);
  bool named = false;
  for (const auto& p : calc.problems()) named |= p.message.find("BGPFilter 'only-pods' not found") != std::string::npos;
  CHECK(named);
  // The BGPFilter appears: resolved, the problem clears.
  feed.feed({kdoc("BGPFilter.projectcalico.org", "only-pods",
                  "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: only-pods}\n"
                  "spec:\n  exportV4: [{action: Accept, matchOperator: In, cidr: 198.19.0.0/16}, {action: Reject}]\n")},
            calc);
  (void)calc.take_changes();  // recomputes the speaker config
  for (const auto& p : calc.speaker_config().peers)
    if (p.address.str() == "198.18.0.1") {
      CHECK_FALSE(p.import_filter.unresolved);
      CHECK(p.export_filter.rules.rules.size() == 2);
    }
  for (const auto& p : calc.problems()) CHECK(p.message.find("only-pods") == std::string::npos);
}

namespace {
DocEvent secret_doc(const std::string& ns, const std::string& name, const std::string& data) {
  return DocEvent{{"Secret", ns, name},
                  "apiVersion: v1\nkind: Secret\nmetadata: {name: " + name + ", namespace: " + ns + "}\n" + data, "1",
                  false, "manifests/secret-" + name + ".yaml"};
}
std::string calc_problems(const Calc& calc) {
  std::string all;
  for (const auto& p : calc.problems()) all += p.message + "\n";
  return all;
}
const bgp::NeighborConfig* peer_at(const Calc& calc, const std::string& addr) {
  for (const auto& p : calc.speaker_config().peers)
    if (p.address.str() == addr) return &p;
  return nullptr;
}
}  // namespace

TEST_CASE("nodeMeshPassword: the mesh runs with the Secret's password, and is off while it cannot be read") {
  Calc calc({.node_name = "node-1", .secret_namespace = "tabby-system"});
  DocFeed feed;
  feed.feed({kdoc("Node.projectcalico.org", "nodes", two_nodes())}, calc);
  CHECK(peer_addrs(calc) == std::vector<std::string>{"198.18.0.12"});
  CHECK(peer_at(calc, "198.18.0.12")->password.empty());
  feed.feed({kdoc("BGPConfiguration.projectcalico.org", "default",
                  bgpconfig("  nodeMeshPassword:\n    secretKeyRef: {name: bgp, key: pw}\n"
                            "  nodeMeshMaxRestartTime: 5m\n"))},
            calc);
  // No Secret yet: fail closed, the mesh is off and the problem says why.
  CHECK(peer_addrs(calc).empty());
  CHECK(feed.problems().empty());  // the document is fine
  std::string probs = calc_problems(calc);
  CAPTURE(probs);
  CHECK(probs.find("spec.nodeMeshPassword.secretKeyRef: Secret tabby-system/bgp not found") != std::string::npos);
  CHECK(probs.find("the node-to-node mesh is OFF") != std::string::npos);
  // A per-node BGPConfiguration turning the mesh on does not run it without the password.
  feed.feed({kdoc("BGPConfiguration.projectcalico.org", "node.node-1",
                  "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.node-1}\n"
                  "spec: {nodeToNodeMeshEnabled: true}\n")},
            calc);
  CHECK(peer_addrs(calc).empty());
  // A Secret of another namespace is not read; one without the key is not enough.
  feed.feed({secret_doc("default", "bgp", "stringData: {pw: wrong-namespace}\n")}, calc);
  CHECK(peer_addrs(calc).empty());
  feed.feed({secret_doc("tabby-system", "bgp", "stringData: {other: x}\n")}, calc);
  CHECK(peer_addrs(calc).empty());
  CHECK(calc_problems(calc).find("has no key 'pw'") != std::string::npos);
  // The Secret (base64 data): the mesh comes up with its password and restart time.
  feed.feed({secret_doc("tabby-system", "bgp", "data: {pw: czNjcmV0LW1lc2g=}\n")}, calc);  // "s3cret-mesh"
  REQUIRE(peer_addrs(calc) == std::vector<std::string>{"198.18.0.12"});
  CHECK(peer_at(calc, "198.18.0.12")->password == "s3cret-mesh");
  CHECK(peer_at(calc, "198.18.0.12")->max_restart_time == 300);
  CHECK(calc.problems().empty());
  // Rotated: the new password.
  feed.feed({secret_doc("tabby-system", "bgp", "stringData: {pw: rotated}\n")}, calc);
  (void)calc.take_changes();
  CHECK(peer_at(calc, "198.18.0.12")->password == "rotated");
  // Deleted: off again.
  DocEvent del = secret_doc("tabby-system", "bgp", "");
  del.deleted = true;
  feed.feed({del}, calc);
  CHECK(peer_addrs(calc).empty());
  feed.feed({kdoc("BGPConfiguration.projectcalico.org", "default", bgpconfig(""))}, calc);
  CHECK(peer_addrs(calc) == std::vector<std::string>{"198.18.0.12"});
  CHECK(peer_at(calc, "198.18.0.12")->password.empty());
}

TEST_CASE("BGPPeer password.secretKeyRef: no session until the Secret's key can be read; rotation re-keys") {
  Calc calc({.node_name = "node-1", .secret_namespace = "tabby-system"});
  DocFeed feed;
  feed.feed({kdoc("Node.projectcalico.org", "nodes", two_nodes())}, calc);
  feed.feed({kdoc("BGPPeer.projectcalico.org", "tor",
                  bgppeer("  password:\n    secretKeyRef: {name: tor-md5, key: password}\n"))},
            calc);
  CHECK(feed.problems().empty());
  CHECK(peer_addrs(calc) == std::vector<std::string>{"198.18.0.12"});  // the mesh; no session with the ToR
  CHECK(calc_problems(calc).find("BGPPeer tor: spec.password.secretKeyRef: Secret tabby-system/tor-md5 not found: "
                                 "no session with its peers (fail closed)") != std::string::npos);
  feed.feed({secret_doc("tabby-system", "tor-md5", "stringData: {password: first}\n")}, calc);
  REQUIRE(peer_addrs(calc) == std::vector<std::string>{"198.18.0.1", "198.18.0.12"});
  CHECK(peer_at(calc, "198.18.0.1")->password == "first");
  CHECK(calc.problems().empty());
  feed.feed({secret_doc("tabby-system", "tor-md5", "stringData: {password: second}\n")}, calc);
  (void)calc.take_changes();
  CHECK(peer_at(calc, "198.18.0.1")->password == "second");
  // Longer than a TCP MD5 key can be: fail closed.
  feed.feed({secret_doc("tabby-system", "tor-md5", "stringData: {password: " + std::string(81, 'x') + "}\n")}, calc);
  CHECK(peer_addrs(calc) == std::vector<std::string>{"198.18.0.12"});
  CHECK(calc_problems(calc).find("must hold 1 to 80 bytes") != std::string::npos);
  // An agent that reads no Secrets says how to fix it.
  Calc plain({.node_name = "node-1"});
  DocFeed f2;
  f2.feed({kdoc("Node.projectcalico.org", "nodes", two_nodes())}, plain);
  f2.feed({kdoc("BGPPeer.projectcalico.org", "tor",
                bgppeer("  password:\n    secretKeyRef: {name: tor-md5, key: password}\n"))},
          plain);
  f2.feed({secret_doc("tabby-system", "tor-md5", "stringData: {password: first}\n")}, plain);
  CHECK(peer_addrs(plain) == std::vector<std::string>{"198.18.0.12"});
  CHECK(calc_problems(plain).find("set datastore.secretNamespace") != std::string::npos);
  // Bad references and bad Secrets are errors naming the field.
  auto bad = feed.feed({kdoc("BGPPeer.projectcalico.org", "tor", bgppeer("  password:\n    secretKeyRef: {name: x}\n"))},
                       calc);
  CHECK(bad.rejected == 1);
  auto bad64 = feed.feed({secret_doc("tabby-system", "b", "data: {pw: '!!notbase64'}\n")}, calc);
  CHECK(bad64.rejected == 1);
  std::string fp;
  for (const auto& p : feed.problems()) fp += p.message + "\n";
  CHECK(fp.find("spec.password.secretKeyRef.key: is required") != std::string::npos);
  CHECK(fp.find("data.pw: is not base64") != std::string::npos);
}
