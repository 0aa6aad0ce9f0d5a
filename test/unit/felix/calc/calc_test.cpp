// calc_test.cpp — cluster resources (parsing, validation, error texts), the
// calculation graph (mesh, route reflectors, BGPPeer selectors, per-node AS, dataplane
// routes per encapsulation on the RecordingDataplane, incremental changes, learned
// routes) and the pure IPAM decisions.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "felix/calc/calc.hpp"
#include "felix/calc/calc_impl.hpp"  // IpOwners
#include "felix/calc/doc_feed.hpp"
#include "test/fakes/recording_dataplane.hpp"
#include "felix/calc/resources.hpp"

namespace doctest {
template <>
struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& v) {
    std::string s = "{";
    for (const auto& x : v) s += "\n  \"" + x + "\"";
    return (s + "}").c_str();
  }
};
}  // namespace doctest

using namespace tabby;
using namespace tabby::felix;
using dataplane::RouteClass;

namespace {

std::string node_yaml(const std::string& name, const std::string& addr, const std::string& extra_bgp = "",
                      const std::string& labels = "") {
  return "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: " + name +
         (labels.empty() ? "" : "\n  labels: {" + labels + "}") + "\nspec:\n  bgp:\n    ipv4Address: " + addr +
         "\n" + extra_bgp + "---\n";
}
std::string block_yaml(const std::string& cidr, const std::string& node) {
  Prefix p = *Prefix::parse(cidr);
  return "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: " + block_affinity_name(p) +
         "}\nspec: {cidr: " + cidr + ", node: " + node + "}\n---\n";
}
std::string pool_yaml(const std::string& name, const std::string& cidr, const std::string& extra = "") {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: " + name + "}\nspec:\n  cidr: " + cidr +
         "\n" + extra + "---\n";
}
std::string wep_yaml(const std::string& name, const std::string& node, const std::string& ip, const std::string& iface,
                     const std::string& labels = "app: web") {
  return "apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: " + name +
         ", namespace: default, labels: {" + labels + "}}\nspec: {node: " + node + ", interfaceName: " + iface +
         ", ips: [" + ip + "]}\n---\n";
}

// A calculation fed through the ManifestTracker the way the file datastore does.
struct Node {
  Calc calc;
  ManifestTracker tracker;
  std::vector<std::string> errors;
  explicit Node(const std::string& name) : calc(CalcOptions{name, {}, "tunl0", "vxlan.tabby", 4096, 4789}) {}
  CalcChanges feed(const std::string& source, const std::string& yaml) {
    std::vector<ResourceError> errs;
    for (const auto& e : tracker.update_source(source, yaml, &errs)) {
      auto st = calc.apply(e);
      if (!st) errors.push_back(st.error().message);
    }
    for (const auto& e : errs) errors.push_back(e.message);
    return calc.take_changes();
  }
  CalcChanges drop(const std::string& source) {
    for (const auto& e : tracker.remove_source(source)) (void)calc.apply(e);
    return calc.take_changes();
  }
};

Resource parse_one(const std::string& yaml, const std::string& src = "test.yaml") {
  auto p = parse_manifests(yaml, src);
  REQUIRE_MESSAGE(p.errors.empty(), (p.errors.empty() ? "" : p.errors[0].message));
  REQUIRE(p.resources.size() == 1);
  return p.resources[0];
}

std::string parse_error(const std::string& yaml, const std::string& src = "pools.yaml") {
  auto p = parse_manifests(yaml, src);
  REQUIRE(p.errors.size() == 1);
  return p.errors[0].message;
}

std::vector<std::string> peer_list(const bgp::SpeakerConfig& s) {
  std::vector<std::string> v;
  for (const auto& p : s.peers)
    v.push_back(p.address.str() + " as" + std::to_string(p.asn) + (p.passive ? " passive" : "") +
                (p.route_reflector_client ? " rr-client" : ""));
  return v;
}

std::vector<std::string> route_strs(const Calc& c, RouteClass cls) {
  std::vector<std::string> v;
  for (const auto& r : c.routes(cls)) v.push_back(r.str());
  return v;
}

std::vector<std::string> op_strs(const std::vector<RouteOp>& ops) {
  std::vector<std::string> v;
  for (const auto& o : ops) v.push_back(o.str());
  return v;
}
std::vector<std::string> op_strs(const CalcChanges& ch) { return op_strs(ch.routes); }

// take_changes() plus the learned-route edits, every removal first.
std::vector<RouteOp> take_all(Calc& c) {
  std::vector<RouteOp> ops = c.take_changes().routes;
  c.take_learned_routes([&](RouteOp&& op) { ops.push_back(std::move(op)); });
  std::stable_partition(ops.begin(), ops.end(), [](const RouteOp& o) { return o.remove; });
  return ops;
}

const std::string kThreeNodes = node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                                node_yaml("node-3", "198.18.0.13/24");

}  // namespace

// ======================================================================== parsing
TEST_CASE("IPPool: defaults and modes") {
  auto r = parse_one(pool_yaml("pool-a", "198.19.0.0/16", "  ipipMode: CrossSubnet\n  natOutgoing: true\n"));
  CHECK(r.key.str() == "IPPool pool-a");
  const auto& p = std::get<IpPool>(r.body);
  CHECK(p.block_size == 26);
  CHECK(p.ipip == ipip::EncapMode::CrossSubnet);
  CHECK(p.vxlan == ipip::EncapMode::Never);
  CHECK(p.nat_outgoing);
  CHECK_FALSE(p.disabled);
  CHECK(p.node_selector.is_all());
  auto v6 = std::get<IpPool>(parse_one(pool_yaml("pool-6", "2001:db8:1::/48")).body);
  CHECK(v6.block_size == 122);
  auto sel = std::get<IpPool>(
      parse_one(pool_yaml("p", "198.19.0.0/16", "  nodeSelector: zone == 'a'\n  blockSize: 28\n  disabled: true\n"))
          .body);
  CHECK(sel.block_size == 28);
  CHECK(sel.disabled);
  CHECK(sel.node_selector.matches({{"zone", "a"}}));
  CHECK_FALSE(sel.node_selector.matches({{"zone", "b"}}));
}

TEST_CASE("IPPool: error texts name source, object and field") {
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.0/33")) == "pools.yaml: IPPool pool-a: spec.cidr: '10.0.0.0/33' is not a CIDR");
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.1/8")) ==
        "pools.yaml: IPPool pool-a: spec.cidr: '10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)");
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.0/24", "  blockSize: 22\n")) ==
        "pools.yaml: IPPool pool-a: spec.blockSize: /22 blocks do not fit in the pool 10.0.0.0/24 (blockSize must be "
        "at least the pool's prefix length)");
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.0/16", "  blockSize: 33\n")) ==
        "pools.yaml: IPPool pool-a: spec.blockSize: 33 is outside 20-32 (IPv4)");
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.0/16", "  ipipMode: Sometimes\n")) ==
        "pools.yaml: IPPool pool-a: spec.ipipMode: 'Sometimes' is not an encapsulation mode (Never, Always, CrossSubnet)");
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.0/16", "  ipipMode: Always\n  vxlanMode: Always\n")) ==
        "pools.yaml: IPPool pool-a: spec.vxlanMode: ipipMode and vxlanMode cannot both be enabled");
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.0/16", "  blocksize: 24\n")).starts_with(
      "pools.yaml: IPPool pool-a: spec.blocksize: unknown field (known here: allowedUses, blockSize, cidr,"));
  CHECK(parse_error(pool_yaml("pool-a", "10.0.0.0/16", "  nodeSelector: \"zone ==\"\n"))
            .starts_with("pools.yaml: IPPool pool-a: spec.nodeSelector: selector"));
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n") ==
        "pools.yaml: IPPool p: spec: is required");
}

TEST_CASE("unknown kinds, missing names and YAML syntax errors") {
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: IPPoool\nmetadata: {name: x}\nspec: {}\n")
            .starts_with("pools.yaml: IPPoool x: kind: unknown kind 'IPPoool' for apiVersion 'projectcalico.org/v3'"));
  CHECK(parse_error("apiVersion: v1\nkind: IPPool\nmetadata: {name: x}\nspec: {}\n")
            .starts_with("pools.yaml: IPPool x: kind: unknown kind 'IPPool' for apiVersion 'v1'"));
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {}\n") ==
        "pools.yaml: IPPool: metadata.name: is required");
  auto p = parse_manifests("apiVersion: v1\nkind: [Namespace\n", "ns.yaml");
  CHECK(p.syntax_error);
  REQUIRE(p.errors.size() == 1);
  CHECK(p.errors[0].message.starts_with("ns.yaml: YAML syntax error at line "));
}

TEST_CASE("document streams: good objects survive a bad one, errors name the document") {
  auto p = parse_manifests(pool_yaml("a", "10.1.0.0/16") + pool_yaml("b", "10.2.0.0/99") + pool_yaml("c", "10.3.0.0/16"),
                           "pools.yaml");
  CHECK(p.resources.size() == 2);
  REQUIRE(p.errors.size() == 1);
  CHECK(p.errors[0].message == "pools.yaml (document 2): IPPool b: spec.cidr: '10.2.0.0/99' is not a CIDR");
  REQUIRE(p.errors[0].key);
  CHECK(p.errors[0].key->str() == "IPPool b");
  // JSON is YAML.
  auto j = parse_one(R"({"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"j"},
                          "spec":{"cidr":"10.9.0.0/16","vxlanMode":"Always"}})");
  CHECK(std::get<IpPool>(j.body).vxlan == ipip::EncapMode::Always);
}

TEST_CASE("BGPConfiguration: defaults, communities and advertisements") {
  auto empty = std::get<BgpConfiguration>(
      parse_one("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {}\n").body);
  CHECK_FALSE(empty.asn);
  CHECK_FALSE(empty.node_to_node_mesh);
  auto c = std::get<BgpConfiguration>(parse_one(R"(apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 64600
  nodeToNodeMeshEnabled: false
  listenPort: 1179
  logSeverityScreen: Info
  communities:
  - {name: large, value: "64600:300:100"}
  - {name: std, value: "64600:120"}
  prefixAdvertisements:
  - cidr: 198.19.0.0/16
    communities: [large, std, "65000:1"]
  serviceClusterIPs:
  - cidr: 10.96.0.0/12
)").body);
  CHECK(*c.asn == 64600);
  CHECK(*c.node_to_node_mesh == false);
  CHECK(*c.listen_port == 1179);
  REQUIRE(c.prefix_advertisements.size() == 1);
  const auto& pa = c.prefix_advertisements[0];
  REQUIRE(pa.communities.size() == 3);
  CHECK(pa.communities[0].large == bgp::LargeCommunity{64600, 300, 100});
  CHECK(*pa.communities[1].standard == ((64600u << 16) | 120u));
  CHECK(*pa.communities[2].standard == ((65000u << 16) | 1u));
  REQUIRE(c.service_cluster_ips.size() == 1);
  CHECK(c.service_cluster_ips[0].str() == "10.96.0.0/12");
  CHECK(parse_error(R"(apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  prefixAdvertisements:
  - {cidr: 198.19.0.0/16, communities: [nosuch]}
)",
                    "bgp.yaml") ==
        "bgp.yaml: BGPConfiguration default: spec.prefixAdvertisements[0].communities[0]: 'nosuch' is neither a "
        "community defined in spec.communities nor a community value");
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: mine}\nspec: {}\n",
                    "bgp.yaml") == "bgp.yaml: BGPConfiguration mine: metadata.name: must be 'default' or 'node.<nodename>'");
}

TEST_CASE("BGPPeer: fields and errors") {
  auto p = std::get<BgpPeer>(parse_one(R"(apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  nodeSelector: rack == 'r1'
  peerIP: 198.18.0.1:1179
  asNumber: 65001
  password: s3cret
  keepOriginalNextHop: true
  maxRestartTime: 2m
  ttlSecurity: 1
)").body);
  CHECK(p.peer_ip->str() == "198.18.0.1");
  CHECK(p.port == 1179);
  CHECK(p.asn == 65001);
  CHECK(p.password == "s3cret");
  CHECK(p.keep_original_next_hop);
  CHECK(*p.max_restart_time == 120);
  CHECK(p.ttl_security == 1);
  CHECK(p.node_selector->matches({{"rack", "r1"}}));
  auto v6 = std::get<BgpPeer>(parse_one("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\n"
                                        "spec: {peerIP: '[2001:db8::1]:179', asNumber: 1.10, nextHopMode: Self}\n")
                                  .body);
  CHECK(v6.peer_ip->str() == "2001:db8::1");
  CHECK(v6.asn == 65546);
  CHECK(*v6.next_hop_mode == bgp::NextHopMode::Self);
  auto sk = std::get<BgpPeer>(parse_one("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec:\n"
                                        "  peerIP: 198.18.0.1\n  asNumber: 65001\n"
                                        "  password: {secretKeyRef: {name: s, key: k}}\n")
                              .body);
  REQUIRE(sk.password_secret);
  CHECK(sk.password_secret->name == "s");
  CHECK(sk.password_secret->key == "k");
  CHECK(sk.password.empty());
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec:\n  peerIP: 198.18.0.1\n"
                    "  asNumber: 65001\n  password: {secretKeyRef: {name: s, key: k, optional: true}}\n",
                    "peers.yaml")
            .find("spec.password.secretKeyRef.optional: true is not supported") != std::string::npos);
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 198.18.0.1}\n",
                    "peers.yaml") == "peers.yaml: BGPPeer x: spec.asNumber: is required with spec.peerIP");
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {node: a}\n",
                    "peers.yaml") ==
        "peers.yaml: BGPPeer x: spec.peerIP: one of spec.peerIP or spec.peerSelector is required");
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 198.18.0.1, "
                    "asNumber: 1, maxRestartTime: soon}\n",
                    "peers.yaml") ==
        "peers.yaml: BGPPeer x: spec.maxRestartTime: 'soon' is not a duration (like 120s or 2m)");
}

TEST_CASE("Node, Kubernetes kinds and tabby kinds") {
  auto n = std::get<CalicoNode>(parse_one(node_yaml("node-1", "198.18.0.11/24",
                                                    "    asNumber: 64513\n    routeReflectorClusterID: 224.0.0.1\n",
                                                    "rack: r1"))
                                    .body);
  CHECK(n.ipv4->addr.str() == "198.18.0.11");
  CHECK(n.ipv4->subnet.str() == "198.18.0.0/24");
  CHECK(*n.asn == 64513);
  CHECK(n.rr_cluster_id->str() == "224.0.0.1");
  CHECK(n.labels.at("rack") == "r1");
  CHECK(parse_error(node_yaml("node-1", "198.18.0.300/24"), "nodes.yaml") ==
        "nodes.yaml: Node node-1: spec.bgp.ipv4Address: '198.18.0.300/24' is not an address (like 198.18.0.11/24)");

  auto kn = parse_one(R"(apiVersion: v1
kind: Node
metadata:
  name: node-9
  labels: {kubernetes.io/hostname: node-9}
  annotations: {projectcalico.org/IPv4Address: 198.18.0.19/24, projectcalico.org/ASNumber: "64999"}
status: {capacity: {cpu: "2"}}
)");
  CHECK(kn.key.kind == Kind::K8sNode);
  CHECK(std::get<K8sNode>(kn.body).from_annotations.ipv4->addr.str() == "198.18.0.19");

  auto pod = parse_one(R"(apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
  - name: c
    image: nginx
    ports: [{name: http, containerPort: 80}, {containerPort: 9000}]
status:
  podIP: 198.19.0.5
  podIPs: [{ip: 198.19.0.5}, {ip: "2001:db8::5"}]
)");
  CHECK(pod.key.str() == "Pod shop/web-1");
  const auto& pv = std::get<Pod>(pod.body);
  CHECK(pv.node == "node-1");
  CHECK(pv.ips.size() == 2);
  REQUIRE(pv.ports.size() == 1);
  CHECK(pv.ports[0].name == "http");
  CHECK(pv.ports[0].port == 80);

  auto ns = parse_one("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n");
  CHECK(ns.key.str() == "Namespace shop");

  auto wep = parse_one(wep_yaml("web-1", "node-1", "198.19.0.5", "cali0123456789a"));
  CHECK(wep.key.str() == "WorkloadEndpoint default/web-1");
  CHECK(std::get<WorkloadEndpoint>(wep.body).iface == "cali0123456789a");
  CHECK(parse_error(wep_yaml("web-1", "node-1", "198.19.0.0/26", "cali0"), "wep.yaml") ==
        "wep.yaml: WorkloadEndpoint default/web-1: spec.ips[0]: '198.19.0.0/26' is not a host address (or /32, /128)");

  auto blk = parse_one(block_yaml("198.19.0.64/26", "node-2"));
  CHECK(blk.key.str() == "BlockAffinity 198-19-0-64-26");
  CHECK(parse_error("apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: b}\nspec: {cidr: 198.19.0.0/26, "
                    "node: n, allocations: {a: 198.19.1.1}}\n",
                    "b.yaml") == "b.yaml: BlockAffinity b: spec.allocations.a: 198.19.1.1 is not inside the block 198.19.0.0/26");

  auto pol = parse_one(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
)");
  CHECK(pol.key.kind == Kind::Policy);
  CHECK(pol.key.name == "knp.shop.deny");
}

