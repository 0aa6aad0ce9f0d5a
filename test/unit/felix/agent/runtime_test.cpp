// runtime_test.cpp — scenario tests of the whole agent (felix/agent/runtime.hpp):
// real AgentRuntimes with real BGP speakers talking over loopback (127.0.0.1-3,
// one port on each address), each against the in-memory dataplane
// (test/fakes/recording_dataplane), an in-memory cluster datastore
// (test/fakes/memory_datastore) and a recording policy executor
// (test/fakes/recording_policy_executor), all on one io_context.
//   - static-config mesh: three agents, each announcing a prefix, learn the
//     others' (kernel routes via the announcer) and blackhole their own;
//   - route reflector: two clients of one reflector learn each other's prefix
//     with the originator's next hop (RFC 4456);
//   - datastore mesh: nodes from the datastore peer with each other; a block
//     route comes from the datastore, an extra announced prefix over BGP;
//   - pod add/delete: a WorkloadEndpoint in the datastore becomes a workload
//     route, a workload interface and a policy endpoint, and goes again;
//   - policy change: the executor sees the ruleset change;
//   - the Forwarding State bit (RFC 4724 §3) follows the dataplane;
//   - tunnel address at start: two nodes with a VXLAN pool race for blocks and
//     each ends with one, its VTEP the block's first address, before any pod.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <unistd.h>

#include <utility>

#include <algorithm>
#include <array>
#include <cstdio>
#include <set>
#include <span>
#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bgp/codec.hpp"
#include "bgp/speaker.hpp"
#include "felix/agent/runtime.hpp"
#include "felix/calc/calc.hpp"
#include "felix/calc/resources.hpp"
#include "test/fakes/memory_datastore.hpp"
#include "test/fakes/recording_dataplane.hpp"
#include "test/fakes/recording_policy_executor.hpp"
#include "test/support/loopback_port.hpp"

using namespace tabby;
using namespace tabby::felix;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

// A port free on 127.0.0.1-3 (each listens on its own address).
uint16_t free_port() { return tabby::test::free_port_on_loopback_1_to_3(); }

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/tabby-runtime-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { (void)std::system(("rm -rf '" + path + "'").c_str()); }
};

// Runs the loop until `done` holds (true) or `seconds` pass (false).
bool run_until(asio::io_context& io, const std::function<bool()>& done, double seconds = 15) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    io.restart();
    io.run_for(std::chrono::milliseconds(20));
  }
  return true;
}

// A recorder whose routes (in the scenario) outlive the agent: as the Linux dataplane.
class KeepingDataplane : public dataplane::RecordingDataplane {
 public:
  using RecordingDataplane::RecordingDataplane;
  bool preserves_forwarding() const override { return true; }
};

// One agent: its runtime and the in-memory modules it was given.
struct Agent {
  dataplane::RecordingDataplane* dp = nullptr;      // owned by the runtime
  policy::RecordingPolicyExecutor* policy = nullptr;  // owned by the runtime
  std::unique_ptr<AgentRuntime> rt;

  Agent(asio::io_context& io, const std::string& yaml, MemoryCluster* cluster = nullptr,
        std::set<std::string> interfaces = {}, bool keeping_dataplane = false, const ConfigEnvironment& env = {}) {
    auto cfg = parse_config(yaml, "test.yaml", env);
    REQUIRE_MESSAGE(cfg.ok(), (cfg.ok() ? "" : cfg.error().message));
    RuntimeFactories f;
    f.dataplane = [this, interfaces, keeping_dataplane](asio::io_context&, std::function<void(double)>)
        -> Result<std::unique_ptr<dataplane::Dataplane>> {
      std::unique_ptr<dataplane::RecordingDataplane> d =
          keeping_dataplane ? std::make_unique<KeepingDataplane>(interfaces)
                            : std::make_unique<dataplane::RecordingDataplane>(interfaces);
      dp = d.get();
      return std::unique_ptr<dataplane::Dataplane>(std::move(d));
    };
    f.datastore = [cluster](asio::io_context&, const DatastoreConfig&) -> Result<std::unique_ptr<Datastore>> {
      if (!cluster) return fail_msg("no datastore in this test");
      return cluster->client();
    };
    f.policy = [this]() -> Result<std::unique_ptr<policy::PolicyExecutor>> {
      auto p = std::make_unique<policy::RecordingPolicyExecutor>();
      policy = p.get();
      return std::unique_ptr<policy::PolicyExecutor>(std::move(p));
    };
    rt = std::make_unique<AgentRuntime>(io, std::move(*cfg), "", std::move(f));
    auto st = rt->start();
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
  }

