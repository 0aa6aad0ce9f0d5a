// agent.cpp — `tabby agent`: load the config; with a `datastore` key run the
// cluster agent (cluster_agent.cpp), otherwise the static-config agent below: start
// the BGP speaker and the API, react to signals. One io_context thread.
//
// Static-config data flow (one screen; each edge is `producer -> consumer`):
//   config file  -> Speaker            (peers, announcements; SIGHUP re-reads)
//   Speaker      -> ApiServer          (read-only snapshots: /v1/status, /v1/routes)
//   Speaker      -> BgpKernelRoutes    (best routes -> kernel routes, when dataplane.enabled)
//   Speaker, BgpKernelRoutes -> Metrics -> HealthServer (/metrics, /readyz, /livez)
#include "felix/agent/agent.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>

#include "bgp/speaker.hpp"
#include "felix/api/bgp_messages.hpp"
#include "felix/api/server.hpp"
#include "felix/agent/bgp_kernel_routes.hpp"
#include "felix/agent/cluster_agent.hpp"
#include "felix/config/config_file.hpp"
#include "felix/api/health_server.hpp"
#include "felix/api/metrics.hpp"
#include "proto/tabby.pb.h"
#include "log/log.hpp"

namespace tabby::felix {

namespace {

constexpr logging::Logger kLog{"agent"};

}  // namespace

int run_agent(const std::vector<std::string>& args) {
  std::string config_path;
  for (size_t i = 0; i < args.size(); ++i) {
    if ((args[i] == "--config" || args[i] == "-c") && i + 1 < args.size()) config_path = args[++i];
    else if (args[i].rfind("--config=", 0) == 0) config_path = args[i].substr(9);
    else {
      std::cerr << "tabby agent: unknown argument '" << args[i] << "'\nusage: tabby agent --config FILE\n";
      return 2;
    }
  }
  if (config_path.empty()) {
    std::cerr << "tabby agent: --config FILE is required\n";
    return 2;
  }
  auto cfg = load_config(config_path);
  if (!cfg) {
    std::cerr << "tabby agent: " << cfg.error().message << "\n";
    return 2;
  }
  if (cfg->datastore) return run_cluster_agent(std::move(*cfg), config_path);
  AgentConfig config = std::move(*cfg);
  auto started = std::chrono::system_clock::now();

  boost::asio::io_context io;
  bgp::Speaker speaker(io, config.bgp);
  ApiServer api(io);

  // Speaker -> ApiServer: read-only snapshots.
  std::unique_ptr<BgpKernelRoutes> kernel;
  std::function<HealthState()> health_state;
  // A SIGHUP reload that could not be applied (in full): a problem in status and
  // /readyz until a later reload applies cleanly.
  std::string config_problem;
  api.handle("/v1/status", [&] {
    auto st = status_message(config.node_name, speaker, started);
    if (!config_problem.empty()) st->add_problems(config_problem);
    auto h = health_state();
    st->set_ready(h.ready);
    for (auto& w : h.reasons) st->add_not_ready(w);
    return st;
  });
  api.handle("/v1/routes", [&] { return routes_message(speaker); });

  // Speaker, BgpKernelRoutes -> Metrics -> HealthServer (metricsAddress).
  Metrics metrics;
  declare_agent_metrics(metrics);
  auto health = [&] {
    HealthState h;
    h.check("bgp", speaker.initial_sync_done(), bgp_waiting_reason(speaker.peers()));
    if (kernel) h.check("dataplane", kernel->status().in_sync, "dataplane: not in sync");
    h.check("config", config_problem.empty(), config_problem);
    return h;
  };
  metrics.add_collector([&](Metrics& m) {
    std::map<std::string, uint64_t> installed;  // every best route is installed when the dataplane is on
    if (kernel)
      for (const auto& r : speaker.routes())
        for (const auto& p : r.paths)
          if (p.best) ++installed[p.from];
    std::vector<PeerSnapshot> ps;
    for (const auto& p : speaker.peers()) {
      std::string addr = p.address.str();
      ps.push_back({addr, p.state, p.type, p.prefixes_received, p.prefixes_advertised, installed[addr], p.flaps});
    }
    collect_bgp(m, ps);
    if (kernel) collect_dataplane(m, kernel->status());
  });
  health_state = health;
  HealthServer health_server(io, [&] { return metrics.scrape(); }, health);

  if (config.dataplane_enabled) {
    auto k = BgpKernelRoutes::open(io);
    if (!k) {
      std::cerr << "tabby agent: " << k.error().message << "\n";
      return 1;
    }
    kernel = std::move(*k);
    // Speaker -> BgpKernelRoutes: best-path changes, then the end of the initial sync.
    speaker.on_best_route_change([&](const std::vector<bgp::BestRouteChange>& c) { kernel->apply(c); });
    speaker.on_initial_sync([&] { kernel->initial_sync_done(); });
  }

  if (auto st = api.start(config.api_socket); !st) {
    std::cerr << "tabby agent: " << st.error().message << "\n";
    return 1;
  }
  if (!config.metrics_address.empty()) {
    if (auto st = health_server.start(config.metrics_address); !st) {
      std::cerr << "tabby agent: " << st.error().message << "\n";
      return 1;
    }
  }
  // Restart detection (RFC 4724 §4.1): a marker beside the API socket lives
  // while the agent runs and stays after a graceful stop or a crash; finding it
  // at start means peers may still hold our routes, so we come up as a
  // restarting speaker. A non-graceful stop removes it.
  const std::string marker = config.api_socket + ".running";
  bool restarting = ::access(marker.c_str(), F_OK) == 0;
  speaker.set_restarting(restarting);
  if (restarting) kLog.info("previous run did not stop for good: starting as a restarting BGP speaker (RFC 4724 R bit)");
  if (FILE* f = std::fopen(marker.c_str(), "w")) std::fclose(f);
  if (auto st = speaker.start(); !st) {
    std::cerr << "tabby agent: " << st.error().message << "\n";
    return 1;
  }
  kLog.info("node " + config.node_name + " running: router ID " + config.bgp.router_id.str() + ", AS " +
      std::to_string(config.bgp.asn) + ", " + std::to_string(config.bgp.peers.size()) + " peers, API on " +
      config.api_socket);

  boost::asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      // config file -> Speaker: re-read; a bad file keeps the running config.
      // Everything the speaker has (identity, listener, cluster ID, graceful
      // restart, peers, announcements) applies at run time; what cannot is a
      // problem (status, /readyz 503, tabby_config_apply_failures_total).
      auto fresh = load_config(config_path);
      auto problem = [&](const std::string& msg) {
        config_problem = msg;
        kLog.info(msg);
        count_config_apply_failure(metrics, "reload");
      };
      std::string fixed;
      if (fresh) {
        auto key = [&](bool changed, const char* k) {
          if (changed) fixed += std::string(fixed.empty() ? "'" : ", '") + k + "'";
        };
        key(fresh->node_name != config.node_name, "nodeName");
        key(fresh->api_socket != config.api_socket, "apiSocket");
        key(fresh->metrics_address != config.metrics_address, "metricsAddress");
        key(fresh->dataplane_enabled != config.dataplane_enabled, "dataplane.enabled");
        key(fresh->datastore.has_value(), "datastore");
      }
      if (!fresh) {
        problem("config reload refused, running config kept: " + fresh.error().message);
      } else if (!fixed.empty()) {
        problem("config reload refused, running config kept: " + config_path + ": " + fixed +
                " cannot change while the agent runs (restart the agent)");
      } else if (auto st = speaker.reconfigure(fresh->bgp); !st) {
        config = std::move(*fresh);
        problem("config reload from " + config_path + " not fully applied: " + st.error().message);
      } else {
        config = std::move(*fresh);
        config_problem.clear();
        kLog.info("config reloaded from " + config_path);
      }
      signals.async_wait(on_signal);
      return;
    }
    kLog.info(std::string("stopping on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    // Graceful restart (RFC 4724): when enabled, leave without a NOTIFICATION
    // so that peers keep our routes while the agent restarts.
    speaker.stop(config.bgp.graceful_restart, "tabby agent stopping");
    if (kernel) kernel->stop();  // kernel routes stay in place (restart without loss)
    if (!config.bgp.graceful_restart) ::unlink(marker.c_str());
    api.stop();
    health_server.stop();
    // Let queued NOTIFICATIONs go out, but never hang on a stuck peer.
    auto deadline = std::make_shared<boost::asio::steady_timer>(io, std::chrono::seconds(2));
    deadline->async_wait([&io, deadline](const boost::system::error_code&) { io.stop(); });
  };
  signals.async_wait(on_signal);
  io.run();
  return 0;
}

}  // namespace tabby::felix
