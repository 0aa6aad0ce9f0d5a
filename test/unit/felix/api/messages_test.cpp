// messages_test.cpp — Calc state → /v1/ipam and /v1/endpoints messages
// (blocks of every node with allocations, pools, endpoint nodes), the calc metrics,
// the `tabby ipam` / `tabby endpoints` tables rendered from the messages, and both
// commands end to end against an ApiServer on a Unix socket serving the builders.
#include <doctest/doctest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <iostream>
#include <sstream>
#include <thread>

#include "felix/api/server.hpp"
#include "felix/api/messages.hpp"
#include "felix/api/cli.hpp"
#include "felix/calc/resources.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {

std::string node_yaml(const std::string& name, const std::string& addr) {
  return "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: " + name +
         "\nspec:\n  bgp:\n    ipv4Address: " + addr + "\n---\n";
}
std::string pool_yaml(const std::string& name, const std::string& cidr, const std::string& extra = "") {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: " + name + "}\nspec:\n  cidr: " + cidr +
         "\n" + extra + "---\n";
}
std::string block_yaml(const std::string& cidr, const std::string& node, const std::string& allocs = "") {
  Prefix p = *Prefix::parse(cidr);
  return "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: " + block_affinity_name(p) +
         "}\nspec: {cidr: " + cidr + ", node: " + node + (allocs.empty() ? "" : ", allocations: {" + allocs + "}") +
         "}\n---\n";
}
std::string wep_yaml(const std::string& ns, const std::string& name, const std::string& node, const std::string& ip,
                     const std::string& iface, const std::string& labels) {
  return "apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: " + name + ", namespace: " + ns +
         ", labels: {" + labels + "}}\nspec: {node: " + node + ", interfaceName: " + iface + ", ips: [" + ip +
         "]}\n---\n";
}

// Two nodes, two pools, three blocks, three endpoints (one local to node-1).
struct Cluster {
  Calc calc{CalcOptions{"node-1", {}, "tunl0", "vxlan.tabby", 4096, 4789}};
  ManifestTracker tracker;
  Cluster() {
    std::string yaml = node_yaml("node-1", "198.18.0.11/24") + node_yaml("node-2", "198.18.0.12/24") +
                       pool_yaml("pool-a", "198.19.0.0/16", "  blockSize: 26\n  ipipMode: Always\n") +
                       pool_yaml("pool-v6", "2001:db8:1::/48", "  blockSize: 122\n") +
                       block_yaml("198.19.0.0/26", "node-1", "\"default/web-1\": 198.19.0.1") +
                       block_yaml("198.19.0.64/26", "node-2") + block_yaml("2001:db8:1::/122", "node-2") +
                       wep_yaml("default", "web-1", "node-1", "198.19.0.1", "tabby1a2b", "app: web, tier: front") +
                       wep_yaml("default", "db-1", "node-2", "198.19.0.65", "cali9", "app: db") +
                       wep_yaml("kube-system", "dns-1", "node-2", "2001:db8:1::5", "cali7", "k8s-app: kube-dns");
    std::vector<ResourceError> errs;
    for (const auto& e : tracker.update_source("cluster.yaml", yaml, &errs)) {
      auto st = calc.apply(e);
      REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
    }
    REQUIRE_MESSAGE(errs.empty(), (errs.empty() ? "" : errs[0].message));
    (void)calc.take_changes();
  }
};

}  // namespace

TEST_CASE("ipam_message: every node's blocks with allocations, and the pools") {
  Cluster c;
  auto m = ipam_message(c.calc);
  REQUIRE(m->blocks_size() == 3);
  const auto& b0 = m->blocks(0);
  CHECK(b0.cidr() == "198.19.0.0/26");
  CHECK(b0.node() == "node-1");
  CHECK(b0.pool() == "pool-a");
  CHECK(b0.capacity() == 63);
  CHECK(b0.used() == 1);
  REQUIRE(b0.allocations_size() == 1);
  CHECK(b0.allocations(0).ip() == "198.19.0.1");
  CHECK(b0.allocations(0).handle() == "default/web-1");
  // node-2: the v4 block (its address used by db-1's endpoint), then the v6 block.
  CHECK(m->blocks(1).cidr() == "198.19.0.64/26");
  CHECK(m->blocks(1).node() == "node-2");
  CHECK(m->blocks(1).used() == 1);
  CHECK(m->blocks(1).allocations(0).handle() == "default/db-1");
  CHECK(m->blocks(2).cidr() == "2001:db8:1::/122");
  CHECK(m->blocks(2).pool() == "pool-v6");
  CHECK(m->blocks(2).capacity() == 63);
  CHECK(m->blocks(2).used() == 1);  // dns-1's endpoint address
  CHECK(m->blocks(2).allocations(0).handle() == "kube-system/dns-1");
  REQUIRE(m->pools_size() == 2);
  CHECK(m->pools(0).name() == "pool-a");
  CHECK(m->pools(0).cidr() == "198.19.0.0/16");
  CHECK(m->pools(0).block_size() == 26);
  CHECK(m->pools(0).ipip_mode() == "Always");
  CHECK(m->pools(0).vxlan_mode() == "Never");
  CHECK(m->pools(1).block_size() == 122);
}