  // The kernel route for `dst` this agent's dataplane holds (tabby's protocol), as text.
  std::string kernel_route(const std::string& dst) const {
    for (const auto& r : dp->kernel_routes(dataplane::kTabbyRouteProtocol))
      if (r.dst.str() == dst) return r.str();
    return "";
  }
  std::string dump() const {
    std::string s;
    for (const auto& l : dp->kernel_dump()) s += l + "; ";
    return s;
  }
  std::string bgp() const {
    std::string s = " [";
    if (!rt->speaker()) return s + "no speaker]";
    for (const auto& p : rt->speaker()->peers()) s += p.address.str() + " " + p.state + "; ";
    for (const auto& r : rt->speaker()->routes()) s += r.prefix.str() + " ";
    return s + "]";
  }
  bool established_with(const char* addr) const {
    if (!rt->speaker()) return false;
    for (const auto& p : rt->speaker()->peers())
      if (p.address == ip(addr)) return p.state == "Established";
    return false;
  }
};

std::string static_config(int n, uint16_t port, const std::string& peers, const std::string& announce,
                          const std::string& dir, const std::string& extra = "") {
  std::string me = "127.0.0." + std::to_string(n);
  return "nodeName: node" + std::to_string(n) + "\nrouterID: " + me + "\nasNumber: 64512\nlistenAddress: " + me +
         "\nlistenPort: " + std::to_string(port) + "\napiSocket: " + dir + "/node" + std::to_string(n) +
         ".sock\ngracefulRestart: {enabled: true, restartTime: 5}\ndataplane: {enabled: true}\n" + extra +
         "peers:\n" + peers + (announce.empty() ? "" : "announce:\n" + announce);
}

std::string peer(int n, uint16_t port, const std::string& extra = "") {
  return "  - {peerIP: \"127.0.0." + std::to_string(n) + ":" + std::to_string(port) +
         "\", asNumber: 64512, connectRetryTime: 1, holdTime: 9, localAddress: LOCAL" + extra + "}\n";
}

std::string with_local(std::string peers, int n) {
  for (size_t at; (at = peers.find("LOCAL")) != std::string::npos;)
    peers.replace(at, 5, "127.0.0." + std::to_string(n));
  return peers;
}

}  // namespace

TEST_CASE("static-config mesh: three agents' learned routes reach each dataplane, own prefixes are blackholed") {
  asio::io_context io;
  TempDir dir;
  uint16_t port = free_port();
  std::vector<std::unique_ptr<Agent>> agents;
  for (int n = 1; n <= 3; ++n) {
    std::string peers;
    for (int m = 1; m <= 3; ++m)
      if (m != n) peers += peer(m, port);
    std::string announce = "  - prefix: 10.10." + std::to_string(n) + ".0/24\n";
    agents.push_back(std::make_unique<Agent>(io, static_config(n, port, with_local(peers, n), announce, dir.path)));
  }
  auto all_routes = [&] {
    for (int n = 1; n <= 3; ++n)
      for (int m = 1; m <= 3; ++m) {
        std::string want = m == n ? "blackhole 10.10." + std::to_string(m) + ".0/24"
                                  : "10.10." + std::to_string(m) + ".0/24 via 127.0.0." + std::to_string(m);
        if (agents[n - 1]->kernel_route("10.10." + std::to_string(m) + ".0/24") != want) return false;
      }
    return true;
  };
  // ... and every agent ready (BGP initial table in: leftovers may go).
  bool done = run_until(io, [&] {
    return all_routes() && std::all_of(agents.begin(), agents.end(), [](auto& a) {
             return a->rt->health().ready && a->dp->status().desired_complete;
           });
  });
  std::string dumps;
  for (int n = 1; n <= 3; ++n) dumps += "node" + std::to_string(n) + ": " + agents[n - 1]->dump() + "\n";
  INFO(dumps);
  REQUIRE(done);
  for (auto& a : agents) {
    CHECK(a->rt->health().ready);
    CHECK(a->policy == nullptr);  // no datastore: no policy table
    CHECK(a->dp->status().desired_complete);
  }

  // A withdrawn announcement (SIGHUP with the prefix removed) leaves every dataplane.
  std::string peers1 = with_local(peer(2, port) + peer(3, port), 1);
  agents[0]->rt->reload(parse_config(static_config(1, port, peers1, "", dir.path), "test.yaml"));
  REQUIRE(run_until(io, [&] {
    return agents[0]->kernel_route("10.10.1.0/24").empty() && agents[1]->kernel_route("10.10.1.0/24").empty() &&
           agents[2]->kernel_route("10.10.1.0/24").empty();
  }));
  CHECK(agents[1]->kernel_route("10.10.3.0/24") == "10.10.3.0/24 via 127.0.0.3");
  for (auto& a : agents) a->rt->stop();
}

