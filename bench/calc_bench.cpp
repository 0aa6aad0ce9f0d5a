// calc_bench.cpp — the calculation graph under churn (the agent benchmark's cluster shape):
// a datastore of N nodes and P pods (L of them on this node), parsed from YAML,
// fed to felix::Calc and programmed into the in-memory RecordingDataplane; then
// single pod add/delete round trips (datastore event -> route op -> dataplane apply).
// Prints figures; asserts nothing about time. Usage: calc_bench [nodes pods local churn]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "felix/calc/calc.hpp"
#include "test/fakes/recording_dataplane.hpp"
#include "felix/calc/resources.hpp"

using namespace tabby;
using namespace tabby::felix;
using Clock = std::chrono::steady_clock;

namespace {
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

long rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return 0;
}

std::string ip4(uint32_t v) {
  return std::to_string(v >> 24) + "." + std::to_string((v >> 16) & 255) + "." + std::to_string((v >> 8) & 255) + "." +
         std::to_string(v & 255);
}

std::string wep(const std::string& name, const std::string& node, uint32_t ip, int n) {
  char iface[16];
  std::snprintf(iface, sizeof iface, "cali%011x", n);
  return "apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: " + name +
         ", namespace: default, labels: {app: a" + std::to_string(n % 50) + "}}\nspec: {node: " + node +
         ", interfaceName: " + iface + ", ips: [" + ip4(ip) + "]}\n---\n";
}
}  // namespace

int main(int argc, char** argv) {
  int nodes = argc > 1 ? std::atoi(argv[1]) : 500;
  int pods = argc > 2 ? std::atoi(argv[2]) : 20000;
  int local = argc > 3 ? std::atoi(argv[3]) : 200;
  int churn = argc > 4 ? std::atoi(argv[4]) : 2000;
  const uint32_t pool_base = (198u << 24) | (19u << 16);  // 198.19.0.0/16, /26 blocks
  long rss0 = rss_kb();

  // ---- the datastore as YAML text
  std::string y = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\n"
                  "spec: {cidr: 198.19.0.0/16, vxlanMode: CrossSubnet}\n---\n";
  uint32_t next_block = 0;
  std::vector<std::vector<uint32_t>> blocks(nodes);
  for (int i = 0; i < nodes; ++i) {
    std::string name = "node-" + std::to_string(i);
    y += "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: " + name + "}\nspec: {bgp: {ipv4Address: " +
         ip4((198u << 24) | (18u << 16) | static_cast<uint32_t>(i + 1)) + "/16}}\n---\n";
  }
  int remote_pods = pods - local;
  std::vector<int> per_node(nodes, 0);
  per_node[0] = local;
  for (int i = 0; i < remote_pods; ++i) per_node[1 + i % std::max(1, nodes - 1)]++;
  int n = 0;
  std::vector<uint32_t> used_next(nodes);
  for (int i = 0; i < nodes; ++i) {
    int need = (per_node[i] + 62) / 63;
    for (int b = 0; b < std::max(1, need); ++b) {
      uint32_t base = pool_base + (next_block++ << 6);
      blocks[i].push_back(base);
      y += "apiVersion: tabby.dev/v1\nkind: BlockAffinity\nmetadata: {name: b" + std::to_string(base) +
           "}\nspec: {cidr: " + ip4(base) + "/26, node: node-" + std::to_string(i) + "}\n---\n";
    }
    for (int p = 0; p < per_node[i]; ++p) {
      uint32_t ip = blocks[i][p / 63] + 1 + static_cast<uint32_t>(p % 63);
      y += wep("pod-" + std::to_string(n), "node-" + std::to_string(i), ip, n);
      ++n;
    }
  }

  // ---- cold start
  auto t0 = Clock::now();
  ManifestTracker tracker;
  std::vector<ResourceError> errors;
  auto events = tracker.update_source("cluster.yaml", y, &errors);
  double parse_ms = ms_since(t0);
  if (!errors.empty()) {
    std::printf("error: %s\n", errors[0].message.c_str());
    return 1;
  }
  auto t1 = Clock::now();
  Calc calc(CalcOptions{"node-0", {}, "tunl0", "vxlan.tabby", 4096, 4789});
  for (const auto& e : events) (void)calc.apply(e);
  (void)calc.take_changes();
  double calc_ms = ms_since(t1);
  std::set<std::string> ifaces{"vxlan.tabby", "tunl0"};
  for (const auto& i : calc.workload_interfaces()) ifaces.insert(i);
  dataplane::RecordingDataplane dp(ifaces);
  auto t2 = Clock::now();
  calc.program_full(dp);
  dp.desired_state_complete();
  (void)dp.apply();
  double program_ms = ms_since(t2);
  long rss1 = rss_kb();

  // ---- churn: one local pod added then deleted, event -> routes in the (recorded) kernel
  std::vector<double> add_us, del_us;
  uint32_t spare_block = pool_base + (next_block++ << 6);
  Resource aff;
  aff.key = {Kind::BlockAffinity, "", "spare"};
  aff.body = BlockAffinity{Prefix::from_v4(spare_block, 26), "node-0", {}};
  (void)calc.upsert(aff);
  calc.apply_to(dp, calc.take_changes());
  (void)dp.apply();
  for (int i = 0; i < churn; ++i) {
    Resource r;
    r.key = {Kind::WorkloadEndpoint, "default", "churn"};
    WorkloadEndpoint w;
    w.node = "node-0";
    w.iface = "cali00000000000";
    w.ips = {IpAddress::v4(spare_block + 1 + static_cast<uint32_t>(i % 60))};
    w.labels = {{"app", "churn"}};
    r.body = w;
    dp.add_interface(w.iface);
    auto a = Clock::now();
    (void)calc.upsert(r);
    auto ch = calc.take_changes();
    calc.apply_to(dp, ch);
    (void)dp.apply();
    add_us.push_back(ms_since(a) * 1000);
    auto d = Clock::now();
    calc.remove(r.key);
    ch = calc.take_changes();
    calc.apply_to(dp, ch);
    (void)dp.apply();
    del_us.push_back(ms_since(d) * 1000);
  }
  auto pct = [](std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
  };
  std::printf("calc_bench: %d nodes, %d pods (%d local), %zu objects, %.1f MB of YAML\n", nodes, pods, local,
              events.size(), static_cast<double>(y.size()) / 1e6);
  std::printf("  %-34s %10.1f ms\n", "parse (ManifestTracker)", parse_ms);
  std::printf("  %-34s %10.1f ms\n", "calculate (feed + take_changes)", calc_ms);
  std::printf("  %-34s %10.1f ms  (%zu routes)\n", "program RecordingDataplane", program_ms,
              dp.kernel_routes(dataplane::kTabbyRouteProtocol).size());
  std::printf("  %-34s %10.1f us / %.1f us\n", "pod add p50 / p99", pct(add_us, 0.5), pct(add_us, 0.99));
  std::printf("  %-34s %10.1f us / %.1f us\n", "pod delete p50 / p99", pct(del_us, 0.5), pct(del_us, 0.99));
  std::printf("  %-34s %10ld kB (start %ld kB; includes the YAML text and parsed copies)\n", "RSS after cold start",
              rss1, rss0);
  std::printf("calc_bench cold_ms=%.1f add_p50_us=%.1f add_p99_us=%.1f del_p99_us=%.1f rss_kb=%ld\n",
              parse_ms + calc_ms + program_ms, pct(add_us, 0.5), pct(add_us, 0.99), pct(del_us, 0.99), rss1);
  return 0;
}