TEST_CASE("value parsers") {
  CHECK(*parse_asn("64512") == 64512);
  CHECK(*parse_asn("1.10") == 65546);
  CHECK_FALSE(parse_asn("0"));
  CHECK_FALSE(parse_asn("4294967296"));
  CHECK(*parse_duration_seconds("1m30s") == 90);
  CHECK(*parse_duration_seconds("90") == 90);
  CHECK_FALSE(parse_duration_seconds("5d"));
  CHECK(parse_node_address("198.18.0.11")->subnet.str() == "198.18.0.11/32");
}

// ======================================================================== mesh and peers
TEST_CASE("mesh: 3 nodes, a 4th joins, one leaves; the lower address dials") {
  Node n1("node-1"), n3("node-3");
  n1.feed("nodes.yaml", kThreeNodes);
  n3.feed("nodes.yaml", kThreeNodes);
  const auto& s1 = n1.calc.speaker_config();
  CHECK(s1.router_id.str() == "198.18.0.11");
  CHECK(s1.asn == 64512);
  CHECK(peer_list(s1) == std::vector<std::string>{"198.18.0.12 as64512", "198.18.0.13 as64512"});
  CHECK(peer_list(n3.calc.speaker_config()) ==
        std::vector<std::string>{"198.18.0.11 as64512 passive", "198.18.0.12 as64512 passive"});
  CHECK(s1.peers[0].description == "node-to-node mesh");
  CHECK(s1.peers[0].local_address->str() == "198.18.0.11");
  CHECK(s1.peers[0].families == std::vector<bgp::Family>{bgp::kIpv4Unicast});

  auto ch = n1.feed("node-4.yaml", node_yaml("node-4", "198.18.0.14/24"));
  CHECK(ch.bgp_changed);
  CHECK(n1.calc.speaker_config().peers.size() == 3);
  ch = n1.drop("node-4.yaml");
  CHECK(ch.bgp_changed);
  CHECK(peer_list(n1.calc.speaker_config()) == std::vector<std::string>{"198.18.0.12 as64512", "198.18.0.13 as64512"});
  // Same inputs, same output: feeding the nodes again changes nothing.
  ch = n1.feed("nodes-copy.yaml", kThreeNodes);
  CHECK_FALSE(ch.bgp_changed);
  // Mesh off: no peers.
  ch = n1.feed("bgp.yaml", "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
                           "spec: {nodeToNodeMeshEnabled: false}\n");
  CHECK(ch.bgp_changed);
  CHECK(n1.calc.speaker_config().peers.empty());
}

TEST_CASE("route reflectors: 2 reflectors (same cluster ID) + 4 clients, mesh off") {
  std::string y = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
                  "spec: {nodeToNodeMeshEnabled: false}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: peer-with-rrs}\n"
                  "spec: {nodeSelector: all(), peerSelector: has(route-reflector)}\n---\n";
  std::string rr = "    routeReflectorClusterID: 224.0.0.1\n";
  y += node_yaml("rr-1", "198.18.0.1/24", rr, "route-reflector: 'true'");
  y += node_yaml("rr-2", "198.18.0.2/24", rr, "route-reflector: 'true'");
  for (int i = 1; i <= 4; ++i) y += node_yaml("c-" + std::to_string(i), "198.18.0.1" + std::to_string(i) + "/24");
  Node r1("rr-1"), c1("c-1");
  r1.feed("cluster.yaml", y);
  c1.feed("cluster.yaml", y);
  // Client: only the two reflectors, no client-client sessions.
  CHECK(peer_list(c1.calc.speaker_config()) ==
        std::vector<std::string>{"198.18.0.1 as64512 passive", "198.18.0.2 as64512 passive"});
  // Reflector: the other reflector as a non-client, the four clients as RR clients.
  const auto& s = r1.calc.speaker_config();
  CHECK(s.cluster_id->str() == "224.0.0.1");
  CHECK(peer_list(s) == std::vector<std::string>{"198.18.0.2 as64512", "198.18.0.11 as64512 rr-client",
                                                 "198.18.0.12 as64512 rr-client", "198.18.0.13 as64512 rr-client",
                                                 "198.18.0.14 as64512 rr-client"});
  CHECK(s.peers[0].description == "node specific");
}

TEST_CASE("BGPPeer restartMode, localASNumber and numAllowedLocalASNumbers reach the speaker's peer") {
  std::string y = kThreeNodes +
                  "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
                  "spec: {nodeToNodeMeshEnabled: false}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
                  "spec: {peerIP: 198.18.0.254, asNumber: 65001, restartMode: LongLivedGracefulRestart,\n"
                  "       maxRestartTime: 10m, localASNumber: 65100, numAllowedLocalASNumbers: 2}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor2}\n"
                  "spec: {peerIP: 198.18.0.253, asNumber: 65001, restartMode: LongLivedGracefulRestart}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor3}\n"
                  "spec: {peerIP: 198.18.0.252, asNumber: 65001, maxRestartTime: 5m}\n";
  Node n("node-1");
  n.feed("cluster.yaml", y);
  CHECK(n.errors.empty());
  const auto& s = n.calc.speaker_config();
  REQUIRE(s.peers.size() == 3);
  std::map<std::string, bgp::NeighborConfig> by;
  for (const auto& p : s.peers) by[p.address.str()] = p;
  // LLGR: maxRestartTime is the long-lived stale time; the GR cap stays the default.
  CHECK(by["198.18.0.254"].long_lived_stale_time == 600);
  CHECK(by["198.18.0.254"].max_restart_time == 120);
  CHECK(by["198.18.0.254"].local_as == std::optional<uint32_t>(65100));
  CHECK(by["198.18.0.254"].allow_own_as == 2);
  CHECK(by["198.18.0.253"].long_lived_stale_time == 3600);
  CHECK_FALSE(by["198.18.0.253"].local_as);
  CHECK(by["198.18.0.252"].long_lived_stale_time == 0);
  CHECK(by["198.18.0.252"].max_restart_time == 300);
  CHECK(by["198.18.0.252"].allow_own_as == 0);
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 198.18.0.1, "
                    "asNumber: 1, restartMode: Fast}\n",
                    "peers.yaml") ==
        "peers.yaml: BGPPeer x: spec.restartMode: 'Fast' is not GracefulRestart or LongLivedGracefulRestart");
}

TEST_CASE("BGPPeer reachableBy: a static route to the peer via the gateway while the peer applies") {
  auto peer = [](const std::string& extra) {
    return "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
           "spec: {peerIP: 198.18.9.254, asNumber: 65001, reachableBy: 198.18.0.1" + extra + "}\n";
  };
  Node n("node-1");
  n.feed("nodes.yaml", kThreeNodes);
  auto ch = n.feed("peers.yaml", peer(""));
  CHECK(n.errors.empty());
  auto ops = op_strs(ch);
  REQUIRE(ops.size() == 1);
  CHECK(ops[0].rfind("+static 198.18.9.254/32", 0) == 0);
  CHECK(ops[0].find("via 198.18.0.1") != std::string::npos);
  CHECK(n.calc.has_route(RouteClass::Static, *Prefix::parse("198.18.9.254/32")));
  CHECK(route_strs(n.calc, RouteClass::Static) == std::vector<std::string>{ops[0].substr(8)});
  // A node the peer does not apply to has no such route.
  Node other("node-2");
  other.feed("nodes.yaml", kThreeNodes);
  CHECK(op_strs(other.feed("peers.yaml", peer(", node: node-1"))).empty());
  // Unchanged: nothing; the peer gone: the route goes.
  CHECK(op_strs(n.feed("peers.yaml", peer(""))).empty());
  ops = op_strs(n.drop("peers.yaml"));
  REQUIRE(ops.size() == 1);
  CHECK(ops[0].rfind("-static 198.18.9.254/32", 0) == 0);
  CHECK(route_strs(n.calc, RouteClass::Static).empty());
  // Errors name the field.
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 198.18.0.1, "
                    "asNumber: 1, reachableBy: '2001:db8::1'}\n",
                    "peers.yaml") == "peers.yaml: BGPPeer x: spec.reachableBy: must be of the same family as spec.peerIP");
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerSelector: all(), "
                    "reachableBy: 198.18.0.1}\n",
                    "peers.yaml") ==
        "peers.yaml: BGPPeer x: spec.reachableBy: needs spec.peerIP (a route to one peer address)");
}

TEST_CASE("hardened mesh: mesh off + one BGPPeer all() -> all() with password and ttlSecurity (GTSM)") {
  // The Calico-compatible way to give the node-to-node sessions TCP MD5 and
  // GTSM (RFC 5082): the automatic mesh has neither, a selector BGPPeer has both.
  std::string y = kThreeNodes +
                  "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
                  "spec: {nodeToNodeMeshEnabled: false}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: mesh}\n"
                  "spec: {nodeSelector: all(), peerSelector: all(), password: s3cret, ttlSecurity: 1}\n";
  Node n1("node-1");
  n1.feed("c.yaml", y);
  const auto& s = n1.calc.speaker_config();
  CHECK(peer_list(s) == std::vector<std::string>{"198.18.0.12 as64512", "198.18.0.13 as64512"});
  for (const auto& p : s.peers) {
    CHECK(p.ttl_security_hops == 1);
    CHECK(p.password == "s3cret");
    CHECK_FALSE(p.route_reflector_client);
  }
}

TEST_CASE("mesh with a reflector: the reflector is not a mesh member, clients peer with it") {
  std::string y = kThreeNodes + node_yaml("rr-1", "198.18.0.1/24", "    routeReflectorClusterID: 224.0.0.1\n");
  Node n1("node-1"), rr("rr-1");
  n1.feed("c.yaml", y);
  rr.feed("c.yaml", y);
  CHECK(peer_list(rr.calc.speaker_config()) ==
        std::vector<std::string>{"198.18.0.11 as64512 rr-client", "198.18.0.12 as64512 rr-client",
                                 "198.18.0.13 as64512 rr-client"});
  CHECK(n1.calc.speaker_config().peers[0].description == "route reflector");
  CHECK(n1.calc.speaker_config().peers.size() == 3);
}

TEST_CASE("BGPPeer: node, nodeSelector, peerIP, per-node AS") {
  std::string y = node_yaml("node-1", "198.18.0.11/24", "    asNumber: 65011\n", "rack: r1") +
                  node_yaml("node-2", "198.18.0.12/24", "", "rack: r2") + node_yaml("node-3", "198.18.0.13/24", "", "rack: r1") +
                  "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
                  "spec: {asNumber: 64600}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor-r1}\n"
                  "spec: {nodeSelector: rack == 'r1', peerIP: 198.18.0.254, asNumber: 65000, password: pw, ttlSecurity: 1}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor-r2}\n"
                  "spec: {nodeSelector: rack == 'r2', peerIP: 198.18.0.253, asNumber: 65000}\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: only-node-2}\n"
                  "spec: {node: node-2, peerIP: '198.51.100.1:1179', asNumber: 65100}\n";
  Node n1("node-1"), n2("node-2");
  n1.feed("c.yaml", y);
  n2.feed("c.yaml", y);
  const auto& s1 = n1.calc.speaker_config();
  CHECK(s1.asn == 65011);  // Node asNumber wins over BGPConfiguration
  CHECK(peer_list(s1) == std::vector<std::string>{"198.18.0.12 as64600", "198.18.0.13 as64600", "198.18.0.254 as65000"});
  const auto& tor = s1.peers[2];
  CHECK(tor.password == "pw");
  CHECK(tor.ttl_security_hops == 1);
  CHECK(tor.description == "node specific");
  CHECK_FALSE(tor.local_address);
  const auto& s2 = n2.calc.speaker_config();
  CHECK(s2.asn == 64600);
  CHECK(peer_list(s2) == std::vector<std::string>{"198.18.0.11 as65011 passive", "198.18.0.13 as64600",
                                                  "198.18.0.253 as65000", "198.51.100.1 as65100"});
  CHECK(s2.peers[3].port == 1179);
  // Relabel node-2 into rack r1: it now peers with tor-r1 instead.
  auto ch = n2.feed("n2.yaml", node_yaml("node-2", "198.18.0.12/24", "", "rack: r1"));
  CHECK(ch.bgp_changed);
  CHECK(peer_list(n2.calc.speaker_config()) == std::vector<std::string>{
                                                   "198.18.0.11 as65011 passive", "198.18.0.13 as64600",
                                                   "198.18.0.254 as65000", "198.51.100.1 as65100"});
}

TEST_CASE("BGPPeer failureDetectionMode BFDIfDirectlyConnected: BFD on a connected subnet, else a problem saying why") {
  auto peer = [](const std::string& name, const std::string& ip, const std::string& mode) {
    return "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: " + name + "}\n"
           "spec: {peerIP: " + ip + ", asNumber: 65000, failureDetectionMode: " + mode + "}\n---\n";
  };
  std::string y = node_yaml("node-1", "198.18.0.11/24") + peer("tor", "198.18.0.254", "BFDIfDirectlyConnected") +
                  peer("far", "203.0.113.1", "BFDIfDirectlyConnected") + peer("plain", "198.18.0.253", "None");
  Node n1("node-1");
  n1.feed("c.yaml", y);
  const auto& s = n1.calc.speaker_config();
  REQUIRE(peer_list(s) == std::vector<std::string>{"198.18.0.253 as65000", "198.18.0.254 as65000", "203.0.113.1 as65000"});
  CHECK_FALSE(s.peers[0].bfd.enabled);  // None
  CHECK(s.peers[1].bfd.enabled);        // inside 198.18.0.0/24
  CHECK(s.peers[1].bfd.multiplier == 3);
  CHECK_FALSE(s.peers[2].bfd.enabled);  // not connected: no BFD ...
  bool said = false;                    // ... and a problem says why
  for (const auto& p : n1.calc.problems())
    if (p.object == "BGPPeer 203.0.113.1" && p.message.find("not on a directly connected subnet") != std::string::npos &&
        p.message.find("198.18.0.0/24") != std::string::npos)
      said = true;
  CHECK(said);
  // A node address without a mask connects nothing: the problem says to give it.
  n1.feed("n.yaml", node_yaml("node-1", "198.18.0.11"));
  CHECK_FALSE(n1.calc.speaker_config().peers[1].bfd.enabled);
  bool mask = false;
  for (const auto& p : n1.calc.problems())
    if (p.object == "BGPPeer 198.18.0.254" && p.message.find("give it its subnet mask") != std::string::npos) mask = true;
  CHECK(mask);
  // A value Calico does not have is an error naming the field.
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\n"
                    "spec: {peerIP: 198.18.0.1, asNumber: 1, failureDetectionMode: BFD}\n")
            .find("spec.failureDetectionMode") != std::string::npos);
}

TEST_CASE("announcements: local blocks with communities, service IPs, disableBGPExport") {
  Node n1("node-1");
  n1.feed("c.yaml", kThreeNodes + pool_yaml("pool-a", "198.19.0.0/16") +
                         pool_yaml("quiet", "203.0.113.0/24", "  disableBGPExport: true\n  blockSize: 26\n") +
                         block_yaml("198.19.0.0/26", "node-1") + block_yaml("198.19.0.64/26", "node-2") +
                         block_yaml("203.0.113.0/26", "node-1") +
                         R"(apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  communities: [{name: pods, value: "64512:100"}]
  prefixAdvertisements: [{cidr: 198.19.0.0/16, communities: [pods, "64512:300:1"]}]
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
)");
  const auto& a = n1.calc.speaker_config().announcements;
  REQUIRE(a.size() == 2);
  CHECK(a[0].prefix.str() == "10.96.0.0/12");
  CHECK(a[0].communities.empty());
  CHECK(a[1].prefix.str() == "198.19.0.0/26");
  CHECK(a[1].communities == std::vector<uint32_t>{(64512u << 16) | 100u});
  CHECK(a[1].large_communities == std::vector<bgp::LargeCommunity>{{64512, 300, 1}});
}