TEST_CASE("route reflector: two clients learn each other's prefix through the reflector") {
  asio::io_context io;
  TempDir dir;
  uint16_t port = free_port();
  // node1 reflects for node2 and node3 (its clients); the clients peer only with it.
  std::string rr_peers = with_local(peer(2, port, ", routeReflectorClient: true") +
                                        peer(3, port, ", routeReflectorClient: true"), 1);
  Agent rr(io, static_config(1, port, rr_peers, "", dir.path, "clusterID: 1.1.1.1\n"));
  Agent c2(io, static_config(2, port, with_local(peer(1, port), 2), "  - prefix: 10.20.2.0/24\n", dir.path));
  Agent c3(io, static_config(3, port, with_local(peer(1, port), 3), "  - prefix: 10.20.3.0/24\n", dir.path));
  bool done = run_until(io, [&] {
    return c2.kernel_route("10.20.3.0/24") == "10.20.3.0/24 via 127.0.0.3" &&
           c3.kernel_route("10.20.2.0/24") == "10.20.2.0/24 via 127.0.0.2" &&
           rr.kernel_route("10.20.2.0/24") == "10.20.2.0/24 via 127.0.0.2";
  });
  INFO("c2: ", c2.kernel_route("10.20.3.0/24"), " c3: ", c3.kernel_route("10.20.2.0/24"));
  REQUIRE(done);
  // The clients have no session with each other: the route came through the reflector.
  CHECK_FALSE(c2.established_with("127.0.0.3"));
  CHECK(c2.established_with("127.0.0.1"));
  for (Agent* a : {&rr, &c2, &c3}) a->rt->stop();
}

namespace {

std::string node_yaml(int n, const std::string& extra_spec = "") {
  return "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node" + std::to_string(n) +
         "\nspec:\n  bgp:\n    ipv4Address: 127.0.0." + std::to_string(n) + "/8\n" + extra_spec;
}
std::string block_yaml(const std::string& cidr, const std::string& node) {
  Prefix p = *Prefix::parse(cidr);
  return "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: " + block_affinity_name(p) +
         "}\nspec: {cidr: " + cidr + ", node: " + node + "}\n";
}
std::string wep_yaml(const std::string& name, const std::string& node, const std::string& addr,
                     const std::string& iface, const std::string& labels = "app: web") {
  return "apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: " + name +
         ", namespace: default, labels: {" + labels + "}}\nspec: {node: " + node + ", interfaceName: " + iface +
         ", ips: [" + addr + "]}\n";
}
std::string cluster_config(int n, const std::string& dir, const std::string& announce = "") {
  return "nodeName: node" + std::to_string(n) + "\nrouterID: 127.0.0." + std::to_string(n) + "\nlistenAddress: 127.0.0." + std::to_string(n) + "\napiSocket: " + dir +
         "/node" + std::to_string(n) + ".sock\ngracefulRestart: {enabled: true, restartTime: 5}\n"
         "dataplane: {enabled: true}\ndatastore: {type: file, directory: " + dir + "}\n" +
         (announce.empty() ? "" : "announce:\n" + announce);
}
std::string bgp_configuration(uint16_t port) {
  return "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 64512, "
         "listenPort: " + std::to_string(port) + "}\n";
}

}  // namespace