TEST_CASE("endpoints_message: sorted, local interface only for this node, remote node from block owner") {
  Cluster c;
  auto m = endpoints_message(c.calc, "node-1");
  REQUIRE(m->endpoints_size() == 3);
  const auto& db = m->endpoints(0);
  CHECK(db.namespace_() == "default");
  CHECK(db.name() == "db-1");
  CHECK(db.node() == "node-2");
  CHECK(db.interface() == "");
  REQUIRE(db.ips_size() == 1);
  CHECK(db.ips(0) == "198.19.0.65");
  const auto& web = m->endpoints(1);
  CHECK(web.name() == "web-1");
  CHECK(web.node() == "node-1");
  CHECK(web.interface() == "tabby1a2b");
  CHECK(web.labels().at("tier") == "front");
  const auto& dns = m->endpoints(2);
  CHECK(dns.namespace_() == "kube-system");
  CHECK(dns.node() == "node-2");
  CHECK(dns.ips(0) == "2001:db8:1::5");
}

TEST_CASE("collect_calc_metrics: this node's IPAM, policy counts, desired routes per class") {
  Cluster c;
  Metrics m;
  declare_agent_metrics(m);
  collect_calc_metrics(m, c.calc, "node-1");
  CHECK(m.value("tabby_ipam_blocks", {"pool-a"}) == 1);
  CHECK(m.value("tabby_ipam_addresses_used", {"pool-a"}) == 1);
  CHECK(m.value("tabby_ipam_addresses_capacity", {"pool-a"}) == 63);
  CHECK(m.value("tabby_policy_endpoints") == 1);
  CHECK(m.value("tabby_policy_policies") == 0);
  CHECK(m.value("tabby_dataplane_routes", {"local-workload"}) == 1);  // web-1's /32
  CHECK(m.value("tabby_dataplane_routes", {"local-block"}) == 1);     // blackhole of 198.19.0.0/26
  // node-2's IPv4 block only: its IPv6 block has no route (node-2 has no IPv6 address).
  CHECK(m.value("tabby_dataplane_routes", {"remote-block"}) == 1);
  CHECK(m.value("tabby_dataplane_routes", {"static"}) == 0);
  auto all = ipam_snapshot(c.calc, "");
  CHECK(all.size() == 3);
}

TEST_CASE("utilization: one decimal, whole numbers without .0") {
  CHECK(utilization(0, 0) == "0%");
  CHECK(utilization(1, 63) == "1.6%");
  CHECK(utilization(63, 63) == "100%");
  CHECK(utilization(1, 2) == "50%");
}

TEST_CASE("tabby ipam table: blocks, then totals per pool") {
  Cluster c;
  CHECK(render_ipam(*ipam_message(c.calc)) ==
        "+------------------+--------+---------+------+----------+-------------+\n"
        "|      BLOCK       |  NODE  |  POOL   | USED | CAPACITY | UTILIZATION |\n"
        "+------------------+--------+---------+------+----------+-------------+\n"
        "| 198.19.0.0/26    | node-1 | pool-a  | 1    | 63       | 1.6%        |\n"
        "| 198.19.0.64/26   | node-2 | pool-a  | 1    | 63       | 1.6%        |\n"
        "| 2001:db8:1::/122 | node-2 | pool-v6 | 1    | 63       | 1.6%        |\n"
        "+------------------+--------+---------+------+----------+-------------+\n"
        "\n"
        "+---------+-----------------+--------+------+----------+-------------+\n"
        "|  POOL   |      CIDR       | BLOCKS | USED | CAPACITY | UTILIZATION |\n"
        "+---------+-----------------+--------+------+----------+-------------+\n"
        "| pool-a  | 198.19.0.0/16   | 2      | 2    | 126      | 1.6%        |\n"
        "| pool-v6 | 2001:db8:1::/48 | 1      | 1    | 63       | 1.6%        |\n"
        "+---------+-----------------+--------+------+----------+-------------+\n");
  api::IpamBlockList empty;
  CHECK(render_ipam(empty) == "No IPAM blocks claimed.\n");
  // A block whose pool is gone is grouped under (none).
  api::IpamBlockList orphan;
  auto* b = orphan.add_blocks();
  b->set_cidr("10.0.0.0/26");
  b->set_node("n");
  b->set_capacity(63);
  b->set_used(63);
  std::string t = render_ipam(orphan);
  CHECK(t.find("| 10.0.0.0/26 | n    | (none) | 63   | 63       | 100%        |") != std::string::npos);
  CHECK(t.find("| (none) |      | 1      | 63   | 63       | 100%        |") != std::string::npos);
}