// ======================================================================== dataplane
namespace {
std::string cluster_with_pool(const std::string& pool_extra, const std::string& n3_addr = "198.18.0.13/24") {
  return node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
         node_yaml("node-3", n3_addr) + pool_yaml("pool-a", "198.19.0.0/16", pool_extra) +
         block_yaml("198.19.0.0/26", "node-1") + block_yaml("198.19.0.64/26", "node-2") +
         block_yaml("198.19.0.128/26", "node-3");
}
std::vector<std::string> program(Node& n, dataplane::RecordingDataplane& dp) {
  n.calc.program_full(dp);
  dp.desired_state_complete();
  REQUIRE(dp.apply().ok());
  return dp.kernel_dump();
}
}  // namespace

TEST_CASE("dataplane: Never mode routes directly via the node IPs") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  dataplane::RecordingDataplane dp({"tunl0", "vxlan.tabby"});
  CHECK(program(n1, dp) == std::vector<std::string>{"proto 44 blackhole 198.19.0.0/26", "proto 44 198.19.0.128/26 via 198.18.0.13",
                                                    "proto 44 198.19.0.64/26 via 198.18.0.12"});
  CHECK_FALSE(dp.tunnels.ipip.enabled);
  CHECK_FALSE(dp.tunnels.vxlan.enabled);
}

TEST_CASE("dataplane: IPIP Always uses tunl0 onlink; tunnel address is the block's first") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool("  ipipMode: Always\n"));
  dataplane::RecordingDataplane dp({"tunl0", "vxlan.tabby"});
  CHECK(program(n1, dp) == std::vector<std::string>{"proto 44 blackhole 198.19.0.0/26", "proto 44 198.19.0.128/26 via 198.18.0.13 dev tunl0 onlink",
                                                    "proto 44 198.19.0.64/26 via 198.18.0.12 dev tunl0 onlink"});
  CHECK(dp.tunnels.ipip.enabled);
  CHECK(dp.tunnels.ipip.tunnel_address->str() == "198.19.0.0");
  CHECK(dp.tunnels.node_ip.str() == "198.18.0.11");
}

TEST_CASE("dataplane: VXLAN Always routes via the remote VTEP; VTEP list") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool("  vxlanMode: Always\n"));
  dataplane::RecordingDataplane dp({"tunl0", "vxlan.tabby"});
  CHECK(program(n1, dp) == std::vector<std::string>{"proto 44 blackhole 198.19.0.0/26", "proto 44 198.19.0.128/26 via 198.19.0.128 dev vxlan.tabby onlink",
                                                    "proto 44 198.19.0.64/26 via 198.19.0.64 dev vxlan.tabby onlink"});
  const auto& t = dp.tunnels;
  CHECK(t.vxlan.enabled);
  CHECK_FALSE(t.ipip.enabled);
  CHECK(t.vxlan.vni == 4096);
  CHECK(t.vxlan.tunnel_address->str() == "198.19.0.0");
  REQUIRE(t.vteps.size() == 2);
  CHECK(t.vteps[0].node == "node-2");
  CHECK(t.vteps[0].tunnel_address.str() == "198.19.0.64");
  CHECK(t.vteps[0].node_ip.str() == "198.18.0.12");
  CHECK(ipip::mac_str(t.vteps[0].mac) == "66:74:c6:12:00:0c");
}

TEST_CASE("dataplane: CrossSubnet encapsulates only towards other subnets") {
  for (std::string mode : {"ipipMode", "vxlanMode"}) {
    CAPTURE(mode);
    Node n1("node-1");
    n1.feed("c.yaml", cluster_with_pool("  " + mode + ": CrossSubnet\n", "198.18.1.13/24"));
    auto remote = route_strs(n1.calc, RouteClass::RemoteBlock);
    REQUIRE(remote.size() == 2);
    CHECK(remote[0] == "198.19.0.64/26 via 198.18.0.12");  // same /24: plain
    CHECK(remote[1] == (mode == "ipipMode" ? "198.19.0.128/26 via 198.18.1.13 dev tunl0 onlink"
                                           : "198.19.0.128/26 via 198.19.0.128 dev vxlan.tabby onlink"));
    // node-1 moves into node-3's subnet: the routes flip, and only those two change.
    auto ch = n1.feed("n1.yaml", node_yaml("node-1", "198.18.1.11/24"));
    CHECK(ch.routes.size() == 2);
    remote = route_strs(n1.calc, RouteClass::RemoteBlock);
    CHECK(remote[1] == "198.19.0.128/26 via 198.18.1.13");
    CHECK(remote[0].find("onlink") != std::string::npos);
  }
}

TEST_CASE("dataplane: two pools with different modes coexist") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool("  ipipMode: Always\n") + pool_yaml("pool-v", "198.20.0.0/16", "  vxlanMode: Always\n") +
                         block_yaml("198.20.0.0/26", "node-2"));
  auto remote = route_strs(n1.calc, RouteClass::RemoteBlock);
  CHECK(remote == std::vector<std::string>{"198.19.0.64/26 via 198.18.0.12 dev tunl0 onlink",
                                           "198.19.0.128/26 via 198.18.0.13 dev tunl0 onlink",
                                           "198.20.0.0/26 via 198.19.0.64 dev vxlan.tabby onlink"});
  CHECK(n1.calc.tunnel_config().ipip.enabled);
  CHECK(n1.calc.tunnel_config().vxlan.enabled);
  // Switching pool-a to VXLAN changes exactly its two remote routes.
  auto ch = n1.feed("c.yaml", cluster_with_pool("  vxlanMode: Always\n") +
                                  pool_yaml("pool-v", "198.20.0.0/16", "  vxlanMode: Always\n") + block_yaml("198.20.0.0/26", "node-2"));
  CHECK(ch.routes.size() == 2);
  CHECK(ch.tunnels_changed);
  CHECK_FALSE(n1.calc.tunnel_config().ipip.enabled);
}

TEST_CASE("incremental: one pod add/delete touches one route and one endpoint only") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool("  vxlanMode: Always\n") +
                         "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
  dataplane::RecordingDataplane dp({"tunl0", "vxlan.tabby", "cali1", "cali2"});
  program(n1, dp);
  size_t before = dp.ops.size();
  int tunnel_applies = dp.tunnel_applies;

  auto ch = n1.feed("pod-a.yaml", wep_yaml("pod-a", "node-1", "198.19.0.1", "cali1"));
  CHECK(op_strs(ch) == std::vector<std::string>{"+local-workload 198.19.0.1/32 dev cali1"});
  CHECK_FALSE(ch.bgp_changed);
  CHECK_FALSE(ch.tunnels_changed);
  CHECK(ch.interfaces_changed);
  REQUIRE(ch.endpoints_upserted.size() == 1);
  CHECK(ch.endpoints_upserted[0].key() == "default/pod-a");
  CHECK(ch.endpoints_upserted[0].iface == "cali1");
  CHECK(ch.namespaces_upserted.empty());
  n1.calc.apply_to(dp, ch);
  REQUIRE(dp.apply().ok());
  CHECK(std::vector<std::string>(dp.ops.begin() + before, dp.ops.end()) ==
        std::vector<std::string>{"add 198.19.0.1/32 dev cali1"});
  CHECK(dp.tunnel_applies == tunnel_applies);
  CHECK(dp.workload_interfaces == std::vector<std::string>{"cali1"});

  // A remote pod: no route, one endpoint (for policy sets) without interface.
  ch = n1.feed("pod-r.yaml", wep_yaml("pod-r", "node-2", "198.19.0.66", "cali9"));
  CHECK(ch.routes.empty());
  CHECK_FALSE(ch.interfaces_changed);
  REQUIRE(ch.endpoints_upserted.size() == 1);
  CHECK(ch.endpoints_upserted[0].iface.empty());

  // Label change: endpoint only.
  ch = n1.feed("pod-a.yaml", wep_yaml("pod-a", "node-1", "198.19.0.1", "cali1", "app: db"));
  CHECK(ch.routes.empty());
  CHECK(ch.endpoints_upserted.size() == 1);

  before = dp.ops.size();
  ch = n1.drop("pod-a.yaml");
  CHECK(op_strs(ch) == std::vector<std::string>{"-local-workload 198.19.0.1/32 dev cali1"});
  CHECK(ch.endpoints_removed == std::vector<std::string>{"default/pod-a"});
  CHECK_FALSE(ch.bgp_changed);
  n1.calc.apply_to(dp, ch);
  REQUIRE(dp.apply().ok());
  CHECK(std::vector<std::string>(dp.ops.begin() + before, dp.ops.end()) ==
        std::vector<std::string>{"del 198.19.0.1/32 dev cali1"});
  CHECK(n1.calc.take_changes().empty());
}

TEST_CASE("problems: a block of a node without an address is listed until the node has one or the block goes") {
  Node n1("node-1");
  auto unrouted = [&] {
    size_t c = 0;
    for (const auto& p : n1.calc.problems())
      if (p.message.find("not routed") != std::string::npos) ++c;
    return c;
  };
  n1.feed("c.yaml", cluster_with_pool(""));
  CHECK(unrouted() == 0);
  n1.feed("b.yaml", block_yaml("198.19.1.0/26", "node-9"));  // no such node
  CHECK(unrouted() == 1);
  CHECK(unrouted() == 1);  // asked again: the same answer
  n1.feed("n9.yaml", node_yaml("node-9", "198.18.0.19/24"));
  CHECK(unrouted() == 0);
  n1.drop("n9.yaml");
  CHECK(unrouted() == 1);
  n1.drop("b.yaml");
  CHECK(unrouted() == 0);
}

TEST_CASE("take_changes(false): no policy inputs in the change set; endpoints() and program_full still have them") {
  Node n1("node-1");
  ManifestTracker& t = n1.tracker;
  auto feed = [&](const std::string& src, const std::string& yaml) {
    for (const auto& e : t.update_source(src, yaml)) (void)n1.calc.apply(e);
    return n1.calc.take_changes(false);
  };
  auto ch = feed("c.yaml", cluster_with_pool("") + "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
  CHECK(ch.namespaces_upserted.empty());
  ch = feed("pod-a.yaml", wep_yaml("pod-a", "node-1", "198.19.0.1", "cali1"));
  CHECK(op_strs(ch) == std::vector<std::string>{"+local-workload 198.19.0.1/32 dev cali1"});
  CHECK(ch.endpoints_upserted.empty());
  REQUIRE(n1.calc.endpoints().size() == 1);
  CHECK(n1.calc.endpoints()[0].key() == "default/pod-a");
  CHECK(n1.calc.namespaces().size() == 1);
  policy::PolicyCompiler pc;
  n1.calc.program_full(pc);
  CHECK(pc.endpoint_count() == 1);
  for (const auto& e : t.remove_source("pod-a.yaml")) (void)n1.calc.apply(e);
  ch = n1.calc.take_changes(false);
  CHECK(op_strs(ch) == std::vector<std::string>{"-local-workload 198.19.0.1/32 dev cali1"});
  CHECK(ch.endpoints_removed.empty());
  CHECK(n1.calc.endpoints().empty());
  // Later change sets with policy carry only what changed since.
  ch = n1.feed("pod-b.yaml", wep_yaml("pod-b", "node-1", "198.19.0.2", "cali2"));
  REQUIRE(ch.endpoints_upserted.size() == 1);
  CHECK(ch.endpoints_upserted[0].key() == "default/pod-b");
}

TEST_CASE("incremental: a node joining adds its block route and VTEP; leaving removes them") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool("  vxlanMode: Always\n"));
  auto ch = n1.feed("n4.yaml", node_yaml("node-4", "198.18.0.14/24") + block_yaml("198.19.0.192/26", "node-4"));
  CHECK(op_strs(ch) == std::vector<std::string>{"+remote-block 198.19.0.192/26 via 198.19.0.192 dev vxlan.tabby onlink"});
  CHECK(ch.tunnels_changed);
  CHECK(ch.bgp_changed);  // new mesh peer
  CHECK(n1.calc.tunnel_config().vteps.size() == 3);
  ch = n1.drop("n4.yaml");
  CHECK(op_strs(ch) == std::vector<std::string>{"-remote-block 198.19.0.192/26 via 198.19.0.192 dev vxlan.tabby onlink"});
  CHECK(n1.calc.tunnel_config().vteps.size() == 2);
  CHECK(n1.calc.speaker_config().peers.size() == 2);
}

TEST_CASE("policy inputs: pods, endpoints and namespaces merge") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  auto ch = n1.feed("k8s.yaml", R"(apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 198.19.0.70}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
)");
  REQUIRE(ch.namespaces_upserted.size() == 1);
  CHECK(ch.namespaces_upserted[0].labels.at("team") == "a");
  REQUIRE(ch.endpoints_upserted.size() == 1);
  CHECK(ch.endpoints_upserted[0].ips[0].str() == "198.19.0.70");
  CHECK(ch.endpoints_upserted[0].ports[0].port == 8080);
  REQUIRE(ch.policies_upserted.size() == 1);
  CHECK(ch.policies_upserted[0].id() == "knp.shop.deny");
  policy::PolicyCompiler pc;
  Calc::apply_to(pc, ch);
  CHECK(pc.endpoint_count() == 1);
  CHECK(pc.policy_count() == 1);
  ch = n1.drop("k8s.yaml");
  CHECK(ch.policies_removed == std::vector<std::string>{"knp.shop.deny"});
  CHECK(ch.endpoints_removed == std::vector<std::string>{"shop/web-1"});
  CHECK(ch.namespaces_removed == std::vector<std::string>{"shop"});
}

TEST_CASE("policy inputs: IPv6 addresses of Pods (podIPs) and WorkloadEndpoints (ipNetworks) reach the policy sets") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  auto ch = n1.feed("k8s.yaml", R"(apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: node-2}
status: {podIP: 198.19.0.70, podIPs: [{ip: 198.19.0.70}, {ip: "2001:db8:19::46"}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--2-k8s-db--1-eth0, namespace: shop, labels: {app: web}}
spec: {node: node-2, pod: db-1, interfaceName: cali2, ipNetworks: [198.19.0.71/32, "2001:db8:19::47/128"]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: from-web}
spec:
  selector: all()
  ingress: [{action: Allow, source: {selector: app == 'web'}}]
)");
  REQUIRE(ch.endpoints_upserted.size() == 2);
  policy::PolicyCompiler pc;
  Calc::apply_to(pc, ch);
  std::string full = pc.full_script();
  std::string v6set;
  for (size_t at = full.find("  set s6-"); at != std::string::npos; at = full.find("  set s6-", at + 1))
    v6set += full.substr(at, full.find('\n', at) - at) + "\n";
  CHECK(v6set.find("elements = { 2001:db8:19::46, 2001:db8:19::47 }") != std::string::npos);
  CHECK(full.find("elements = { 198.19.0.70, 198.19.0.71 }") != std::string::npos);
}