TEST_CASE("datastore mesh: nodes from the datastore peer; block routes and BGP-learned routes reach each dataplane") {
  asio::io_context io;
  TempDir dir;
  uint16_t port = free_port();
  MemoryCluster cluster(io);
  REQUIRE(cluster.apply(bgp_configuration(port)));
  REQUIRE(cluster.apply("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: "
                        "10.65.0.0/16}\n"));
  for (int n = 1; n <= 2; ++n) {
    REQUIRE(cluster.apply(node_yaml(n)));
    REQUIRE(cluster.apply(block_yaml("10.65." + std::to_string(n) + ".0/26", "node" + std::to_string(n))));
  }
  Agent a1(io, cluster_config(1, dir.path, "  - prefix: 10.30.1.0/24\n"), &cluster);
  Agent a2(io, cluster_config(2, dir.path), &cluster);
  bool done = run_until(io, [&] {
    return a1.established_with("127.0.0.2") && a2.established_with("127.0.0.1") &&
           a2.kernel_route("10.65.1.0/26") == "10.65.1.0/26 via 127.0.0.1" &&
           a1.kernel_route("10.65.2.0/26") == "10.65.2.0/26 via 127.0.0.2" &&
           a1.kernel_route("10.65.1.0/26") == "blackhole 10.65.1.0/26" &&
           a2.kernel_route("10.30.1.0/24") == "10.30.1.0/24 via 127.0.0.1" &&
           a1.kernel_route("10.30.1.0/24") == "blackhole 10.30.1.0/24";
  });
  INFO("a1: ", a1.dump(), a1.bgp(), " a2: ", a2.dump(), a2.bgp());
  REQUIRE(done);
  CHECK(cluster.clients_started() == 2);
  // A node leaves the datastore: its block route goes from the other's dataplane.
  cluster.erase({"BlockAffinity.tabby.dev", "", block_affinity_name(*Prefix::parse("10.65.2.0/26"))});
  REQUIRE(run_until(io, [&] { return a1.kernel_route("10.65.2.0/26").empty(); }));
  a1.rt->stop();
  a2.rt->stop();
}

TEST_CASE("tunnel address at start: with a VXLAN pool each node claims one block before any pod") {
  asio::io_context io;
  TempDir dir;
  uint16_t port = free_port();
  MemoryCluster cluster(io);
  REQUIRE(cluster.apply(bgp_configuration(port)));
  REQUIRE(cluster.apply("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: "
                        "10.65.0.0/16, vxlanMode: Always}\n"));
  for (int n = 1; n <= 2; ++n) REQUIRE(cluster.apply(node_yaml(n)));
  // Both start at once: they race for the same first block; the loser takes the next.
  Agent a1(io, cluster_config(1, dir.path), &cluster);
  Agent a2(io, cluster_config(2, dir.path), &cluster);
  auto affinity_of = [&](const std::string& cidr) {
    return cluster.get({"BlockAffinity.tabby.dev", "", block_affinity_name(*Prefix::parse(cidr))});
  };
  auto vtep = [](const Agent& a) {
    return a.dp->tunnels.vxlan.tunnel_address ? a.dp->tunnels.vxlan.tunnel_address->str() : std::string("none");
  };
  bool done = run_until(io, [&] {
    return affinity_of("10.65.0.0/26") && affinity_of("10.65.0.64/26") && vtep(a1) != "none" && vtep(a2) != "none";
  });
  INFO("a1 VTEP ", vtep(a1), " a2 VTEP ", vtep(a2));
  REQUIRE(done);
  CHECK(vtep(a1) != vtep(a2));
  std::set<std::string> owners;
  for (const char* b : {"10.65.0.0/26", "10.65.0.64/26"}) {
    auto parsed = parse_manifests(*affinity_of(b), b);
    REQUIRE(parsed.resources.size() == 1);
    const auto& aff = std::get<BlockAffinity>(parsed.resources[0].body);
    owners.insert(aff.node);
    CHECK(aff.allocations.empty());  // no pod address taken
  }
  CHECK(owners == std::set<std::string>{"node1", "node2"});
  CHECK_FALSE(affinity_of("10.65.0.128/26"));  // one block each, no more
  // Each VTEP is the first address of its own block, and the other node knows it.
  for (auto [me, other] : {std::pair{&a1, &a2}, std::pair{&a2, &a1}}) {
    REQUIRE(me->dp->tunnels.vxlan.enabled);
    bool known = false;
    for (const auto& v : other->dp->tunnels.vteps) known |= v.tunnel_address.str() == vtep(*me);
    CHECK_MESSAGE(known, "the other node has no VTEP entry for ", vtep(*me));
  }
  CHECK((vtep(a1) == "10.65.0.0" || vtep(a1) == "10.65.0.64"));
  a1.rt->stop();
  a2.rt->stop();
}

