// dp_driver.cpp — tabby-dp-driver: runs the Linux dataplane from a desired-state
// file, for integration tests and benchmarks until the agent drives it. It plays the
// agent's calculation role in miniature: from a cluster description (this node, the
// nodes with their IPs and blocks, local pods, encapsulation and its mode) it builds
// the route classes and tunnel config with the tunnel module's pure decisions
// (ipip::use_tunnel for CrossSubnet) and hands them to LinuxDataplane.
//
//   tabby-dp-driver --config FILE [--status FILE] [--resync-seconds N] [--once] [--cleanup]
// SIGHUP re-reads FILE; SIGTERM/SIGINT exit leaving kernel state in place;
// --cleanup removes every tabby route and device and exits.
//
// FILE (JSON):
// { "node": "n1", "encapsulation": "None|IPIP|VXLAN", "mode": "Always|CrossSubnet",
//   "complete": true,
//   "nodes": [ {"name": "n1", "ip": "198.18.0.1", "blocks": ["198.19.0.0/26"],
//               "tunnel_address": "198.19.0.0"} ],
//   "pods": [ {"ip": "198.19.0.1", "veth": "cali1"} ],
//   "routes": [ {"dst": "203.0.113.0/24", "via": "198.18.0.2", "dev": "eth0", "onlink": false,
//                "nexthops": [{"via": ..., "dev": ..., "weight": 1}], "blackhole": false} ],
//   "vxlan": {"vni": 4096, "port": 4789, "ifname": "vxlan.tabby"} }
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "dataplane/linux_dataplane.hpp"
#include "ipip/ipip.hpp"

using namespace tabby;
using namespace tabby::dataplane;
using nlohmann::json;