TEST_CASE("policy inputs: Tier resources reach the compiler; a tier's order change reorders endpoint lists") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  auto ch = n1.feed("tiers.yaml", R"(apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: app}
spec: {order: 200, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.deny}
spec: {tier: security, selector: all(), ingress: [{action: Deny, source: {selector: bad == 'true'}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: app.allow}
spec: {tier: app, selector: all(), ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-a-eth0, namespace: shop}
spec: {node: node-1, pod: a, interfaceName: cali1, ipNetworks: [198.19.0.5/32]}
)");
  REQUIRE(ch.tiers_upserted.size() == 2);
  policy::PolicyCompiler pc;
  Calc::apply_to(pc, ch);
  REQUIRE(pc.find_tier("app"));
  CHECK(pc.find_tier("app")->default_action == policy::Action::Pass);
  auto eps = pc.endpoint_policies();
  REQUIRE(eps.size() == 1);
  CHECK(eps[0].ingress == std::vector<std::string>{"gnp.security.deny", "gnp.app.allow"});
  ch = n1.feed("app-tier.yaml", "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: app}\n"
                                "spec: {order: 50}\n");
  Calc::apply_to(pc, ch);
  CHECK(pc.endpoint_policies()[0].ingress == std::vector<std::string>{"gnp.app.allow", "gnp.security.deny"});
  ch = n1.drop("app-tier.yaml");
  CHECK(ch.tiers_removed == std::vector<std::string>{"app"});
  Calc::apply_to(pc, ch);
  CHECK(pc.find_tier("app") == nullptr);
}

// ======================================================================== validation and last good state
TEST_CASE("overlapping enabled pools: the newcomer is rejected naming both, readmitted when fixed") {
  Node n1("node-1");
  n1.feed("a.yaml", kThreeNodes + pool_yaml("pool-a", "198.19.0.0/16"));
  n1.feed("b.yaml", pool_yaml("pool-b", "198.19.128.0/17", "  vxlanMode: Always\n"));
  REQUIRE(n1.errors.size() == 1);
  CHECK(n1.errors[0] == "b.yaml: IPPool pool-b: spec.cidr: 198.19.128.0/17 overlaps IPPool pool-a (198.19.0.0/16)");
  REQUIRE(n1.calc.pools().size() == 1);
  CHECK(n1.calc.pools()[0].name == "pool-a");
  auto probs = n1.calc.problems();
  CHECK(std::any_of(probs.begin(), probs.end(), [](const CalcProblem& p) { return p.object == "IPPool pool-b"; }));
  // A disabled pool may overlap.
  n1.errors.clear();
  n1.feed("b.yaml", pool_yaml("pool-b", "198.19.128.0/17", "  disabled: true\n"));
  CHECK(n1.errors.empty());
  CHECK(n1.calc.pools().size() == 2);
  // Re-enabling it is rejected again; the disabled version stays in force.
  n1.feed("b.yaml", pool_yaml("pool-b", "198.19.128.0/17"));
  CHECK(n1.errors.size() == 1);
  CHECK(n1.calc.pools()[1].pool.disabled);
  // Removing pool-a readmits pool-b's latest version.
  n1.feed("a.yaml", kThreeNodes);
  REQUIRE(n1.calc.pools().size() == 1);
  CHECK(n1.calc.pools()[0].name == "pool-b");
  CHECK_FALSE(n1.calc.pools()[0].pool.disabled);
}

TEST_CASE("outgoing NAT pools: every pool (disabled too) is a pod network, natOutgoing ones are masqueraded") {
  auto P = [](const char* s) { return *Prefix::parse(s); };
  Node n1("node-1");
  auto ch = n1.feed("a.yaml", kThreeNodes + pool_yaml("pool-a", "198.19.0.0/16", "  natOutgoing: true\n") +
                                  pool_yaml("pool-b", "198.20.0.0/16") +
                                  pool_yaml("pool-c", "10.0.0.0/8", "  disabled: true\n  natOutgoing: true\n") +
                                  pool_yaml("pool-6", "fd00:10::/48", "  natOutgoing: true\n"));
  REQUIRE(n1.errors.empty());
  CHECK(ch.nat_pools_changed);
  const auto& np = n1.calc.nat_outgoing_pools();
  // Name order; a disabled pool is a pod network and, with natOutgoing, a masqueraded source too (Calico).
  CHECK(np.pools == std::vector<Prefix>{P("fd00:10::/48"), P("198.19.0.0/16"), P("198.20.0.0/16"), P("10.0.0.0/8")});
  CHECK(np.masquerade == std::vector<Prefix>{P("fd00:10::/48"), P("198.19.0.0/16"), P("10.0.0.0/8")});
  // An unrelated change: not reported as a pool change.
  ch = n1.feed("n.yaml", node_yaml("node-4", "198.18.0.14/24"));
  CHECK_FALSE(ch.nat_pools_changed);
  // Flipping the flag is a change.
  ch = n1.feed("a.yaml", kThreeNodes + pool_yaml("pool-a", "198.19.0.0/16") + pool_yaml("pool-b", "198.20.0.0/16") +
                             pool_yaml("pool-c", "10.0.0.0/8", "  disabled: true\n  natOutgoing: true\n") +
                             pool_yaml("pool-6", "fd00:10::/48", "  natOutgoing: true\n"));
  CHECK(ch.nat_pools_changed);
  CHECK(n1.calc.nat_outgoing_pools().masquerade == std::vector<Prefix>{P("fd00:10::/48"), P("10.0.0.0/8")});
  // A rejected (overlapping) pool counts for neither set.
  n1.feed("b.yaml", pool_yaml("pool-d", "198.19.128.0/17", "  natOutgoing: true\n"));
  CHECK(n1.errors.size() == 1);
  CHECK(n1.calc.nat_outgoing_pools().pools.size() == 4);
  CHECK(n1.calc.nat_outgoing_pools().masquerade.size() == 2);
}

// The pure helper alone.
TEST_CASE("nat_outgoing_pools from pool views") {
  IpPool a, b;
  a.cidr = *Prefix::parse("198.19.0.0/16");
  a.nat_outgoing = true;
  b.cidr = *Prefix::parse("198.20.0.0/16");
  b.disabled = true;
  auto np = nat_outgoing_pools({{"a", a}, {"b", b}});
  CHECK(np.pools == std::vector<Prefix>{a.cidr, b.cidr});
  CHECK(np.masquerade == std::vector<Prefix>{a.cidr});
  CHECK(nat_outgoing_pools({}).pools.empty());
}

TEST_CASE("tunnel block: a node whose pools use a tunnel claims a block before any pod") {
  Node n1("node-1");
  // No tunnel: nothing to claim.
  n1.feed("a.yaml", kThreeNodes + pool_yaml("a-plain", "198.19.0.0/16"));
  CHECK_FALSE(n1.calc.tunnel_block_to_claim());
  // A VXLAN pool for zone b only, node-1 is in zone a: still nothing.
  n1.feed("b.yaml", pool_yaml("b-vx", "198.20.0.0/16", "  vxlanMode: Always\n  nodeSelector: zone == 'b'\n"));
  CHECK_FALSE(n1.calc.tunnel_block_to_claim());
  // One that matches: the block the node's first pod would get (the first pool by
  // name, a-plain, even though only c-vx uses the tunnel).
  n1.feed("c.yaml", pool_yaml("c-vx", "198.21.0.0/16", "  vxlanMode: Always\n"));
  auto b = n1.calc.tunnel_block_to_claim();
  REQUIRE(b);
  CHECK(b->block.str() == "198.19.0.0/26");
  CHECK(b->pool == "a-plain");
  CHECK(b->block == n1.calc.plan_ip("node-1", "default/p", IpFamily::V4)->block);
  // Taken by node-2 meanwhile: the next one.
  n1.feed("d.yaml", block_yaml("198.19.0.0/26", "node-2"));
  b = n1.calc.tunnel_block_to_claim();
  REQUIRE(b);
  CHECK(b->block.str() == "198.19.0.64/26");
  // Claimed: the node's VTEP is the block's first address, nothing more to claim,
  // and the first pod takes the block's next address.
  n1.feed("e.yaml", block_yaml("198.19.0.64/26", "node-1"));
  CHECK_FALSE(n1.calc.tunnel_block_to_claim());
  CHECK(n1.calc.tunnel_address("node-1", true)->str() == "198.19.0.64");
  CHECK(n1.calc.tunnel_config().vxlan.tunnel_address->str() == "198.19.0.64");
  CHECK(n1.calc.plan_ip("node-1", "default/p", IpFamily::V4)->ip.str() == "198.19.0.65");
  // Any IPv4 block already gives the node its tunnel address (its pods' block).
  Node n2("node-2");
  n2.feed("a.yaml", kThreeNodes + pool_yaml("c-vx", "198.21.0.0/16", "  ipipMode: Always\n") +
                        block_yaml("198.21.0.0/26", "node-2"));
  CHECK_FALSE(n2.calc.tunnel_block_to_claim());
  // A Node with its own ipv4IPIPTunnelAddr needs no block for IPIP.
  Node n3("node-3");
  n3.feed("a.yaml", node_yaml("node-3", "198.18.0.13/24", "    ipv4IPIPTunnelAddr: 198.21.9.9\n") +
                        pool_yaml("c-ipip", "198.21.0.0/16", "  ipipMode: Always\n"));
  CHECK_FALSE(n3.calc.tunnel_block_to_claim());
  // No IPv4 address for the node yet (not registered): wait.
  Node n4("node-4");
  n4.feed("a.yaml", kThreeNodes + pool_yaml("c-vx", "198.21.0.0/16", "  vxlanMode: Always\n"));
  CHECK_FALSE(n4.calc.tunnel_block_to_claim());
  // Disabled tunnel pools are not claimed from.
  Node n5("node-1");
  n5.feed("a.yaml", kThreeNodes + pool_yaml("c-vx", "198.21.0.0/16", "  vxlanMode: Always\n  disabled: true\n"));
  CHECK_FALSE(n5.calc.tunnel_block_to_claim());
}

TEST_CASE("a bad manifest leaves the last good state") {
  Node n1("node-1");
  std::string good = cluster_with_pool("  ipipMode: Always\n");
  n1.feed("c.yaml", good);
  dataplane::RecordingDataplane dp({"tunl0"});
  auto before = program(n1, dp);
  auto bgp_before = n1.calc.speaker_config();

  // Invalid CIDR in the pool: the pool keeps its last good version; nothing else is
  // deleted although the file now holds one fewer valid object.
  std::string bad = good;
  bad.replace(bad.find("cidr: 198.19.0.0/16"), 19, "cidr: 198.19.0.0/33");
  auto ch = n1.feed("c.yaml", bad);
  REQUIRE(n1.errors.size() == 1);
  CHECK(n1.errors[0] == "c.yaml (document 4): IPPool pool-a: spec.cidr: '198.19.0.0/33' is not a CIDR");
  CHECK(ch.empty());
  // YAML syntax error: nothing changes.
  n1.errors.clear();
  ch = n1.feed("c.yaml", good + "key: [unclosed\n");
  REQUIRE(n1.errors.size() == 1);
  CHECK(n1.errors[0].starts_with("c.yaml: YAML syntax error"));
  CHECK(ch.empty());
  // Unknown kind in an otherwise good file: reported, nothing deleted.
  n1.errors.clear();
  ch = n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") +
                             "apiVersion: projectcalico.org/v3\nkind: Felix\nmetadata: {name: x}\n");
  CHECK(n1.errors.size() == 1);
  CHECK(ch.empty());
  n1.calc.apply_to(dp, ch);
  REQUIRE(dp.apply().ok());
  CHECK(dp.kernel_dump() == before);
  CHECK(n1.calc.speaker_config() == bgp_before);
  // Fixing the file applies the change.
  n1.errors.clear();
  ch = n1.feed("c.yaml", cluster_with_pool(""));
  CHECK(n1.errors.empty());
  CHECK(ch.routes.size() == 2);
}

TEST_CASE("block affinities: overlap rejected; remove source readmits") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  n1.feed("dup.yaml", "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: other}\n"
                      "spec: {cidr: 198.19.0.64/27, node: node-3}\n");
  REQUIRE(n1.errors.size() == 1);
  CHECK(n1.errors[0] ==
        "dup.yaml: BlockAffinity other: spec.cidr: 198.19.0.64/27 overlaps BlockAffinity 198-19-0-64-26 (198.19.0.64/26, node node-2)");
  CHECK(*n1.calc.block_owner(*Prefix::parse("198.19.0.64/26")) == "node-2");
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                        node_yaml("node-3", "198.18.0.13/24") + pool_yaml("pool-a", "198.19.0.0/16") +
                        block_yaml("198.19.0.0/26", "node-1"));
  CHECK(*n1.calc.block_owner(*Prefix::parse("198.19.0.64/27")) == "node-3");
}

// ======================================================================== learned routes
TEST_CASE("BGP-learned routes: installed when no block covers them, ECMP, disagreements reported") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  auto ip = [](const char* s) { return *IpAddress::parse(s); };
  n1.calc.set_learned_routes({{*Prefix::parse("0.0.0.0/0"), {ip("198.18.0.253"), ip("198.18.0.254")}, false},
                              {*Prefix::parse("198.19.0.64/26"), {ip("198.18.0.99")}, false},
                              {*Prefix::parse("198.19.0.5/32"), {ip("198.18.0.12")}, false},
                              {*Prefix::parse("203.0.113.0/24"), {ip("198.18.0.1")}, true}});
  CHECK(op_strs(take_all(n1.calc)) == std::vector<std::string>{
                           "+static 0.0.0.0/0 nexthop via 198.18.0.253 weight 1 nexthop via 198.18.0.254 weight 1"});
  auto probs = n1.calc.problems();
  CHECK(std::any_of(probs.begin(), probs.end(), [](const CalcProblem& p) {
    return p.message == "BGP route for block 198.19.0.64/26 via 198.18.0.99 disagrees with its owner node node-2 "
                        "(198.18.0.12); the datastore's owner is used";
  }));
  // A block claimed later takes over a learned route inside it.
  n1.calc.set_learned_routes({{*Prefix::parse("198.19.1.0/26"), {ip("198.18.0.12")}, false},
                              {*Prefix::parse("198.19.1.0/24"), {ip("198.18.0.12")}, false}});
  CHECK(take_all(n1.calc).size() == 2);
  REQUIRE(n1.calc.upsert(parse_one(block_yaml("198.19.1.0/26", "node-2"))).ok());
  CHECK(op_strs(take_all(n1.calc)) ==
        std::vector<std::string>{"-static 198.19.1.0/26 via 198.18.0.12", "+remote-block 198.19.1.0/26 via 198.18.0.12"});
  CHECK(n1.calc.routes(RouteClass::Static).size() == 2);  // default route and the /24 stay
  n1.calc.set_learned_routes({{*Prefix::parse("0.0.0.0/0"), {}, false}, {*Prefix::parse("198.19.1.0/24"), {}, false}});
  auto ops = take_all(n1.calc);
  CHECK(ops.size() == 2);
  CHECK(ops[0].remove);
  CHECK(n1.calc.routes(RouteClass::Static).empty());
}

TEST_CASE("BGP-learned routes: next-hop changes replace, a block that goes away gives the route back, counts") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  auto ip = [](const char* s) { return *IpAddress::parse(s); };
  auto pfx = [](const char* s) { return *Prefix::parse(s); };
  // Three prefixes sharing one next-hop set, one with its own.
  n1.calc.set_learned_routes({{pfx("203.0.113.0/24"), {ip("198.18.0.1")}, false},
                              {pfx("203.0.114.0/24"), {ip("198.18.0.1")}, false},
                              {pfx("198.19.2.0/24"), {ip("198.18.0.1")}, false},
                              {pfx("203.0.115.0/24"), {ip("198.18.0.2"), ip("198.18.0.1")}, false}});
  CHECK(take_all(n1.calc).size() == 4);
  CHECK(n1.calc.route_count(RouteClass::Static) == 4);
  CHECK(n1.calc.has_route(RouteClass::Static, pfx("203.0.114.0/24")));
  CHECK_FALSE(n1.calc.has_route(RouteClass::Static, pfx("203.0.116.0/24")));
  // Blocks 198.19.0.0/26, .64/26, .128/26: prefixes inside one are covered, those
  // between or after them (or larger) are not.
  n1.calc.set_learned_routes({{pfx("198.19.0.70/32"), {ip("198.18.0.1")}, false},
                              {pfx("198.19.0.128/27"), {ip("198.18.0.1")}, false},
                              {pfx("198.19.0.192/27"), {ip("198.18.0.1")}, false},
                              {pfx("198.19.0.0/25"), {ip("198.18.0.1")}, false},
                              {pfx("198.18.255.255/32"), {ip("198.18.0.1")}, false}});
  auto strs = op_strs(take_all(n1.calc));  // in the order the speaker reported them
  std::sort(strs.begin(), strs.end());
  CHECK(strs == std::vector<std::string>{"+static 198.18.255.255/32 via 198.18.0.1", "+static 198.19.0.0/25 via 198.18.0.1",
                                        "+static 198.19.0.192/27 via 198.18.0.1"});
  n1.calc.set_learned_routes({{pfx("198.19.0.70/32"), {}, false},
                              {pfx("198.19.0.128/27"), {}, false},
                              {pfx("198.19.0.192/27"), {}, false},
                              {pfx("198.19.0.0/25"), {}, false},
                              {pfx("198.18.255.255/32"), {}, false}});
  CHECK(take_all(n1.calc).size() == 3);
  // A new next hop: one replace (an add of the new route), nothing removed.
  n1.calc.set_learned_routes({{pfx("203.0.114.0/24"), {ip("198.18.0.3")}, false}});
  CHECK(op_strs(take_all(n1.calc)) == std::vector<std::string>{"+static 203.0.114.0/24 via 198.18.0.3"});
  // The same best route again: nothing to do.
  n1.calc.set_learned_routes({{pfx("203.0.114.0/24"), {ip("198.18.0.3")}, false}});
  CHECK(take_all(n1.calc).empty());
  // Only wrong-family next hops: the route goes (as a withdrawal does).
  n1.calc.set_learned_routes({{pfx("203.0.113.0/24"), {ip("2001:db8::1")}, false}});
  CHECK(op_strs(take_all(n1.calc)) == std::vector<std::string>{"-static 203.0.113.0/24 via 198.18.0.1"});
  CHECK(n1.calc.route_count(RouteClass::Static) == 3);
  // A block inside a learned prefix does not cover it; a block equal to one takes it
  // over, and gives it back when the block goes away.
  auto blk = parse_one(block_yaml("198.19.2.0/24", "node-2"));
  REQUIRE(n1.calc.upsert(blk).ok());
  CHECK(op_strs(take_all(n1.calc)) ==
        std::vector<std::string>{"-static 198.19.2.0/24 via 198.18.0.1", "+remote-block 198.19.2.0/24 via 198.18.0.12"});
  n1.calc.remove(blk.key);
  CHECK(op_strs(take_all(n1.calc)) ==
        std::vector<std::string>{"-remote-block 198.19.2.0/24 via 198.18.0.12", "+static 198.19.2.0/24 via 198.18.0.1"});
  auto all = n1.calc.routes(RouteClass::Static);
  REQUIRE(all.size() == 3);
  CHECK(all[2].str() == "203.0.115.0/24 nexthop via 198.18.0.1 weight 1 nexthop via 198.18.0.2 weight 1");
  // Withdraw everything: every route goes, lookups agree.
  n1.calc.set_learned_routes({{pfx("203.0.114.0/24"), {}, false},
                              {pfx("198.19.2.0/24"), {}, false},
                              {pfx("203.0.115.0/24"), {}, false},
                              {pfx("203.0.113.0/24"), {}, false}});
  CHECK(take_all(n1.calc).size() == 3);
  CHECK(n1.calc.route_count(RouteClass::Static) == 0);
  CHECK(n1.calc.routes(RouteClass::Static).empty());
  CHECK_FALSE(n1.calc.has_route(RouteClass::Static, pfx("203.0.115.0/24")));
}