TEST_CASE("tabby endpoints table: sorted labels, IPs joined, count line") {
  Cluster c;
  CHECK(render_endpoints(*endpoints_message(c.calc, "node-1")) ==
        "+-------------------+--------+-----------+---------------+--------------------+\n"
        "|  NAMESPACE/NAME   |  NODE  | INTERFACE |      IPS      |       LABELS       |\n"
        "+-------------------+--------+-----------+---------------+--------------------+\n"
        "| default/db-1      | node-2 |           | 198.19.0.65   | app=db             |\n"
        "| default/web-1     | node-1 | tabby1a2b | 198.19.0.1    | app=web,tier=front |\n"
        "| kube-system/dns-1 | node-2 |           | 2001:db8:1::5 | k8s-app=kube-dns   |\n"
        "+-------------------+--------+-----------+---------------+--------------------+\n"
        "3 endpoints\n");
  api::EndpointList empty;
  CHECK(render_endpoints(empty) == "No endpoints.\n");
}

namespace {

// Runs cli(args) with std::cout captured; returns {exit code, output}.
std::pair<int, std::string> run_cli(int (*cli)(const std::vector<std::string>&), const std::vector<std::string>& args) {
  std::ostringstream out;
  auto* old = std::cout.rdbuf(out.rdbuf());
  int rc = cli(args);
  std::cout.rdbuf(old);
  return {rc, out.str()};
}

}  // namespace

TEST_CASE("tabby ipam / tabby endpoints against an ApiServer serving /v1/ipam and /v1/endpoints") {
  Cluster c;
  boost::asio::io_context io;
  ApiServer api(io);
  api.handle("/v1/ipam", [&] { return ipam_message(c.calc); });
  api.handle("/v1/endpoints", [&] { return endpoints_message(c.calc, "node-1"); });
  std::string sock = "/tmp/tabby-observe-test-" + std::to_string(::getpid()) + ".sock";
  auto st = api.start(sock);
  REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
  auto guard = boost::asio::make_work_guard(io);
  std::thread server([&] { io.run(); });  // api_get blocks: the server needs its own thread here

  auto [rc, text] = run_cli(cli_ipam, {"--socket", sock});
  CHECK(rc == 0);
  CHECK(text == render_ipam(*ipam_message(c.calc)));
  CHECK(text.find("| 198.19.0.64/26   | node-2 | pool-a  |") != std::string::npos);

  auto [rc2, json] = run_cli(cli_ipam, {"-o", "json", "--socket", sock});
  CHECK(rc2 == 0);
  CHECK(json.find("\"cidr\": \"198.19.0.0/26\"") != std::string::npos);
  CHECK(json.find("\"handle\": \"default/web-1\"") != std::string::npos);
  CHECK(json.find("\"ipipMode\": \"Always\"") != std::string::npos);

  auto [rc3, eps] = run_cli(cli_endpoints, {"--socket", sock});
  CHECK(rc3 == 0);
  CHECK(eps == render_endpoints(*endpoints_message(c.calc, "node-1")));

  auto [rc4, epjson] = run_cli(cli_endpoints, {"-o", "json", "--socket", sock});
  CHECK(rc4 == 0);
  CHECK(epjson.find("\"namespace\": \"kube-system\"") != std::string::npos);
  CHECK(epjson.find("\"interface\": \"tabby1a2b\"") != std::string::npos);
  CHECK(epjson.find("\"tier\": \"front\"") != std::string::npos);

  CHECK(run_cli(cli_ipam, {"--bogus"}).first == 2);
  guard.reset();
  boost::asio::post(io, [&] { api.stop(); io.stop(); });
  server.join();
  CHECK(run_cli(cli_endpoints, {"--socket", sock}).first == 1);  // no agent answering any more
}
