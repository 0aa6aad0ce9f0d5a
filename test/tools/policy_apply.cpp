// policy_apply.cpp — tabby-policy-apply: the test harness that stands in for the
// agent at the policy edge. Reads Namespace / WorkloadEndpoint / NetworkPolicy /
// GlobalNetworkPolicy / Tier / HostEndpoint manifests from files or directories, feeds them to the
// PolicyCompiler and programs the result with the NftExecutor in the network
// namespace it runs in. Keeps running: SIGHUP re-reads the manifests and applies
// the delta; SIGUSR1 checks for drift and repairs; SIGUSR2 writes a counters
// report. After each action it writes "<generation> <status>" to --ack FILE.
// With --api-socket it also serves GET /v1/policy there, exactly as the agent
// does (felix::ApiServer + felix::policy_message), from a second thread that
// takes the same lock as the apply loop.
//
//   tabby-policy-apply [--prefix cali] [--table tabby] [--ack FILE]
//                      [--report FILE] [--api-socket PATH] [--print | --once] PATH...
//   tabby-policy-apply --cli policy [-o json|wide] [--socket PATH]
//       runs the `tabby policy` client (felix::cli_policy) unchanged.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <mutex>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <nlohmann/json.hpp>

#include "felix/api/policy_messages.hpp"
#include "felix/api/server.hpp"
#include "felix/api/cli.hpp"
#include "policy/policy.hpp"

namespace fs = std::filesystem;
using namespace tabby;
using namespace tabby::policy;

namespace {

struct State {
  std::map<std::string, Policy> policies;
  std::map<std::string, Endpoint> endpoints;
  std::map<std::string, Namespace> namespaces;
  std::map<std::string, Tier> tiers;
  std::map<std::string, NetworkSet> network_sets;
  std::map<std::string, HostEndpoint> host_endpoints;  // every one read (a test node has them all)
};

Result<State> load(const std::vector<std::string>& paths) {
  std::vector<fs::path> files;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::directory_iterator(p))
        if (e.path().extension() == ".yaml" || e.path().extension() == ".yml") files.push_back(e.path());
    } else {
      files.emplace_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  State s;
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) return fail_msg(f.string() + ": cannot read");
    std::stringstream ss;
    ss << in.rdbuf();
    auto objs = parse_manifests(ss.str(), f.string());
    if (!objs) return fail(objs.error());
    for (auto& o : *objs) {
      // Every kind by name (no catch-all: parse_manifests refuses an unknown
      // apiVersion/kind, and a kind added to policy::Object without a case here
      // fails the build through -Wswitch instead of being filed as something else).
      switch (o.kind) {
        case Object::PolicyObj: s.policies[o.policy.id()] = o.policy; continue;
        case Object::EndpointObj: s.endpoints[o.endpoint.key()] = o.endpoint; continue;
        case Object::TierObj: s.tiers[o.tier.name] = o.tier; continue;
        case Object::NetworkSetObj: s.network_sets[o.network_set.key()] = o.network_set; continue;
        case Object::HostEndpointObj: s.host_endpoints[o.host_endpoint.name] = o.host_endpoint; continue;
        case Object::NamespaceObj: s.namespaces[o.ns.name] = o.ns; continue;
      }
      return fail_msg(f.string() + ": an object of kind #" + std::to_string(int(o.kind)) +
                      " that tabby-policy-apply does not handle");
    }
  }
  return s;
}

// Feeds the difference between two loads to the compiler.
void feed(PolicyCompiler& c, const State& old, const State& now) {
  for (const auto& [k, n] : now.namespaces) c.upsert_namespace(n);
  for (const auto& [k, t] : now.tiers) c.upsert_tier(t);
  for (const auto& [k, n] : now.network_sets) c.upsert_network_set(n);
  for (const auto& [k, e] : now.endpoints) c.upsert_endpoint(e);
  for (const auto& [k, p] : now.policies) c.upsert_policy(p);
  for (const auto& [k, h] : now.host_endpoints) c.upsert_host_endpoint(h);
  for (const auto& [k, h] : old.host_endpoints)
    if (!now.host_endpoints.count(k)) c.remove_host_endpoint(k);
  for (const auto& [k, p] : old.policies)
    if (!now.policies.count(k)) c.remove_policy(k);
  for (const auto& [k, e] : old.endpoints)
    if (!now.endpoints.count(k)) c.remove_endpoint(k);
  for (const auto& [k, n] : old.namespaces)
    if (!now.namespaces.count(k)) c.remove_namespace(k);
  for (const auto& [k, t] : old.tiers)
    if (!now.tiers.count(k)) c.remove_tier(k);
  for (const auto& [k, n] : old.network_sets)
    if (!now.network_sets.count(k)) c.remove_network_set(k);
}

void ack(const std::string& path, int gen, const std::string& status) {
  if (path.empty()) return;
  std::string tmp = path + ".tmp";
  {
    std::ofstream o(tmp);
    o << gen << " " << status << "\n";
  }
  fs::rename(tmp, path);
}