TEST_CASE("BGP-learned routes: a whole table at once (the take walks the flags) gives the same edits as a few") {
  Node n1("node-1");
  n1.feed("c.yaml", cluster_with_pool(""));
  auto ip = [](const char* s) { return *IpAddress::parse(s); };
  std::vector<bgp::BestRouteChange> table;
  for (uint32_t i = 0; i < 6000; ++i)  // out of order on purpose: every third one goes to the overflow
    table.push_back({Prefix::from_v4(0x0A000000u + ((i * 7919u) % 6000u) * 256u, 24), {ip("198.18.0.7")}, false});
  table.push_back({*Prefix::parse("198.19.0.64/26"), {ip("198.18.0.12")}, false});  // a block: not installed
  n1.calc.set_learned_routes(table);
  auto ops = take_all(n1.calc);
  CHECK(ops.size() == 6000);
  CHECK(n1.calc.route_count(RouteClass::Static) == 6000);
  CHECK(n1.calc.routes(RouteClass::Static).size() == 6000);
  // Withdraw two thirds (again more than a sixteenth: a walk), then one (a list).
  std::vector<bgp::BestRouteChange> gone;
  for (uint32_t i = 0; i < 6000; ++i)
    if (i % 3) gone.push_back({Prefix::from_v4(0x0A000000u + i * 256u, 24), {}, false});
  n1.calc.set_learned_routes(gone);
  ops = take_all(n1.calc);
  CHECK(ops.size() == 4000);
  CHECK(std::all_of(ops.begin(), ops.end(), [](const RouteOp& o) { return o.remove; }));
  CHECK(n1.calc.route_count(RouteClass::Static) == 2000);
  n1.calc.set_learned_routes({{Prefix::from_v4(0x0A000000u, 24), {}, false}});
  CHECK(op_strs(take_all(n1.calc)) == std::vector<std::string>{"-static 10.0.0.0/24 via 198.18.0.7"});
  auto left = n1.calc.routes(RouteClass::Static);
  REQUIRE(left.size() == 1999);
  CHECK(left.front().str() == "10.0.3.0/24 via 198.18.0.7");
  CHECK(n1.calc.has_route(RouteClass::Static, *Prefix::parse("10.0.3.0/24")));
  CHECK_FALSE(n1.calc.has_route(RouteClass::Static, *Prefix::parse("10.0.4.0/24")));
}

// ======================================================================== IPAM
TEST_CASE("IPAM: block choice by pool order and nodeSelector") {
  auto pool = [](const char* cidr, int bs, const char* sel, bool disabled = false) {
    IpPool p;
    p.cidr = *Prefix::parse(cidr);
    p.block_size = bs;
    p.node_selector = *Selector::parse(sel);
    p.disabled = disabled;
    return p;
  };
  std::vector<PoolView> pools{{"a-off", pool("10.0.0.0/16", 26, "all()", true)},
                              {"b-zone", pool("10.1.0.0/24", 26, "zone == 'z1'")},
                              {"c-all", pool("10.2.0.0/25", 26, "all()")}};
  std::set<Prefix> claimed;
  auto c = choose_block(pools, {{"zone", "z1"}}, claimed, IpFamily::V4);
  REQUIRE(c);
  CHECK(c->block.str() == "10.1.0.0/26");
  CHECK(c->pool == "b-zone");
  claimed = {*Prefix::parse("10.1.0.0/26"), *Prefix::parse("10.1.0.128/26")};
  CHECK(choose_block(pools, {{"zone", "z1"}}, claimed, IpFamily::V4)->block.str() == "10.1.0.64/26");
  claimed.insert(*Prefix::parse("10.1.0.64/26"));
  claimed.insert(*Prefix::parse("10.1.0.192/26"));
  CHECK(choose_block(pools, {{"zone", "z1"}}, claimed, IpFamily::V4)->block.str() == "10.2.0.0/26");
  CHECK(choose_block(pools, {}, {}, IpFamily::V4)->block.str() == "10.2.0.0/26");
  claimed.insert(*Prefix::parse("10.2.0.0/26"));
  claimed.insert(*Prefix::parse("10.2.0.64/26"));
  CHECK_FALSE(choose_block(pools, {{"zone", "z1"}}, claimed, IpFamily::V4));
  CHECK_FALSE(choose_block(pools, {}, {}, IpFamily::V6));
  std::vector<PoolView> v6{{"six", pool("2001:db8::/120", 122, "all()")}};
  CHECK(choose_block(v6, {}, {*Prefix::parse("2001:db8::/122")}, IpFamily::V6)->block.str() == "2001:db8::40/122");
}

TEST_CASE("IPAM check and release: allocations whose pod is gone, and freeing one") {
  auto alloc_block = [](const std::string& cidr, const std::string& node, const std::string& allocs) {
    Prefix p = *Prefix::parse(cidr);
    return "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: " + block_affinity_name(p) +
           "}\nspec: {cidr: " + cidr + ", node: " + node + ", allocations: {" + allocs + "}}\n---\n";
  };
  Node n1("node-1");
  n1.feed("c.yaml", kThreeNodes + pool_yaml("pool-a", "198.19.0.0/16") +
                        alloc_block("198.19.0.0/26", "node-1",
                                    "default/a: 198.19.0.1, default/b: 198.19.0.2, default/gone: 198.19.0.3") +
                        alloc_block("198.19.0.64/26", "node-2", "default/c: 198.19.0.65, kube/old: 198.19.0.66") +
                        wep_yaml("a", "node-1", "198.19.0.1", "cali1") + wep_yaml("b", "node-1", "198.19.0.9", "cali2") +
                        wep_yaml("c", "node-2", "198.19.0.65", "cali3"));
  REQUIRE(n1.errors.empty());
  auto leaks = n1.calc.ipam_leaks();
  REQUIRE(leaks.size() == 3);
  CHECK(leaks[0].ip.str() == "198.19.0.2");
  CHECK(leaks[0].handle == "default/b");
  CHECK(leaks[0].reason == "WorkloadEndpoint default/b holds other addresses");
  CHECK(leaks[1].ip.str() == "198.19.0.3");
  CHECK(leaks[1].reason == "no WorkloadEndpoint default/gone");
  CHECK(leaks[1].node == "node-1");
  CHECK(leaks[1].block.str() == "198.19.0.0/26");
  CHECK(leaks[1].affinity == "198-19-0-0-26");
  CHECK(leaks[2].ip.str() == "198.19.0.66");
  CHECK(leaks[2].node == "node-2");

  // Releasing a leaked address: its affinity without that allocation, nobody holds it.
  auto r = n1.calc.plan_release_ip(*IpAddress::parse("198.19.0.3"));
  REQUIRE(r);
  CHECK(r->handle == "default/gone");
  CHECK(r->in_use_by.empty());
  CHECK(r->affinity.key.name == "198-19-0-0-26");
  const auto& a = std::get<BlockAffinity>(r->affinity.body);
  CHECK(a.allocations.size() == 2);
  CHECK_FALSE(a.allocations.count("default/gone"));
  // An address a live endpoint holds: the plan says who.
  r = n1.calc.plan_release_ip(*IpAddress::parse("198.19.0.1"));
  REQUIRE(r);
  CHECK(r->in_use_by == "default/a");
  // Not recorded anywhere: an error.
  CHECK_FALSE(n1.calc.plan_release_ip(*IpAddress::parse("198.19.0.40")));
  // Written back: the leak is gone.
  n1.feed("c.yaml", kThreeNodes + pool_yaml("pool-a", "198.19.0.0/16") +
                        alloc_block("198.19.0.0/26", "node-1", "default/a: 198.19.0.1, default/b: 198.19.0.2") +
                        alloc_block("198.19.0.64/26", "node-2", "default/c: 198.19.0.65, kube/old: 198.19.0.66") +
                        wep_yaml("a", "node-1", "198.19.0.1", "cali1") + wep_yaml("b", "node-1", "198.19.0.9", "cali2") +
                        wep_yaml("c", "node-2", "198.19.0.65", "cali3"));
  CHECK(n1.calc.ipam_leaks().size() == 2);
  CHECK(n1.calc.orphan_blocks().empty());

  // A node gone (its Node resource deleted): its block is an orphan; the endpoint
  // still holding one of its addresses is named.
  n1.feed("d.yaml", alloc_block("198.19.1.0/26", "node-9", "default/d: 198.19.1.1, default/e: 198.19.1.2") +
                        wep_yaml("d", "node-9", "198.19.1.1", "cali4"));
  auto orphans = n1.calc.orphan_blocks();
  REQUIRE(orphans.size() == 1);
  CHECK(orphans[0].block.str() == "198.19.1.0/26");
  CHECK(orphans[0].node == "node-9");
  CHECK(orphans[0].affinity == "198-19-1-0-26");
  CHECK(orphans[0].allocations == 2);
  CHECK(orphans[0].live_endpoints == std::vector<std::string>{"default/d"});
  n1.feed("d.yaml", alloc_block("198.19.1.0/26", "node-9", "default/d: 198.19.1.1, default/e: 198.19.1.2"));
  CHECK(n1.calc.orphan_blocks()[0].live_endpoints.empty());
  n1.feed("n.yaml", node_yaml("node-9", "198.18.0.19/24"));
  CHECK(n1.calc.orphan_blocks().empty());
}

TEST_CASE("IPAM: address choice skips only the block's first address (tunnel)") {
  Prefix b = *Prefix::parse("10.0.0.0/30");
  CHECK(block_capacity(b) == 3);
  CHECK(choose_ip(b, {})->str() == "10.0.0.1");
  std::set<IpAddress> used{*IpAddress::parse("10.0.0.1"), *IpAddress::parse("10.0.0.2")};
  CHECK(choose_ip(b, used)->str() == "10.0.0.3");  // the "broadcast" address is handed out
  used.insert(*IpAddress::parse("10.0.0.3"));
  CHECK_FALSE(choose_ip(b, used));
}

TEST_CASE("IPAM through the calculation: allocations from affinities and endpoints, new block when full") {
  Node n1("node-1");
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                         pool_yaml("pool-a", "198.19.0.0/24", "  blockSize: 30\n"));
  auto plan = n1.calc.plan_ip("node-1", "default/a", IpFamily::V4);
  REQUIRE(plan);
  CHECK(plan->claim_block);
  CHECK(plan->block.str() == "198.19.0.0/30");
  CHECK(plan->ip.str() == "198.19.0.1");
  CHECK(plan->affinity.key.str() == "BlockAffinity 198-19-0-0-30");
  // The claimer writes the affinity (with the allocation) and the CNI the endpoint.
  REQUIRE(n1.calc.upsert(plan->affinity).ok());
  REQUIRE(n1.calc.upsert(parse_one(wep_yaml("b", "node-1", "198.19.0.2", "cali2"))).ok());
  auto blocks = n1.calc.ipam_blocks("node-1");
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].pool == "pool-a");
  CHECK(blocks[0].used.size() == 2);
  CHECK(blocks[0].used.at(*IpAddress::parse("198.19.0.1")) == "default/a");
  CHECK(blocks[0].used.at(*IpAddress::parse("198.19.0.2")) == "default/b");
  plan = n1.calc.plan_ip("node-1", "default/c", IpFamily::V4);
  REQUIRE(plan);
  CHECK_FALSE(plan->claim_block);
  CHECK(plan->ip.str() == "198.19.0.3");
  CHECK(std::get<BlockAffinity>(plan->affinity.body).allocations.size() == 2);
  REQUIRE(n1.calc.upsert(plan->affinity).ok());
  // Full: the next address comes from a new block; node-2's claim is skipped.
  REQUIRE(n1.calc.upsert(parse_one(block_yaml("198.19.0.4/30", "node-2"))).ok());
  plan = n1.calc.plan_ip("node-1", "default/d", IpFamily::V4);
  REQUIRE(plan);
  CHECK(plan->claim_block);
  CHECK(plan->block.str() == "198.19.0.8/30");
  CHECK(plan->ip.str() == "198.19.0.9");
  // CNI DEL of default/a: its record goes, the address is free again.
  auto rel = n1.calc.plan_release("default/a");
  REQUIRE(rel.size() == 1);
  CHECK(std::get<BlockAffinity>(rel[0].body).allocations.count("default/a") == 0);
  REQUIRE(n1.calc.upsert(rel[0]).ok());
  CHECK(n1.calc.plan_ip("node-1", "default/f", IpFamily::V4)->ip.str() == "198.19.0.1");
  CHECK(n1.calc.plan_release("nobody").empty());
  // No IPv6 pool: a clear error.
  auto none = n1.calc.plan_ip("node-1", "default/e", IpFamily::V6);
  REQUIRE_FALSE(none);
  CHECK(none.error().message ==
        "IPAM: no free block for node node-1 in any enabled IPv6 pool whose nodeSelector matches it and whose "
        "allowedUses include Workload, and no other node's block in such a pool has a free address to borrow");
}

TEST_CASE("ManifestTracker: unchanged files produce no events; key_for matches parsed keys") {
  ManifestTracker t;
  std::string y = pool_yaml("pool-a", "198.19.0.0/16") +
                  "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n"
                  "spec: {podSelector: {}, policyTypes: [Ingress]}\n---\n" +
                  wep_yaml("pod-a", "node-1", "198.19.0.1", "cali1");
  auto ev = t.update_source("a.yaml", y);
  CHECK(ev.size() == 3);
  CHECK(t.update_source("a.yaml", y).empty());
  CHECK(t.object_count() == 3);
  for (const auto& e : ev) {
    CAPTURE(e.resource.key.str());
    const char* api = e.resource.key.kind == Kind::IPPool ? "projectcalico.org/v3"
                      : e.resource.key.kind == Kind::Policy ? "networking.k8s.io/v1"
                                                            : "tabby.dev/v1";
    const char* kind = e.resource.key.kind == Kind::IPPool ? "IPPool"
                       : e.resource.key.kind == Kind::Policy ? "NetworkPolicy"
                                                             : "WorkloadEndpoint";
    std::string ns = e.resource.key.kind == Kind::Policy ? "shop" : e.resource.key.ns;
    std::string name = e.resource.key.kind == Kind::Policy ? "deny" : e.resource.key.name;
    CHECK(key_for(api, kind, ns, name) == e.resource.key);
  }
  CHECK_FALSE(key_for("apps/v1", "Deployment", "default", "x"));
  auto del = t.remove_source("a.yaml");
  CHECK(del.size() == 3);
  CHECK(std::all_of(del.begin(), del.end(), [](const ResourceEvent& e) { return e.type == ResourceEvent::Delete; }));
  CHECK(t.object_count() == 0);
}