TEST_CASE("tunnel address borrowed: the pool has one block: one node claims it, the other borrows its VTEP") {
  asio::io_context io;
  TempDir dir;
  uint16_t port = free_port();
  MemoryCluster cluster(io);
  REQUIRE(cluster.apply(bgp_configuration(port)));
  REQUIRE(cluster.apply("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: "
                        "10.65.0.0/26, blockSize: 26, vxlanMode: Always}\n"));
  for (int n = 1; n <= 2; ++n) REQUIRE(cluster.apply(node_yaml(n)));
  Agent a1(io, cluster_config(1, dir.path), &cluster, {"vxlan.tabby"});
  Agent a2(io, cluster_config(2, dir.path), &cluster, {"vxlan.tabby"});
  auto vtep = [](const Agent& a) {
    return a.dp->tunnels.vxlan.tunnel_address ? a.dp->tunnels.vxlan.tunnel_address->str() : std::string("none");
  };
  auto peer = [](const Agent& a, const std::string& addr) {
    return std::any_of(a.dp->tunnels.vteps.begin(), a.dp->tunnels.vteps.end(),
                       [&](const auto& v) { return v.tunnel_address.str() == addr; });
  };
  bool done = run_until(io, [&] {
    return vtep(a1) != "none" && vtep(a2) != "none" && peer(a1, vtep(a2)) && peer(a2, vtep(a1));
  });
  INFO("a1 VTEP ", vtep(a1), " a2 VTEP ", vtep(a2));
  REQUIRE(done);
  auto text = cluster.get({"BlockAffinity.tabby.dev", "", block_affinity_name(*Prefix::parse("10.65.0.0/26"))});
  REQUIRE(text);
  auto parsed = parse_manifests(*text, "block");
  REQUIRE(parsed.resources.size() == 1);
  const auto& aff = std::get<BlockAffinity>(parsed.resources[0].body);
  const std::string owner = aff.node, borrower = owner == "node1" ? "node2" : "node1";
  const Agent& own = owner == "node1" ? a1 : a2;
  const Agent& bor = owner == "node1" ? a2 : a1;
  CHECK(vtep(own) == "10.65.0.0");  // the block's first address
  CHECK(vtep(bor) == "10.65.0.1");  // the lowest free one, borrowed
  CHECK(aff.allocations == std::map<std::string, IpAddress>{{"vxlan-tunnel-addr-" + borrower, *IpAddress::parse("10.65.0.1")}});
  CHECK(aff.borrowed == std::map<std::string, std::string>{{"vxlan-tunnel-addr-" + borrower, borrower}});
  // The owner routes the borrowed VTEP's /32 to the borrower over VXLAN (its block is blackholed).
  bool routed = run_until(io, [&] { return !own.kernel_route("10.65.0.1/32").empty(); });
  INFO("owner's kernel: ", own.dump());
  REQUIRE(routed);
  CHECK(own.kernel_route("10.65.0.1/32") == "10.65.0.1/32 via 10.65.0.1 dev vxlan.tabby onlink");
  a1.rt->stop();
  a2.rt->stop();
}