namespace {

struct Desired {
  std::vector<Route> classes[kRouteClassCount];
  TunnelConfig tunnels;
  std::vector<std::string> workload_ifs;
  bool complete = true;
};

IpAddress need_ip(const json& j, const char* key) {
  auto r = IpAddress::parse(j.at(key).get<std::string>());
  if (!r) throw std::runtime_error(std::string(key) + ": " + r.error().message);
  return *r;
}
Prefix need_prefix(const std::string& s) {
  auto r = Prefix::parse(s);
  if (!r) throw std::runtime_error(r.error().message);
  return *r;
}

Route parse_route(const json& j) {
  Route r;
  r.dst = need_prefix(j.at("dst").get<std::string>());
  if (j.value("blackhole", false)) {
    r.type = RouteType::Blackhole;
    return r;
  }
  auto hop = [](const json& h) {
    NextHop n;
    if (h.contains("via")) n.gateway = need_ip(h, "via");
    n.ifname = h.value("dev", "");
    n.onlink = h.value("onlink", false);
    n.weight = static_cast<uint8_t>(h.value("weight", 1));
    return n;
  };
  if (j.contains("nexthops"))
    for (const auto& h : j["nexthops"]) r.nexthops.push_back(hop(h));
  else
    r.nexthops.push_back(hop(j));
  r.metric = j.value("metric", 0u);
  return r;
}

Result<Desired> load(const std::string& path, ipip::TunnelDevices& devs) {
  try {
    std::ifstream f(path);
    if (!f) return fail_msg(path + ": cannot open");
    json j = json::parse(f);
    Desired d;
    d.complete = j.value("complete", true);
    std::string self = j.value("node", "");
    std::string encap = j.value("encapsulation", "None");
    auto mode = ipip::parse_encap_mode(j.value("mode", "Always"));
    if (!mode) return fail_msg(path + ": mode: " + mode.error().message);
    if (encap != "None" && encap != "IPIP" && encap != "VXLAN")
      return fail_msg(path + ": encapsulation: '" + encap + "' is not None, IPIP or VXLAN");

    const json nodes = j.value("nodes", json::array());
    const json* me = nullptr;
    for (const auto& n : nodes)
      if (n.at("name") == self) me = &n;
    if (j.contains("nodes") && !me) return fail_msg(path + ": node '" + self + "' is not in nodes");
    if (me) {
      IpAddress node_ip = need_ip(*me, "ip");
      auto under = devs.find_underlay(node_ip);
      if (!under) return fail_msg(under.error().message);
      TunnelConfig& t = d.tunnels;
      t.node_ip = node_ip;
      if (j.contains("vxlan")) {
        t.vxlan.vni = j["vxlan"].value("vni", 4096u);
        t.vxlan.port = static_cast<uint16_t>(j["vxlan"].value("port", 4789u));
        t.vxlan.ifname = j["vxlan"].value("ifname", t.vxlan.ifname);
      }
      t.ipip.enabled = encap == "IPIP";
      t.vxlan.enabled = encap == "VXLAN";
      if (me->contains("tunnel_address")) {
        t.ipip.tunnel_address = need_ip(*me, "tunnel_address");
        t.vxlan.tunnel_address = t.ipip.tunnel_address;
      }
      for (const auto& b : me->value("blocks", json::array()))
        d.classes[int(RouteClass::LocalBlock)].push_back(block_blackhole(need_prefix(b.get<std::string>())));
      for (const auto& n : nodes) {
        if (n.at("name") == self) continue;
        IpAddress peer = need_ip(n, "ip");
        bool tunnel = encap != "None" && ipip::use_tunnel(*mode, under->subnet, peer);
        if (encap == "VXLAN" && tunnel && n.contains("tunnel_address"))
          t.vteps.push_back(Vtep{n["name"], need_ip(n, "tunnel_address"), peer, ipip::vxlan_mac_for(peer)});
        for (const auto& b : n.value("blocks", json::array())) {
          Prefix block = need_prefix(b.get<std::string>());
          Route r;
          if (!tunnel) r = direct_route(block, peer, under->ifname);
          else if (encap == "IPIP") r = onlink_route(block, peer, "tunl0");
          else r = onlink_route(block, need_ip(n, "tunnel_address"), t.vxlan.ifname);
          d.classes[int(RouteClass::RemoteBlock)].push_back(r);
        }
      }
    }
    for (const auto& p : j.value("pods", json::array())) {
      std::string veth = p.at("veth");
      d.classes[int(RouteClass::LocalWorkload)].push_back(workload_route(need_ip(p, "ip"), veth));
      d.workload_ifs.push_back(veth);
    }
    for (const auto& r : j.value("routes", json::array())) d.classes[int(RouteClass::Static)].push_back(parse_route(r));
    return d;
  } catch (const std::exception& e) {
    return fail_msg(path + ": " + e.what());
  }
}

void write_status(const std::string& path, const DataplaneStatus& s, uint64_t generation) {
  if (path.empty()) return;
  json j;
  j["generation"] = generation;
  j["in_sync"] = s.in_sync;
  j["desired_complete"] = s.desired_complete;
  j["routes_desired"] = s.routes_desired;
  j["routes_programmed"] = s.routes_programmed;
  j["routes_pending"] = s.routes_pending;
  j["routes_added"] = s.routes_added;
  j["routes_removed"] = s.routes_removed;
  j["applies"] = s.applies;
  j["resyncs"] = s.resyncs;
  j["last_apply_seconds"] = s.last_apply_seconds;
  j["errors"] = s.errors;
  j["conflicts"] = json::array();
  for (const auto& c : s.conflicts)
    j["conflicts"].push_back({{"wanted", c.wanted.str()}, {"kernel_protocol", c.kernel_protocol}, {"kernel_route", c.kernel_route}});
  std::string tmp = path + ".tmp";
  std::ofstream(tmp) << j.dump(1) << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

void install(LinuxDataplane& dp, Desired d) {
  for (int c = 0; c < kRouteClassCount; ++c) dp.set_routes(static_cast<RouteClass>(c), std::move(d.classes[c]));
  dp.set_tunnels(std::move(d.tunnels));
  dp.set_workload_interfaces(std::move(d.workload_ifs));
  if (d.complete) dp.desired_state_complete();
}

void report(const DataplaneStatus& s, const Status& r) {
  if (!r) std::fprintf(stderr, "tabby-dp-driver: apply: %s\n", r.error().message.c_str());
  for (const auto& c : s.conflicts)
    std::fprintf(stderr, "tabby-dp-driver: conflict: want %s but the kernel holds proto %u route %s: left alone\n",
                 c.wanted.str().c_str(), c.kernel_protocol, c.kernel_route.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string config, status_path;
  int resync_seconds = 10;
  bool once = false, cleanup = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") config = next();
    else if (a == "--status") status_path = next();
    else if (a == "--resync-seconds") resync_seconds = std::stoi(next());
    else if (a == "--once") once = true;
    else if (a == "--cleanup") cleanup = true;
    else {
      std::fprintf(stderr, "usage: tabby-dp-driver --config FILE [--status FILE] [--resync-seconds N] [--once] [--cleanup]\n");
      return 2;
    }
  }
  if (config.empty()) {
    std::fprintf(stderr, "tabby-dp-driver: --config is required\n");
    return 2;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

  auto dpr = LinuxDataplane::open();
  if (!dpr) {
    std::fprintf(stderr, "tabby-dp-driver: %s\n", dpr.error().message.c_str());
    return 1;
  }
  LinuxDataplane& dp = **dpr;
  ipip::TunnelDevices devs;
  auto desired = load(config, devs);
  if (!desired) {
    std::fprintf(stderr, "tabby-dp-driver: %s\n", desired.error().message.c_str());
    return 1;
  }
  if (cleanup) {
    dp.set_tunnels(desired->tunnels);
    Status s = dp.cleanup();
    if (!s) std::fprintf(stderr, "tabby-dp-driver: cleanup: %s\n", s.error().message.c_str());
    return s ? 0 : 1;
  }
  uint64_t generation = 1;
  install(dp, std::move(*desired));
  Status r = dp.apply();
  report(dp.status(), r);
  write_status(status_path, dp.status(), generation);
  if (once) return r ? 0 : 1;

  auto last_resync = std::chrono::steady_clock::now();
  for (;;) {
    bool in_sync = dp.status().in_sync;
    int timeout_ms = in_sync ? 1000 : 500;
    pollfd fds[2] = {{sfd, POLLIN, 0}, {dp.event_fd(), POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms);
    if (n < 0 && errno != EINTR) {
      std::perror("poll");
      return 1;
    }
    bool work = !in_sync;
    if (n > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
          std::fprintf(stderr, "tabby-dp-driver: exiting, kernel state left in place\n");
          return 0;
        }
        auto d = load(config, devs);
        if (!d) {
          std::fprintf(stderr, "tabby-dp-driver: %s (keeping the last good state)\n", d.error().message.c_str());
        } else {
          install(dp, std::move(*d));
          ++generation;
          work = true;
        }
      }
    }
    if (n > 0 && (fds[1].revents & POLLIN)) {
      if (auto s = dp.handle_events(); !s) std::fprintf(stderr, "tabby-dp-driver: events: %s\n", s.error().message.c_str());
      work = true;
    }
    auto now = std::chrono::steady_clock::now();
    if (now - last_resync >= std::chrono::seconds(resync_seconds)) {
      last_resync = now;
      r = dp.resync();
      report(dp.status(), r);
      write_status(status_path, dp.status(), generation);
      continue;
    }
    if (work) {
      r = dp.apply();
      report(dp.status(), r);
      write_status(status_path, dp.status(), generation);
    }
  }
}