TEST_CASE("document streams: markers, '...' ends, syntax error lines count from the file start") {
  auto q = parse_manifests("# header\n--- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n...\n---\n"
                           "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\n# trailing comment\n",
                           "x.yaml");
  CHECK(q.resources.size() == 2);
  CHECK(q.errors.empty());
  auto p = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\n"
                           "metadata: {name: [b\n",
                           "x.yaml");
  CHECK(p.syntax_error);
  CHECK(p.resources.empty());  // a syntax error anywhere: nothing from the file is used
  REQUIRE(p.errors.size() == 1);
  CHECK(p.errors[0].message == "x.yaml: YAML syntax error at line 8, column 1: end of sequence flow not found");
  auto list = parse_manifests("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n"
                              "- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n",
                              "l.yaml");
  CHECK(list.resources.size() == 2);
}

TEST_CASE("dual stack, Kubernetes Node annotations and per-node BGPConfiguration") {
  std::string y = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-1}\nspec:\n  bgp:\n"
                  "    ipv4Address: 198.18.0.11/24\n    ipv6Address: 2001:db8::11/64\n---\n"
                  "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-2\n  labels: {zone: z2}\n  annotations:\n"
                  "    projectcalico.org/IPv4Address: 198.18.0.12/24\n    projectcalico.org/IPv6Address: 2001:db8::12/64\n"
                  "    projectcalico.org/ASNumber: '65002'\n---\n"
                  "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.node-1}\n"
                  "spec: {listenPort: 1179}\n";
  Node n1("node-1");
  n1.feed("c.yaml", y);
  const auto& s = n1.calc.speaker_config();
  CHECK(s.listen_port == 1179);
  CHECK(peer_list(s) == std::vector<std::string>{"198.18.0.12 as65002", "2001:db8::12 as65002"});
  CHECK(s.peers[1].families == std::vector<bgp::Family>{bgp::kIpv6Unicast});
  CHECK(s.peers[1].local_address->str() == "2001:db8::11");
  REQUIRE(n1.calc.node("node-2"));
  CHECK(n1.calc.node("node-2")->labels.at("zone") == "z2");
  // A Calico Node of the same name overrides the annotations.
  n1.feed("n2.yaml", node_yaml("node-2", "198.18.0.22/24", "    asNumber: 65022\n"));
  CHECK(peer_list(n1.calc.speaker_config()) == std::vector<std::string>{"198.18.0.22 as65022", "2001:db8::12 as65022"});
  CHECK(n1.calc.node("node-2")->labels.at("zone") == "z2");
  // Another node's per-node BGPConfiguration does not apply here.
  Node n2("node-2");
  n2.feed("c.yaml", y);
  CHECK(n2.calc.speaker_config().listen_port == 179);
}

TEST_CASE("no Node resource for this node: problems say so, BGP not ready") {
  Node n("node-x");
  n.feed("c.yaml", kThreeNodes);
  CHECK_FALSE(n.calc.bgp_ready());
  auto probs = n.calc.problems();
  REQUIRE_FALSE(probs.empty());
  CHECK(probs[0].message == "no Node resource for this node (node-x)");
  CHECK(n.calc.speaker_config().peers.empty());
}

TEST_CASE("deterministic: the same resources in another order give the same outputs") {
  std::string y = cluster_with_pool("  vxlanMode: CrossSubnet\n", "198.18.1.13/24") +
                  node_yaml("rr-1", "198.18.0.1/24", "    routeReflectorClusterID: 224.0.0.1\n", "rr: 'y'") +
                  "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerSelector: has(rr)}\n---\n" +
                  wep_yaml("pod-a", "node-1", "198.19.0.1", "cali1") + wep_yaml("pod-b", "node-2", "198.19.0.65", "cali2");
  auto parsed = parse_manifests(y, "c.yaml");
  REQUIRE(parsed.errors.empty());
  Calc a(CalcOptions{"node-1"}), b(CalcOptions{"node-1"});
  for (const auto& r : parsed.resources) REQUIRE(a.upsert(r).ok());
  for (auto it = parsed.resources.rbegin(); it != parsed.resources.rend(); ++it) REQUIRE(b.upsert(*it).ok());
  (void)a.take_changes();
  (void)b.take_changes();
  CHECK(a.speaker_config() == b.speaker_config());
  CHECK(a.tunnel_config() == b.tunnel_config());
  for (int c = 0; c < dataplane::kRouteClassCount; ++c)
    CHECK(a.routes(static_cast<RouteClass>(c)) == b.routes(static_cast<RouteClass>(c)));
  CHECK(a.workload_interfaces() == b.workload_interfaces());
  CHECK(a.endpoints().size() == b.endpoints().size());
}

// A List whose items all alias one node of ~180,000 nodes: each item fitted the
// per-object budget, so N items cost N budgets (300 items: ~50 s of CPU in one
// parse). The List is now measured as a whole and refused at once.
TEST_CASE("resources: a List of aliased items is measured as a whole (alias expansion bounded)") {
  std::string item = "{apiVersion: v1, kind: Namespace, metadata: {name: x}, a: &a [x, x, x, x, x, x, x, x, x, x], "
                     "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], "
                     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, "
                     "*d, *d, *d, *d]}";
  std::string list = "apiVersion: v1\nkind: List\nitems:\n- &i " + item + "\n";
  for (int i = 0; i < 300; ++i) list += "- *i\n";
  auto t0 = std::chrono::steady_clock::now();
  ParsedManifests p = parse_manifests(list, "list.yaml");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(p.resources.empty());
  REQUIRE(p.errors.size() == 1);
  CHECK(p.errors[0].message.find("list.yaml: List too large") == 0);
  CHECK(secs < 5);  // refused after one budget's worth of nodes (~0.2 s under ASan), not 300
  // One such item alone is still read (within the per-object budget).
  ParsedManifests one = parse_manifests("apiVersion: v1\nkind: List\nitems:\n- " + item + "\n", "one.yaml");
  CHECK(one.resources.size() == 1);
}

// Found by test/fuzz/k8s_wire_fuzz (reproducers k8s_wire_fuzz/repro-alias-cycle, resources_fuzz/
// repro-alias-cycle-*, policy_fuzz/repro-alias-cycle): an
// alias inside its own anchor is a cycle in yaml-cpp's node graph; the resource
// parser's alias budget walked it recursively until the stack overflowed, so one
// such document in a datastore crashed every agent reading it.
TEST_CASE("resources: an alias inside its own anchor is an error, not a stack overflow") {
  for (std::string doc : {std::string("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\nl1: &l1 [x, *l1]\n"),
                          std::string("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
                                      "spec: &s {cidr: 198.19.0.0/16, x: *s}\n"),
                          std::string("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                                      "metadata: {name: np, namespace: default}\nspec: &s {podSelector: {}, "
                                      "ingress: [{from: [*s]}]}\n")}) {
    ParsedManifests p = parse_manifests(doc, "cycle.yaml");
    CHECK(p.resources.empty());
    REQUIRE(p.errors.size() == 1);
    CHECK(p.errors[0].message.find("once YAML aliases are expanded") != std::string::npos);
  }
  CHECK(policy::parse_object("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: &m {name: a, "
                             "labels: {x: *m}}\nspec: {podSelector: {}}\n")
            .ok() == false);
}

TEST_CASE("tunnel guard input: every node's IPv4 address; nodes_changed only when a node changes") {
  Node n1("node-1");
  auto ch = n1.feed("nodes.yaml", kThreeNodes);
  CHECK(ch.nodes_changed);
  auto strs = [&] {
    std::vector<std::string> v;
    for (const auto& a : n1.calc.node_ipv4_addresses()) v.push_back(a.str());
    std::sort(v.begin(), v.end());
    return v;
  };
  CHECK(strs() == std::vector<std::string>{"198.18.0.11", "198.18.0.12", "198.18.0.13"});
  ch = n1.feed("pool.yaml", pool_yaml("p", "198.19.0.0/16"));
  CHECK_FALSE(ch.nodes_changed);
  ch = n1.feed("node-4.yaml", node_yaml("node-4", "198.18.0.14/24"));
  CHECK(ch.nodes_changed);
  CHECK(strs().size() == 4);
  ch = n1.drop("node-4.yaml");
  CHECK(ch.nodes_changed);
  CHECK(strs() == std::vector<std::string>{"198.18.0.11", "198.18.0.12", "198.18.0.13"});
  ch = n1.feed("nodes-copy.yaml", kThreeNodes);  // the same nodes again
  CHECK_FALSE(ch.nodes_changed);
}

// ---------------------------------------------------------------- BGP best routes -> kernel routes
// The one path for both agent modes (static config: the Calc holds only the
// node's config; datastore: the cluster's resources as well).
namespace {
std::vector<std::string> route_texts(const Calc& c, RouteClass cls) {
  std::vector<std::string> v;
  for (const auto& r : c.routes(cls)) v.push_back(r.str());
  return v;
}
}  // namespace

TEST_CASE("learned best routes: ECMP next hops sorted and deduplicated, wrong family and unspecified dropped") {
  CalcOptions o;
  o.node_name = "n1";
  o.cluster = false;
  o.base.router_id = *IpAddress::parse("198.18.0.1");
  Calc c(o);
  (void)c.take_changes();
  auto ip = [](const char* s) { return *IpAddress::parse(s); };
  auto pfx = [](const char* s) { return *Prefix::parse(s); };
  c.set_learned_routes({
      {pfx("10.1.0.0/24"), {ip("198.18.0.3"), ip("198.18.0.2"), ip("198.18.0.3")}, false},
      {pfx("10.2.0.0/24"), {ip("2001:db8::2"), ip("198.18.0.4")}, false},  // an IPv6 hop for IPv4: dropped
      {pfx("2001:db8:9::/48"), {ip("198.18.0.4")}, false},                // no IPv6 hop at all: no route
      {pfx("10.3.0.0/24"), {ip("0.0.0.0")}, false},                        // unspecified: no route
      {pfx("10.4.0.0/24"), {}, true},                                     // our own announcement: not a kernel route
  });
  (void)take_all(c);
  CHECK(route_texts(c, RouteClass::Static) ==
        std::vector<std::string>{"10.1.0.0/24 nexthop via 198.18.0.2 weight 1 nexthop via 198.18.0.3 weight 1",
                                 "10.2.0.0/24 via 198.18.0.4"});
  CHECK(c.problems().empty());  // without a datastore no Node resource is expected
  // Withdrawn: the route goes.
  c.set_learned_routes({{pfx("10.1.0.0/24"), {}, false}});
  auto ops = take_all(c);
  REQUIRE(ops.size() == 1);
  CHECK(ops[0].remove);
  CHECK(route_texts(c, RouteClass::Static) == std::vector<std::string>{"10.2.0.0/24 via 198.18.0.4"});
}

TEST_CASE("announced prefixes get a blackhole; a config reload that drops one removes it") {
  CalcOptions o;
  o.node_name = "n1";
  o.cluster = false;
  o.base.router_id = *IpAddress::parse("198.18.0.1");
  o.base.announcements = {{*Prefix::parse("203.0.113.0/24")}, {*Prefix::parse("2001:db8:1::/48")}};
  Calc c(o);
  (void)c.take_changes();
  CHECK(route_texts(c, RouteClass::LocalBlock) ==
        std::vector<std::string>{"blackhole 203.0.113.0/24", "blackhole 2001:db8:1::/48"});
  o.base.announcements.pop_back();
  c.set_options(o);
  auto ch = c.take_changes();
  CHECK(route_texts(c, RouteClass::LocalBlock) == std::vector<std::string>{"blackhole 203.0.113.0/24"});
  REQUIRE(ch.routes.size() == 1);
  CHECK(ch.routes[0].str().find("2001:db8:1::/48") != std::string::npos);
  CHECK(ch.routes[0].remove);
}

TEST_CASE("an announced prefix that is our block keeps one blackhole; another node's block keeps its route") {
  CalcOptions o;
  o.node_name = "node-1";
  o.base.announcements = {{*Prefix::parse("198.19.0.0/26")}, {*Prefix::parse("198.19.0.64/26")}};
  Node n("node-1");
  n.calc.set_options(o);
  n.feed("a.yaml", node_yaml("node-1", "198.18.0.1/24") + node_yaml("node-2", "198.18.0.2/24") +
                       pool_yaml("p", "198.19.0.0/16") + block_yaml("198.19.0.0/26", "node-1") +
                       block_yaml("198.19.0.64/26", "node-2"));
  CHECK(route_texts(n.calc, RouteClass::LocalBlock) == std::vector<std::string>{"blackhole 198.19.0.0/26"});
  CHECK(route_texts(n.calc, RouteClass::RemoteBlock) == std::vector<std::string>{"198.19.0.64/26 via 198.18.0.2"});
  // Our block goes (released) but we still announce the prefix: still blackholed.
  n.drop("a.yaml");
  n.feed("b.yaml", node_yaml("node-1", "198.18.0.1/24") + pool_yaml("p", "198.19.0.0/16"));
  CHECK(route_texts(n.calc, RouteClass::LocalBlock) ==
        std::vector<std::string>{"blackhole 198.19.0.0/26", "blackhole 198.19.0.64/26"});
}

// Dual stack: an IPv6 pool beside the IPv4 one gives every pod one address
// of each family; IPv6 blocks are /122 by default and routed directly to the owner
// node's IPv6 address; a local pod's IPv6 address gets a /128 host route.
TEST_CASE("dual stack: IPv6 pool /122 blocks, one address per family, routes of both families") {
  Node n1("node-1");
  const std::string v6bgp = "    ipv6Address: 2001:db8:18::11/64\n";
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24", v6bgp) +
                         node_yaml("node-2", "198.18.0.12/24", "    ipv6Address: 2001:db8:18::12/64\n") +
                         pool_yaml("pool-v4", "198.19.0.0/16") + pool_yaml("pool-v6", "2001:db8:19::/64"));
  REQUIRE(n1.errors.empty());
  CHECK(n1.calc.assigns_family("node-1", IpFamily::V4));
  CHECK(n1.calc.assigns_family("node-1", IpFamily::V6));
  auto p4 = n1.calc.plan_ip("node-1", "default/a", IpFamily::V4);
  auto p6 = n1.calc.plan_ip("node-1", "default/a", IpFamily::V6);
  REQUIRE(p4);
  REQUIRE(p6);
  CHECK(p4->block.str() == "198.19.0.0/26");
  CHECK(p6->block.str() == "2001:db8:19::/122");  // Calico's IPv6 default block size
  CHECK(p6->ip.str() == "2001:db8:19::1");
  REQUIRE(n1.calc.upsert(p4->affinity).ok());
  REQUIRE(n1.calc.upsert(p6->affinity).ok());
  // node-2's IPv6 block, and the pod's endpoint with both addresses.
  n1.feed("b2.yaml", block_yaml("2001:db8:19::40/122", "node-2"));
  n1.feed("w.yaml", wep_yaml("a", "node-1", "198.19.0.1, 2001:db8:19::1", "calia"));
  REQUIRE(n1.errors.empty());
  auto remote = route_strs(n1.calc, RouteClass::RemoteBlock);
  CHECK(std::find(remote.begin(), remote.end(), "2001:db8:19::40/122 via 2001:db8:18::12") != remote.end());
  auto local = route_strs(n1.calc, RouteClass::LocalWorkload);
  CHECK(std::find(local.begin(), local.end(), "198.19.0.1/32 dev calia") != local.end());
  CHECK(std::find(local.begin(), local.end(), "2001:db8:19::1/128 dev calia") != local.end());
  auto blackholes = route_strs(n1.calc, RouteClass::LocalBlock);
  CHECK(std::find(blackholes.begin(), blackholes.end(), "blackhole 2001:db8:19::/122") != blackholes.end());
  // Both families in `tabby ipam`'s source.
  auto blocks = n1.calc.ipam_blocks("node-1");
  REQUIRE(blocks.size() == 2);
  CHECK(blocks[0].cidr.str() == "198.19.0.0/26");
  CHECK(blocks[1].cidr.str() == "2001:db8:19::/122");
  CHECK(blocks[1].used.at(*IpAddress::parse("2001:db8:19::1")) == "default/a");
  // The next pod's IPv6 address comes from the same block.
  auto next = n1.calc.plan_ip("node-1", "default/b", IpFamily::V6);
  REQUIRE(next);
  CHECK_FALSE(next->claim_block);
  CHECK(next->ip.str() == "2001:db8:19::2");
  // The IPv6 pool disabled: its block keeps its pods, new pods get IPv4 only.
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24", v6bgp) +
                         node_yaml("node-2", "198.18.0.12/24", "    ipv6Address: 2001:db8:18::12/64\n") +
                         pool_yaml("pool-v4", "198.19.0.0/16") +
                         pool_yaml("pool-v6", "2001:db8:19::/64", "  disabled: true\n"));
  CHECK(n1.calc.assigns_family("node-1", IpFamily::V4));
  CHECK_FALSE(n1.calc.assigns_family("node-1", IpFamily::V6));
  // A node no IPv6 pool selects gets IPv4 only.
  Node n3("node-3");
  n3.feed("c.yaml", node_yaml("node-3", "198.18.0.13/24") + pool_yaml("pool-v4", "198.19.0.0/16") +
                         pool_yaml("pool-v6", "2001:db8:19::/64", "  nodeSelector: v6 == 'yes'\n"));
  CHECK(n3.calc.assigns_family("node-3", IpFamily::V4));
  CHECK_FALSE(n3.calc.assigns_family("node-3", IpFamily::V6));
}