TEST_CASE("pod add/delete: a WorkloadEndpoint becomes a workload route, an interface and a policy endpoint") {
  asio::io_context io;
  TempDir dir;
  MemoryCluster cluster(io);
  REQUIRE(cluster.apply("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: "
                        "10.65.0.0/16}\n"));
  REQUIRE(cluster.apply(block_yaml("10.65.1.0/26", "node1")));
  Agent a(io, cluster_config(1, dir.path), &cluster, {"cali1"});
  REQUIRE(a.policy != nullptr);
  // In sync, BGP up (no peers), the policy table loaded: ready; and the node
  // registered itself in the datastore (it had no Node resource).
  REQUIRE(run_until(io, [&] { return a.rt->health().ready; }));
  auto node = cluster.get({"Node.projectcalico.org", "", "node1"});
  REQUIRE(node);
  CHECK(node->find("ipv4Address: 127.0.0.1") != std::string::npos);
  CHECK(a.kernel_route("10.65.1.0/26") == "blackhole 10.65.1.0/26");
  CHECK(a.kernel_route("10.65.1.5/32").empty());
  CHECK(a.policy->full_loads == 1);
  CHECK(a.policy->endpoints.empty());

  auto key = cluster.apply(wep_yaml("pod1", "node1", "10.65.1.5", "cali1"));
  REQUIRE(key);
  REQUIRE(run_until(io, [&] { return !a.kernel_route("10.65.1.5/32").empty() && !a.policy->endpoints.empty(); }));
  CHECK(a.kernel_route("10.65.1.5/32") == "10.65.1.5/32 dev cali1");
  CHECK(a.dp->workload_interfaces == std::vector<std::string>{"cali1"});
  REQUIRE(a.policy->endpoints.size() == 1);
  CHECK(a.policy->endpoints[0].endpoint == "default/pod1");
  CHECK(a.policy->endpoints[0].iface == "cali1");
  CHECK(a.policy->full_loads == 1);  // a delta, not a reload
  CHECK_FALSE(a.policy->deltas.empty());

  cluster.erase(*key);
  REQUIRE(run_until(io, [&] { return a.kernel_route("10.65.1.5/32").empty() && a.policy->endpoints.empty(); }));
  CHECK(a.dp->workload_interfaces.empty());
  CHECK(a.kernel_route("10.65.1.0/26") == "blackhole 10.65.1.0/26");
  a.rt->stop();
}

TEST_CASE("policy change: the executor sees the ruleset change") {
  asio::io_context io;
  TempDir dir;
  MemoryCluster cluster(io);
  REQUIRE(cluster.apply("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: "
                        "10.65.0.0/16}\n"));
  REQUIRE(cluster.apply(block_yaml("10.65.1.0/26", "node1")));
  REQUIRE(cluster.apply(wep_yaml("web", "node1", "10.65.1.7", "cali7")));
  Agent a(io, cluster_config(1, dir.path), &cluster, {"cali7"});
  REQUIRE(run_until(io, [&] { return a.rt->health().ready && !a.policy->endpoints.empty(); }));
  CHECK(a.policy->endpoints[0].ingress.empty());  // no policy selects it yet

  auto policy_yaml = [](int port) {
    return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-web, namespace: default}\n"
           "spec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n  ingress:\n"
           "  - ports: [{protocol: TCP, port: " + std::to_string(port) + "}]\n";
  };
  auto key = cluster.apply(policy_yaml(8080));
  REQUIRE(key);
  REQUIRE(run_until(io, [&] { return !a.policy->endpoints.empty() && !a.policy->endpoints[0].ingress.empty(); }));
  CHECK(a.policy->endpoints[0].ingress == std::vector<std::string>{"knp.default.allow-web"});
  CHECK(a.policy->programmed().find("8080") != std::string::npos);
  CHECK(a.policy->programmed().find("9090") == std::string::npos);

  // The port changes: the new rule reaches the executor.
  REQUIRE(cluster.apply(policy_yaml(9090)));
  REQUIRE(run_until(io, [&] { return a.policy->programmed().find("9090") != std::string::npos; }));

  // The policy goes: the endpoint is unrestricted again.
  cluster.erase(*key);
  REQUIRE(run_until(io, [&] { return !a.policy->endpoints.empty() && a.policy->endpoints[0].ingress.empty(); }));
  CHECK(a.policy->full_loads == 1);
  a.rt->stop();
}