std::string report_json(const std::vector<EndpointReport>& reps) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : reps) {
    nlohmann::json e;
    e["endpoint"] = r.endpoint.endpoint;
    e["iface"] = r.endpoint.iface;
    e["ingress_chain"] = r.endpoint.ingress_chain;
    e["egress_chain"] = r.endpoint.egress_chain;
    e["ingress_dropped_packets"] = r.ingress_dropped_packets;
    e["egress_dropped_packets"] = r.egress_dropped_packets;
    e["ingress_packets"] = r.ingress_packets;
    e["ingress_bytes"] = r.ingress_bytes;
    e["egress_packets"] = r.egress_packets;
    e["egress_bytes"] = r.egress_bytes;
    e["policies"] = nlohmann::json::array();
    for (const auto& p : r.policies) {
      nlohmann::json pj;
      pj["policy"] = p.policy;
      pj["direction"] = p.direction == Direction::Ingress ? "ingress" : "egress";
      pj["rules"] = nlohmann::json::array();
      for (const auto& rc : p.rules)
        pj["rules"].push_back({{"index", rc.index}, {"rule", rc.text}, {"packets", rc.packets}, {"bytes", rc.bytes}});
      e["policies"].push_back(pj);
    }
    j.push_back(e);
  }
  return j.dump(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--cli" && std::string(argv[2]) == "policy")
    return felix::cli_policy(std::vector<std::string>(argv + 3, argv + argc));
  CompilerOptions opts;
  std::string ack_path, report_path, api_socket;
  bool print = false, once = false;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--prefix") opts.workload_prefix = next();
    else if (a == "--table") opts.table = next();
    else if (a == "--ack") ack_path = next();
    else if (a == "--report") report_path = next();
    else if (a == "--api-socket") api_socket = next();
    else if (a == "--print") print = true;
    else if (a == "--once") once = true;
    else if (a.starts_with("--")) {
      std::cerr << "unknown option " << a << "\n";
      return 2;
    } else paths.push_back(a);
  }
  if (paths.empty()) {
    std::cerr << "usage: tabby-policy-apply [--prefix P] [--table T] [--ack F] [--report F] [--api-socket S]"
                 " [--print|--once] PATH...\n       tabby-policy-apply --cli policy [-o json|wide] [--socket S]\n";
    return 2;
  }
  PolicyCompiler compiler(opts);
  State current;
  auto first = load(paths);
  if (!first) {
    std::cerr << first.error().message << "\n";
    return 1;
  }
  feed(compiler, current, *first);
  current = std::move(*first);
  if (print) {
    std::cout << compiler.full_script();
    return 0;
  }
  auto ex = NftExecutor::create();
  if (!ex) {
    std::cerr << ex.error().message << "\n";
    return 1;
  }
  NftExecutor& nft = **ex;
  // Guards compiler + nft between the apply loop (main thread) and the API thread.
  std::mutex mu;
  std::unique_lock<std::mutex> held(mu);
  int gen = 0;
  auto do_sync = [&](bool full) {
    auto r = nft.sync(compiler, full);
    ++gen;
    if (!r) {
      std::cerr << "apply failed: " << r.error().message << "\n";
      ack(ack_path, gen, "error");
      return false;
    }
    std::cout << "gen " << gen << (r->full ? " full " : r->netlink ? " delta(netlink) " : " delta ") << r->script_bytes
              << " bytes" << std::endl;
    ack(ack_path, gen, r->full ? "full" : r->netlink ? "netlink" : "delta");
    return true;
  };
  // Block the signals before any thread starts, so they all reach sigwait below.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  if (!do_sync(true)) return 1;
  if (once) return 0;

  // The agent's /v1/policy, served the way the agent serves it.
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  felix::ApiServer api(io);
  std::thread api_thread;
  if (!api_socket.empty()) {
    api.handle("/v1/policy", [&]() -> std::unique_ptr<google::protobuf::Message> {
      std::lock_guard<std::mutex> lk(mu);
      auto r = nft.report(compiler);
      if (!r) return felix::policy_error_message(&compiler, r.error().message);
      return felix::policy_message(*r, &compiler);
    });
    if (auto st = api.start(api_socket); !st) {
      std::cerr << st.error().message << "\n";
      return 1;
    }
    api_thread = std::thread([&io] { io.run(); });
  }
  auto stop_api = [&] {
    if (!api_thread.joinable()) return;
    work.reset();
    io.stop();
    api_thread.join();
    api.stop();  // the io thread is gone: safe to close the acceptor here
  };
  held.unlock();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT) {
      stop_api();
      return 0;
    }
    std::lock_guard<std::mutex> lk(mu);
    if (sig == SIGHUP) {
      auto next = load(paths);
      if (!next) {
        // Bad manifest: report it, keep the last good state programmed.
        std::cerr << "rejected: " << next.error().message << std::endl;
        ack(ack_path, ++gen, "rejected");
        continue;
      }
      feed(compiler, current, *next);
      current = std::move(*next);
      do_sync(false);
    } else if (sig == SIGUSR1) {
      auto d = nft.drift(compiler);
      if (d && !d->empty())
        for (const auto& line : *d) std::cout << "drift: " << line << "\n";
      auto r = nft.repair(compiler);
      if (!r) std::cerr << "repair: " << r.error().message << std::endl;
      ack(ack_path, ++gen, !r ? "error" : (*r ? "repaired" : "in-sync"));
    } else if (sig == SIGUSR2) {
      auto r = nft.report(compiler);
      if (!r) std::cerr << "report: " << r.error().message << std::endl;
      if (r && !report_path.empty()) {
        std::ofstream o(report_path + ".tmp");
        o << report_json(*r) << "\n";
        o.close();
        fs::rename(report_path + ".tmp", report_path);
      }
      ack(ack_path, ++gen, r ? "report" : "error");
    }
  }
}