TEST_CASE("dual stack: vxlanMode on an IPv6 pool is reported (routed directly, not tunnelled)") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  const std::string text = pool_yaml("pool-v6", "2001:db8:19::/64", "  vxlanMode: Always\n");
  auto st = feed.feed({DocEvent{{"IPPool.projectcalico.org", "", "pool-v6"}, text, "1", false, "pools.yaml"}}, calc);
  CHECK(st.rejected == 0);
  CHECK(st.upserts == 1);
  auto probs = feed.problems();
  REQUIRE(probs.size() == 1);
  CHECK(probs[0].message.find("pools.yaml") != std::string::npos);
  CHECK(probs[0].message.find("IPPool pool-v6: spec.vxlanMode: not supported by tabby") != std::string::npos);
  // The same mode on an IPv4 pool is supported: no problem.
  Calc calc4({.node_name = "node-1"});
  DocFeed feed4;
  (void)feed4.feed({DocEvent{{"IPPool.projectcalico.org", "", "pool-v4"},
                             pool_yaml("pool-v4", "198.19.0.0/16", "  vxlanMode: Always\n"), "1", false, "p4.yaml"}},
                   calc4);
  CHECK(feed4.problems().empty());
}

// IPAM garbage collection: the lease protocol and what the leader releases.
TEST_CASE("IPAM GC lease: create the first, renew our own, wait for another's, take over an expired one") {
  std::map<uint64_t, IpamLease> leases;
  auto s = next_ipam_lease_step(leases, "node-1", 1000, 500);
  CHECK(s.action == IpamLeaseStep::Action::Acquire);
  CHECK(s.lease.epoch == 1);
  CHECK(s.lease.expires_ms == 1500);
  leases[1] = {1, "node-2", 1500};  // node-2 won the create of epoch 1
  CHECK(next_ipam_lease_step(leases, "node-1", 1200, 500).action == IpamLeaseStep::Action::Wait);
  s = next_ipam_lease_step(leases, "node-2", 1200, 500);
  CHECK(s.action == IpamLeaseStep::Action::Renew);
  CHECK(s.lease.epoch == 1);
  CHECK(s.lease.expires_ms == 1700);
  // Expired: the next epoch (a create-if-absent, so one of several racing agents wins).
  s = next_ipam_lease_step(leases, "node-1", 1500, 500);
  CHECK(s.action == IpamLeaseStep::Action::Acquire);
  CHECK(s.lease.epoch == 2);
  // The highest epoch is the lease, whatever older objects remain.
  leases[2] = {2, "node-1", 2000};
  CHECK(next_ipam_lease_step(leases, "node-2", 1600, 500).action == IpamLeaseStep::Action::Wait);
  // The manifest round-trips; a broken one is an error naming the field.
  auto back = parse_ipam_lease(ipam_lease_manifest({7, "node-3", 123456789012}));
  REQUIRE(back);
  CHECK(back->epoch == 7);
  CHECK(back->holder == "node-3");
  CHECK(back->expires_ms == 123456789012);
  CHECK(ipam_lease_name(7) == "ipam-gc-7");
  auto bad = parse_ipam_lease("{spec: {epoch: 1}}");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("spec.holder") != std::string::npos);
}

TEST_CASE("IPAM GC: leaks, gone nodes' blocks and empty blocks are released after the grace period") {
  auto alloc_block = [](const std::string& cidr, const std::string& node, const std::string& allocs) {
    Prefix p = *Prefix::parse(cidr);
    return "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: " + block_affinity_name(p) +
           "}\nspec: {cidr: " + cidr + ", node: " + node + ", allocations: {" + allocs + "}}\n---\n";
  };
  Node n1("node-1");
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                         pool_yaml("pool-a", "198.19.0.0/16") +
                         // node-1: a/1 live, gone/3 leaked; its second block is empty
                         alloc_block("198.19.0.0/26", "node-1", "default/a: 198.19.0.1, default/gone: 198.19.0.3") +
                         block_yaml("198.19.0.64/26", "node-1") +
                         // node-9 does not exist: its block, with no live endpoint
                         alloc_block("198.19.1.0/26", "node-9", "default/x: 198.19.1.1") +
                         // node-8 does not exist but a pod of an existing node holds an address of its block
                         alloc_block("198.19.2.0/26", "node-8", "default/y: 198.19.2.1") +
                         // node-7 does not exist: its pod's endpoint is stale, and so is its block
                         alloc_block("198.19.3.0/26", "node-7", "default/z: 198.19.3.1") +
                         wep_yaml("a", "node-1", "198.19.0.1", "cali1") + wep_yaml("y", "node-2", "198.19.2.1", "cali2") +
                         wep_yaml("z", "node-7", "198.19.3.1", "cali4"));
  REQUIRE(n1.errors.empty());
  IpamGcMemory mem;
  auto p = n1.calc.plan_ipam_gc(mem, 10'000, 5'000);
  CHECK(p.released.empty());  // first seen now: within the grace period
  CHECK(p.pending == 5);
  p = n1.calc.plan_ipam_gc(mem, 14'999, 5'000);
  CHECK(p.released.empty());
  p = n1.calc.plan_ipam_gc(mem, 15'000, 5'000);
  CAPTURE(p.released.size());
  CHECK(p.endpoint_removals == std::vector<std::string>{"default/z"});
  CHECK(p.affinity_removals == std::vector<std::string>{"198-19-1-0-26", "198-19-3-0-26", "198-19-0-64-26"});
  // Each removal carries the block as planned from (the GC deletes only that version).
  REQUIRE(p.affinity_removal_originals.size() == p.affinity_removals.size());
  for (size_t i = 0; i < p.affinity_removals.size(); ++i) {
    CHECK(p.affinity_removal_originals[i].key.name == p.affinity_removals[i]);
    CHECK(block_affinity_name(std::get<BlockAffinity>(p.affinity_removal_originals[i].body).cidr) ==
          p.affinity_removals[i]);
  }
  REQUIRE(p.affinity_updates.size() == 1);
  CHECK(p.affinity_updates[0].key.name == "198-19-0-0-26");
  const auto& a = std::get<BlockAffinity>(p.affinity_updates[0].body);
  CHECK(a.allocations.size() == 1);
  CHECK(a.allocations.count("default/a") == 1);  // the live pod keeps its address
  REQUIRE(p.released.size() == 5);
  CHECK(p.released[0] == "WorkloadEndpoint default/z of node node-7 (gone)");
  CHECK(p.released[1] == "block 198.19.1.0/26 of node node-9 (gone; 1 allocations)");
  CHECK(p.released[2] == "block 198.19.3.0/26 of node node-7 (gone; 1 allocations)");
  CHECK(p.released[3] == "block 198.19.0.64/26 of node node-1 (empty)");
  CHECK(p.released[4] == "address 198.19.0.3 of default/gone in block 198.19.0.0/26 (no WorkloadEndpoint default/gone)");
  // A node's only block holds its tunnel address: never released as empty.
  Node n2("node-2");
  n2.feed("c.yaml", node_yaml("node-2", "198.18.0.12/24") + pool_yaml("pool-a", "198.19.0.0/16") +
                         block_yaml("198.19.0.0/26", "node-2"));
  IpamGcMemory m0;
  (void)n2.calc.plan_ipam_gc(m0, 0, 0);
  CHECK(n2.calc.plan_ipam_gc(m0, 1, 0).affinity_removals.empty());
  // Garbage that stops being garbage starts its grace period again.
  IpamGcMemory m2;
  n1.feed("w2.yaml", wep_yaml("gone", "node-1", "198.19.0.3", "cali3"));
  (void)n1.calc.plan_ipam_gc(m2, 0, 5'000);
  CHECK(m2.first_seen_ms.size() == 4);  // node-7's endpoint and block, node-9's block, node-1's empty block
  n1.drop("w2.yaml");
  auto q = n1.calc.plan_ipam_gc(m2, 6'000, 5'000);
  CHECK(q.affinity_updates.empty());  // the leak is new: its grace period starts now
  CHECK(q.affinity_removals.size() == 3);
}

TEST_CASE("BGPFilter: parsed per family, resolved from BGPPeer spec.filters in order; unknown names fail closed") {
  const std::string filters =
      "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: only-default}\nspec:\n"
      "  importV4:\n  - {action: Accept, matchOperator: Equal, cidr: 0.0.0.0/0}\n  - {action: Reject}\n"
      "  exportV4:\n  - {action: Reject, matchOperator: In, cidr: 198.19.0.0/16, prefixLength: {max: 26}}\n"
      "---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: v6}\nspec:\n"
      "  importV6:\n  - {action: Reject, matchOperator: NotIn, cidr: '2001:db8::/32'}\n---\n";
  auto f = std::get<BgpFilterRes>(parse_one(filters.substr(0, filters.find("---"))).body);
  REQUIRE(f.import_filter.rules.size() == 2);
  CHECK(f.import_filter.rules[1].v4);
  CHECK_FALSE(f.import_filter.rules[1].v6);  // an importV4 catch-all does not touch IPv6
  CHECK(f.import_filter.rule_names[1] == "BGPFilter only-default importV4[1]");
  REQUIRE(f.export_filter.rules.size() == 1);
  CHECK(*f.export_filter.rules[0].max_len == 26);

  const std::string peer = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
                           "spec: {peerIP: 198.18.0.254, asNumber: 65001, filters: [only-default, v6]}\n";
  Node n1("node-1");
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + filters + peer);
  CHECK(n1.errors.empty());
  const auto& s = n1.calc.speaker_config();
  REQUIRE(s.peers.size() == 1);
  const auto& in = s.peers[0].import_filter;
  CHECK_FALSE(in.unresolved);
  REQUIRE(in.rules.size() == 3);  // only-default's two, then v6's one
  CHECK(bgp::evaluate_filter(in, Prefix::parse("0.0.0.0/0").value(), nullptr, true).accepted);
  CHECK_FALSE(bgp::evaluate_filter(in, Prefix::parse("203.0.113.0/24").value(), nullptr, true).accepted);
  CHECK_FALSE(bgp::evaluate_filter(in, Prefix::parse("2001:db9::/32").value(), nullptr, true).accepted);
  CHECK(bgp::evaluate_filter(in, Prefix::parse("2001:db8:1::/48").value(), nullptr, true).accepted);
  CHECK(s.peers[0].export_filter.rules.rules.size() == 1);
  for (const auto& p : n1.calc.problems()) CHECK(p.message.find("BGPFilter") == std::string::npos);

  // A name that does not exist: both directions unresolved, a problem names it.
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + filters +
                        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
                        "spec: {peerIP: 198.18.0.254, asNumber: 65001, filters: [only-default, nope]}\n");
  const auto& s2 = n1.calc.speaker_config();
  REQUIRE(s2.peers.size() == 1);
  CHECK(s2.peers[0].import_filter.unresolved);
  CHECK(s2.peers[0].export_filter.rules.unresolved);
  bool named = false;
  for (const auto& p : n1.calc.problems())
    named |= p.message.find("BGPPeer tor: spec.filters: BGPFilter 'nope' not found") != std::string::npos;
  CHECK(named);

  // Errors name the field.
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: x}\nspec:\n"
                    "  importV4: [{action: Accept, cidr: 10.0.0.0/8}]\n", "f.yaml") ==
        "f.yaml: BGPFilter x: spec.importV4[0].matchOperator: cidr and matchOperator go together");
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: x}\nspec:\n"
                    "  importV6: [{action: Accept, matchOperator: In, cidr: 10.0.0.0/8}]\n", "f.yaml") ==
        "f.yaml: BGPFilter x: spec.importV6[0].cidr: must be an IPv6 CIDR in importV6");
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: x}\nspec:\n"
                    "  exportV4: [{action: Maybe}]\n", "f.yaml") ==
        "f.yaml: BGPFilter x: spec.exportV4[0].action: must be Accept or Reject");
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: x}\nspec:\n"
                    "  importV4: [{action: Accept, matchOperator: In, cidr: 10.0.0.0/8, prefixLength: {min: 4}}]\n",
                    "f.yaml") ==
        "f.yaml: BGPFilter x: spec.importV4[0]: prefixLength.min 4 is shorter than the cidr's /8");
}

TEST_CASE("policy inputs: service accounts label their pods' endpoints; network sets reach the compiler") {
  Node n("node-1");
  const std::string pods =
      "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: x, labels: {app: web}}\n"
      "spec: {nodeName: node-1, serviceAccountName: frontend}\nstatus: {podIP: 198.19.0.5}\n---\n"
      "apiVersion: v1\nkind: Pod\nmetadata: {name: job, namespace: x}\n"
      "spec: {nodeName: node-2, serviceAccount: batch}\nstatus: {podIP: 198.19.0.6}\n";
  const std::string sa = [](const std::string& tier) {
    return "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: frontend, namespace: x, labels: {tier: " + tier +
           "}}\n";
  }("front");
  auto ch = n.feed("pods.yaml", pods);
  ch = n.feed("sa.yaml", sa);
  CHECK(n.errors.empty());
  auto by_name = [&] {
    std::map<std::string, policy::Labels> m;
    for (const auto& e : n.calc.endpoints()) m[e.key()] = e.labels;
    return m;
  };
  auto eps = by_name();
  CHECK(eps["x/web"].at(policy::kServiceAccountLabel) == "frontend");
  CHECK(eps["x/web"].at("pcsa.tier") == "front");
  CHECK(eps["x/job"].at(policy::kServiceAccountLabel) == "batch");  // the deprecated alias
  CHECK(!eps["x/job"].count("pcsa.tier"));                          // no such ServiceAccount object
  // A relabel of the ServiceAccount reaches its pods' endpoints as a change.
  ch = n.feed("sa.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: frontend, namespace: x, labels: "
                         "{tier: back}}\n");
  bool web_changed = false;
  for (const auto& e : ch.endpoints_upserted)
    if (e.key() == "x/web") web_changed = e.labels.at("pcsa.tier") == "back";
  CHECK(web_changed);
  // Network sets: upserted and removed through the policy path.
  ch = n.feed("sets.yaml", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: office, labels: "
                           "{role: office}}\nspec: {nets: [203.0.113.0/24]}\n---\napiVersion: projectcalico.org/v3\n"
                           "kind: NetworkSet\nmetadata: {name: partner, namespace: x}\nspec: {nets: [192.0.2.0/24]}\n");
  CHECK(n.errors.empty());
  REQUIRE(ch.network_sets_upserted.size() == 2);
  CHECK(n.calc.network_sets().size() == 2);
  ch = n.drop("sets.yaml");
  CHECK(ch.network_sets_removed.size() == 2);
  CHECK(n.calc.network_sets().empty());
  // A bad CIDR names the file, object and field.
  n.feed("bad.yaml", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: g}\n"
                     "spec: {nets: [10.0.0.0/33]}\n");
  REQUIRE(n.errors.size() == 1);
  CHECK_MESSAGE(n.errors[0].find("bad.yaml: GlobalNetworkSet g: spec.nets[0]: invalid CIDR") != std::string::npos,
                n.errors[0]);
}