namespace {

// The graceful-restart capability of the first OPEN a restarting agent sends
// to a listener of ours (127.0.0.2:port): per family, whether F is set.
std::vector<bool> f_bits_of_restarting_agent(bool dataplane_on, bool keeping_dataplane) {
  asio::io_context io;
  TempDir dir;
  uint16_t port = free_port();
  // The restart marker of a previous run: the agent comes up restarting (R bit).
  std::string sock = dir.path + "/node1.sock";
  { FILE* f = std::fopen((sock + ".running").c_str(), "w"); REQUIRE(f); std::fclose(f); }
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.2"), port));
  std::string yaml = static_config(1, port, with_local(peer(2, port), 1), "", dir.path);
  if (!dataplane_on) yaml.replace(yaml.find("dataplane: {enabled: true}"), 26, "dataplane: {enabled: false}");
  Agent a(io, yaml, nullptr, {}, keeping_dataplane);
  tcp::socket s(io);
  bool accepted = false;
  acc.async_accept(s, [&](const boost::system::error_code& ec) { accepted = !ec; });
  REQUIRE(run_until(io, [&] { return accepted; }));
  std::vector<uint8_t> buf;
  std::vector<bool> bits;
  bool have_open = false;
  std::function<void()> read_more;
  std::array<uint8_t, 4096> chunk{};
  read_more = [&] {
    s.async_read_some(asio::buffer(chunk), [&](const boost::system::error_code& ec, size_t n) {
      if (ec) return;
      buf.insert(buf.end(), chunk.begin(), chunk.begin() + n);
      if (buf.size() >= 19 && buf.size() >= size_t(buf[16] << 8 | buf[17])) {
        have_open = true;
        return;
      }
      read_more();
    });
  };
  read_more();
  REQUIRE(run_until(io, [&] { return have_open; }));
  size_t len = buf[16] << 8 | buf[17];
  bgp::AttrStore store;
  auto msg = bgp::decode(std::span<const uint8_t>(buf.data(), len), bgp::CodecContext{}, store);
  REQUIRE(msg.ok());
  const auto* open = std::get_if<bgp::OpenMessage>(&*msg);
  REQUIRE(open);
  REQUIRE(open->caps.graceful_restart);
  CHECK(open->caps.graceful_restart->restart_state);  // R bit: the marker was found
  for (const auto& f : open->caps.graceful_restart->families) bits.push_back(f.forwarding_preserved);
  a.rt->stop();
  return bits;
}

}  // namespace

TEST_CASE("Forwarding State bit (RFC 4724 §3): 0 only when tabby programs the kernel and its routes did not stay") {
  auto text = [](const std::vector<bool>& v) {
    std::string s;
    for (bool b : v) s += b ? "F=1 " : "F=0 ";
    return s;
  };
  // A peer's default families: ipv4-unicast and ipv6-unicast, one flag each.
  CHECK(text(f_bits_of_restarting_agent(/*dataplane_on=*/true, /*keeping_dataplane=*/true)) == "F=1 F=1 ");
  // The in-memory recorder keeps nothing across a restart: F = 0.
  CHECK(text(f_bits_of_restarting_agent(true, false)) == "F=0 F=0 ");
  // With the dataplane off tabby owns no forwarding state, so none was lost: F = 1
  // (a reflector outside the forwarding path keeps its clients' routes in place).
  CHECK(text(f_bits_of_restarting_agent(false, true)) == "F=1 F=1 ");
}

TEST_CASE("registration: $IP6 (or what IP6=autodetect found) becomes the registered Node's ipv6Address") {
  asio::io_context io;
  TempDir dir;
  MemoryCluster cluster(io);
  ConfigEnvironment env;
  env.ip6 = "2001:db8:1::11/64";
  Agent a(io, cluster_config(1, dir.path), &cluster, {}, false, env);
  REQUIRE(run_until(io, [&] { return cluster.get({"Node.projectcalico.org", "", "node1"}).has_value(); }));
  auto node = cluster.get({"Node.projectcalico.org", "", "node1"});
  CHECK(node->find("ipv4Address: 127.0.0.1") != std::string::npos);
  CHECK(node->find("ipv6Address: 2001:db8:1::11/64") != std::string::npos);
  a.rt->stop();
}