TEST_CASE("a rejected network set's problem speaks of the network set, not of a policy") {
  Calc calc({.node_name = "node-1"});
  DocFeed feed;
  const std::string bad = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: office}\n"
                          "spec: {nets: [203.0.113.0/33]}\n";
  const std::string good = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: office}\n"
                           "spec: {nets: [203.0.113.0/24]}\n";
  feed.feed({DocEvent{{"GlobalNetworkSet.projectcalico.org", "", "office"}, bad, "1", false, "sets.yaml"}}, calc);
  auto p = feed.problems();
  REQUIRE(p.size() == 1);
  CHECK_MESSAGE(p[0].message.find("this network set never had a valid version") != std::string::npos, p[0].message);
  CHECK(p[0].message.find("policy") == p[0].message.find("policy selector"));
  feed.feed({DocEvent{{"GlobalNetworkSet.projectcalico.org", "", "office"}, good, "2", false, "sets.yaml"}}, calc);
  CHECK(feed.problems().empty());
  feed.feed({DocEvent{{"GlobalNetworkSet.projectcalico.org", "", "office"}, bad, "3", false, "sets.yaml"}}, calc);
  p = feed.problems();
  REQUIRE(p.size() == 1);
  CHECK_MESSAGE(p[0].message.find("the last good version of this network set stays in force") != std::string::npos,
                p[0].message);
  REQUIRE(calc.network_sets().size() == 1);
  CHECK(calc.network_sets()[0].nets.at(0).str() == "203.0.113.0/24");
}

// IPPool allowedUses: Tunnel-only pools give the nodes' tunnel addresses
// and no pod address; Workload-only pools give pod addresses and never a node's
// tunnel address; a LoadBalancer pool serves neither (reported).
TEST_CASE("IPPool allowedUses: tunnel addresses from Tunnel pools, pod addresses from Workload pools") {
  auto pool = [](const std::string& name, const std::string& cidr, const std::string& uses) {
    return pool_yaml(name, cidr, "  vxlanMode: Always\n  allowedUses: " + uses + "\n");
  };
  // Name order would give "a-pods" first: the Tunnel use decides, not the order.
  Node n1("node-1");
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                         pool("a-pods", "198.20.0.0/16", "[Workload]") + pool("b-tunnel", "198.19.0.0/24", "[Tunnel]"));
  REQUIRE(n1.errors.empty());
  auto tb = n1.calc.tunnel_block_to_claim();
  REQUIRE(tb);
  CHECK(tb->block.str() == "198.19.0.0/26");
  CHECK(tb->pool == "b-tunnel");
  n1.feed("t.yaml", block_yaml("198.19.0.0/26", "node-1"));
  CHECK_FALSE(n1.calc.tunnel_block_to_claim());
  CHECK(n1.calc.tunnel_address("node-1", true)->str() == "198.19.0.0");
  // Pods: never from the tunnel block (it has 62 free addresses), a block of a-pods.
  CHECK(n1.calc.assigns_family("node-1", IpFamily::V4));
  auto p = n1.calc.plan_ip("node-1", "default/a", IpFamily::V4);
  REQUIRE(p);
  CHECK(p->claim_block);
  CHECK(p->block.str() == "198.20.0.0/26");
  CHECK(p->ip.str() == "198.20.0.1");
  REQUIRE(n1.calc.upsert(p->affinity).ok());
  // A remote node's VTEP address is the first of its tunnel block, never of its
  // pod block, and its pod block's VXLAN route goes via it.
  n1.feed("n2.yaml", block_yaml("198.20.0.64/26", "node-2") + block_yaml("198.19.0.64/26", "node-2"));
  CHECK(n1.calc.tunnel_address("node-2", true)->str() == "198.19.0.64");
  auto remote = route_strs(n1.calc, RouteClass::RemoteBlock);
  CAPTURE(remote);
  CHECK(std::find(remote.begin(), remote.end(), "198.20.0.64/26 via 198.19.0.64 dev vxlan.tabby onlink") !=
        remote.end());
  // The tunnel block is never released as empty; an empty pod block is.
  Node g("node-1");
  g.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + pool("a-pods", "198.20.0.0/16", "[Workload]") +
                       pool("b-tunnel", "198.19.0.0/24", "[Tunnel]") + block_yaml("198.20.0.0/26", "node-1") +
                       block_yaml("198.19.0.0/26", "node-1"));
  IpamGcMemory mem;
  (void)g.calc.plan_ipam_gc(mem, 0, 0);
  auto gc = g.calc.plan_ipam_gc(mem, 1, 0);
  CHECK(gc.affinity_removals == std::vector<std::string>{"198-20-0-0-26"});

  // Only a Tunnel pool: the node has its tunnel address, a pod gets no address.
  Node n3("node-3");
  n3.feed("c.yaml", node_yaml("node-3", "198.18.0.13/24") + pool("b-tunnel", "198.19.0.0/24", "[Tunnel]"));
  CHECK(n3.calc.tunnel_block_to_claim());
  CHECK_FALSE(n3.calc.assigns_family("node-3", IpFamily::V4));
  n3.feed("t.yaml", block_yaml("198.19.0.0/26", "node-3"));
  auto none = n3.calc.plan_ip("node-3", "default/x", IpFamily::V4);
  REQUIRE_FALSE(none);
  CHECK(none.error().message.find("whose allowedUses include Workload") != std::string::npos);
  // Only a Workload pool with VXLAN: no tunnel block to claim (Calico: no tunnel address).
  Node n4("node-4");
  n4.feed("c.yaml", node_yaml("node-4", "198.18.0.14/24") + pool("a-pods", "198.20.0.0/16", "[Workload]"));
  CHECK_FALSE(n4.calc.tunnel_block_to_claim());
  n4.feed("p.yaml", block_yaml("198.20.0.0/26", "node-4"));
  CHECK_FALSE(n4.calc.tunnel_address("node-4", true));

  // Parsing: the default (both, or an empty list), each use, bad values name the item.
  CHECK(std::get<IpPool>(parse_one(pool_yaml("p", "10.0.0.0/16")).body).for_tunnels);
  auto both = std::get<IpPool>(parse_one(pool_yaml("p", "10.0.0.0/16", "  allowedUses: []\n")).body);
  CHECK((both.for_workloads && both.for_tunnels));
  auto t = std::get<IpPool>(parse_one(pool_yaml("p", "10.0.0.0/16", "  allowedUses: [Tunnel]\n")).body);
  CHECK((!t.for_workloads && t.for_tunnels));
  auto lb = parse_one(pool_yaml("p", "10.0.0.0/16", "  allowedUses: [LoadBalancer]\n"));
  CHECK((!std::get<IpPool>(lb.body).for_workloads && !std::get<IpPool>(lb.body).for_tunnels));
  REQUIRE(lb.unsupported.size() == 1);
  CHECK(lb.unsupported[0].find("spec.allowedUses: not supported by tabby") != std::string::npos);
  CHECK(parse_error(pool_yaml("p", "10.0.0.0/16", "  allowedUses: [Workload, Pods]\n")) ==
        "pools.yaml: IPPool p: spec.allowedUses[1]: 'Pods' is not Workload, Tunnel or LoadBalancer");
  CHECK(parse_error(pool_yaml("p", "10.0.0.0/16", "  allowedUses: [LoadBalancer, Workload]\n")) ==
        "pools.yaml: IPPool p: spec.allowedUses: LoadBalancer cannot be combined with Workload or Tunnel");
}

// IPAMConfiguration: maxBlocksPerHost and autoAllocateBlocks limit the
// claims; with every own block full and no claim allowed, or no free block left,
// the pod gets an error naming the setting under strictAffinity true (borrowing:
// ipam_borrow_test.cpp).
TEST_CASE("IPAMConfiguration: maxBlocksPerHost, autoAllocateBlocks; no borrowing under strictAffinity true") {
  auto ipam = [](const std::string& spec) {
    return "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: " + spec +
           "\n---\n";
  };
  auto full_block = [](const std::string& cidr, const std::string& node, const std::string& allocs) {
    Prefix p = *Prefix::parse(cidr);
    return "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: " + block_affinity_name(p) +
           "}\nspec: {cidr: " + cidr + ", node: " + node + ", allocations: {" + allocs + "}}\n---\n";
  };
  // /30 blocks: three pod addresses each. node-1's block is full; node-2's has room.
  const std::string cluster = node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                              pool_yaml("pool-a", "198.19.0.0/24", "  blockSize: 30\n") +
                              full_block("198.19.0.0/30", "node-1",
                                         "default/a: 198.19.0.1, default/b: 198.19.0.2, default/c: 198.19.0.3") +
                              block_yaml("198.19.0.4/30", "node-2");
  Node n1("node-1");
  n1.feed("c.yaml", cluster + ipam("{strictAffinity: true, maxBlocksPerHost: 1}"));
  REQUIRE(n1.errors.empty());
  auto p = n1.calc.plan_ip("node-1", "default/d", IpFamily::V4);
  REQUIRE_FALSE(p);
  CHECK(p.error().message ==
        "IPAM: no free address in node node-1's blocks and node node-1 has 1 IPv4 blocks, IPAMConfiguration "
        "default: spec.maxBlocksPerHost is 1 (no address is borrowed from another node's block once that limit is "
        "reached)");
  // A limit of 2: the next block is claimed (node-2's free addresses stay node-2's).
  n1.feed("i.yaml", ipam("{strictAffinity: true, maxBlocksPerHost: 2}"));
  p = n1.calc.plan_ip("node-1", "default/d", IpFamily::V4);
  REQUIRE(p);
  CHECK(p->claim_block);
  CHECK(p->block.str() == "198.19.0.8/30");
  // autoAllocateBlocks false: no new block at all.
  n1.feed("i.yaml", ipam("{strictAffinity: true, autoAllocateBlocks: false}"));
  p = n1.calc.plan_ip("node-1", "default/d", IpFamily::V4);
  REQUIRE_FALSE(p);
  CHECK(p.error().message.find("spec.autoAllocateBlocks is false: node node-1 may claim no new IPv4 block") !=
        std::string::npos);
  // The object deleted: Calico's defaults (no limit) again.
  n1.drop("i.yaml");
  n1.feed("c.yaml", cluster);
  CHECK(n1.calc.plan_ip("node-1", "default/d", IpFamily::V4));
  // The pool exhausted (two /30 blocks, both claimed): node-2 has free addresses, but
  // node-1 does not borrow them.
  Node n2("node-1");
  n2.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                        pool_yaml("pool-a", "198.19.0.0/29", "  blockSize: 30\n") +
                        full_block("198.19.0.0/30", "node-1",
                                   "default/a: 198.19.0.1, default/b: 198.19.0.2, default/c: 198.19.0.3") +
                        block_yaml("198.19.0.4/30", "node-2") + ipam("{strictAffinity: true}"));
  REQUIRE(n2.errors.empty());
  p = n2.calc.plan_ip("node-1", "default/d", IpFamily::V4);
  REQUIRE_FALSE(p);
  CHECK(p.error().message.find("IPAM: no free block for node node-1 in any enabled IPv4 pool") != std::string::npos);
  CHECK(p.error().message.find("spec.strictAffinity is true, so no address is borrowed") != std::string::npos);
  // The tunnel block obeys the limits too (Calico's tunnel addresses come from the same IPAM).
  Node n3("node-3");
  n3.feed("c.yaml", node_yaml("node-3", "198.18.0.13/24") + pool_yaml("pool-a", "198.19.0.0/24", "  vxlanMode: Always\n") +
                        ipam("{strictAffinity: false, autoAllocateBlocks: false}"));
  CHECK_FALSE(n3.calc.tunnel_block_to_claim());

  // Parsing: the singleton's name, the fields' types, an unknown field; KubeVirt reported.
  auto c = std::get<IpamConfig>(parse_one(ipam("{strictAffinity: true, maxBlocksPerHost: 4}")).body);
  CHECK(c.strict_affinity);
  CHECK(c.max_blocks_per_host == 4);
  CHECK(c.auto_allocate_blocks);
  CHECK(parse_error("apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: other}\nspec: {}\n",
                    "i.yaml") ==
        "i.yaml: IPAMConfiguration other: metadata.name: must be 'default' (Calico's IPAMConfiguration is a singleton)");
  CHECK(parse_error(ipam("{maxBlocksPerHost: -1}"), "i.yaml") ==
        "i.yaml: IPAMConfiguration default: spec.maxBlocksPerHost: '-1' is not a whole number");
  CHECK(parse_error(ipam("{strictAffinity: yes please}"), "i.yaml") ==
        "i.yaml: IPAMConfiguration default: spec.strictAffinity: 'yes please' is not true or false");
  // Calico's CRD kind (crd.projectcalico.org/v1 IPAMConfig, delivered as v3) reads the same.
  auto crd = parse_one("apiVersion: projectcalico.org/v3\nkind: IPAMConfig\nmetadata: {name: default}\n"
                       "spec: {strictAffinity: true, autoAllocateBlocks: true, maxBlocksPerHost: 0}\n");
  CHECK(crd.key.kind == Kind::IPAMConfig);
  CHECK(std::get<IpamConfig>(crd.body).strict_affinity);
}

// The collector releases empty blocks of both families: a dual-stack
// node's IPv6 block without allocations or endpoints goes like an IPv4 one; the
// IPv4 block holding the tunnel address stays; a used IPv6 block stays.
TEST_CASE("IPAM GC: empty IPv6 blocks of live nodes are released too") {
  Node n1("node-1");
  const std::string v6 = "    ipv6Address: 2001:db8:18::11/64\n";
  n1.feed("c.yaml", node_yaml("node-1", "198.18.0.11/24", v6) + pool_yaml("pool-v4", "198.19.0.0/16") +
                         pool_yaml("pool-v6", "2001:db8:19::/64") + block_yaml("198.19.0.0/26", "node-1") +
                         block_yaml("2001:db8:19::/122", "node-1") + block_yaml("2001:db8:19::40/122", "node-1") +
                         wep_yaml("a", "node-1", "198.19.0.1, 2001:db8:19::41", "calia"));
  REQUIRE(n1.errors.empty());
  IpamGcMemory mem;
  (void)n1.calc.plan_ipam_gc(mem, 0, 1'000);
  auto p = n1.calc.plan_ipam_gc(mem, 1'000, 1'000);
  CHECK(p.affinity_removals == std::vector<std::string>{"2001-db8-19---122"});
  CHECK(p.released == std::vector<std::string>{"block 2001:db8:19::/122 of node node-1 (empty)"});
}

// The endpoint address index (calc_impl.hpp IpOwners) against a std::multimap
// under random adds and removals: same owners per address and per prefix, through
// both of its merge paths (in place and rebuilt) and its holes.
TEST_CASE("IpOwners: the same answers as a multimap, both families, duplicates, removals") {
  calc_detail::IpOwners idx;
  std::multimap<IpAddress, const std::string*> ref;
  std::vector<std::string> keys;
  for (int i = 0; i < 64; ++i) keys.push_back("ns/pod-" + std::to_string(i));
  uint64_t seed = 12345;
  auto rnd = [&](uint64_t n) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (seed >> 33) % n;
  };
  auto addr = [&](uint64_t v) {
    return v % 2 ? *IpAddress::parse("10.0." + std::to_string(v / 256 % 4) + "." + std::to_string(v % 256))
                 : *IpAddress::parse("2001:db8::" + std::to_string(v % 1000));
  };
  auto check_all = [&] {
    for (const char* p : {"10.0.0.0/24", "10.0.1.0/26", "10.0.0.0/8", "2001:db8::/120", "2001:db8::100/122", "::/0"}) {
      Prefix pre = *Prefix::parse(p);
      std::multiset<std::pair<IpAddress, std::string>> got, want;
      idx.for_each_in(pre, [&](const IpAddress& ip, const std::string& k) { got.insert({ip, k}); });
      for (const auto& [ip, k] : ref)
        if (pre.contains(ip)) want.insert({ip, *k});
      REQUIRE(got == want);
      CHECK(idx.any_in(pre) == !want.empty());
    }
  };
  for (int round = 0; round < 3000; ++round) {
    IpAddress ip = addr(rnd(1200));
    const std::string* k = &keys[rnd(keys.size())];
    if (rnd(3) > 0) {
      idx.add(ip, k);
      ref.emplace(ip, k);
    } else if (!ref.empty()) {
      auto it = std::next(ref.begin(), static_cast<long>(rnd(ref.size())));
      idx.remove(it->first, it->second);
      ref.erase(it);
    }
    if (round % 97 == 0) {
      check_all();
      std::multiset<std::string> got, want;
      idx.for_each_equal(ip, [&](const std::string& key) { got.insert(key); });
      for (auto [a, b] = ref.equal_range(ip); a != b; ++a) want.insert(*a->second);
      CHECK(got == want);
    }
  }
  check_all();
  while (!ref.empty()) {  // everything removed: nothing left anywhere
    idx.remove(ref.begin()->first, ref.begin()->second);
    ref.erase(ref.begin());
  }
  check_all();
}
