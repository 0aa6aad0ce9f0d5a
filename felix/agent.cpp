// agent.cpp — the agent's main loop: load config, start the BGP speaker and the
// API, react to signals. All modules run on one io_context thread.
//
// Data flow (one screen; each edge is `producer -> consumer`):
//   config file  -> Speaker            (peers, announcements; SIGHUP re-reads)
//   Speaker      -> ApiServer          (read-only snapshots: /v1/status, /v1/routes)
//   Speaker      -> BgpKernelRoutes    (best routes -> kernel routes, when dataplane.enabled)
#include "felix/agent.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "bgp/speaker.hpp"
#include "felix/api_server.hpp"
#include "felix/bgp_kernel_routes.hpp"
#include "felix/config.hpp"
#include "proto/tabby.pb.h"

namespace tabby::felix {

namespace {

std::string rfc3339(std::chrono::system_clock::time_point t) {
  if (t.time_since_epoch().count() == 0) return "";
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::ostringstream ss;
  ss << std::put_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  return ss.str();
}

const char* origin_name(bgp::Origin o) {
  switch (o) {
    case bgp::Origin::Igp: return "IGP";
    case bgp::Origin::Egp: return "EGP";
    default: return "incomplete";
  }
}

std::string hex8(uint64_t v) {
  std::ostringstream ss;
  ss << std::hex << std::setw(16) << std::setfill('0') << v;
  return ss.str();
}

std::unique_ptr<api::Status> status_message(const AgentConfig& cfg, const bgp::Speaker& sp,
                                            std::chrono::system_clock::time_point started) {
  auto st = std::make_unique<api::Status>();
  st->set_node_name(cfg.node_name);
  st->set_router_id(cfg.bgp.router_id.str());
  st->set_as_number(cfg.bgp.asn);
  st->set_version(TABBY_VERSION);
  st->set_started(rfc3339(started));
  for (bgp::Family f : {bgp::kIpv4Unicast, bgp::kIpv6Unicast}) {
    auto* lr = st->add_loc_rib();
    lr->set_family(bgp::family_name(f));
    lr->set_routes(sp.route_count(f));
    lr->set_paths(sp.path_count(f));
    st->set_loc_rib_routes(st->loc_rib_routes() + lr->routes());
    st->set_loc_rib_paths(st->loc_rib_paths() + lr->paths());
  }
  for (const auto& p : sp.peers()) {
    auto* m = st->add_peers();
    m->set_peer_address(p.address.str());
    m->set_peer_port(p.port);
    m->set_peer_as(p.asn);
    m->set_peer_type(p.type);
    m->set_state(p.state);
    m->set_since(rfc3339(p.since));
    m->set_info(p.state == "Established" || p.last_error.empty() ? p.state : p.state + ": " + p.last_error);
    m->set_peer_router_id(p.router_id.is_unspecified() ? "" : p.router_id.str());
    m->set_prefixes_received(p.prefixes_received);
    m->set_prefixes_advertised(p.prefixes_advertised);
    m->set_prefixes_stale(p.prefixes_stale);
    m->set_hold_time(p.hold_time);
    m->set_flaps(p.flaps);
    m->set_last_error(p.last_error);
    m->set_graceful_restart(p.graceful_restart);
    for (auto f : p.families) m->add_families(bgp::family_name(f));
  }
  return st;
}

std::unique_ptr<api::RouteList> routes_message(const bgp::Speaker& sp) {
  auto rl = std::make_unique<api::RouteList>();
  for (const auto& r : sp.routes()) {
    auto* m = rl->add_routes();
    m->set_prefix(r.prefix.str());
    m->set_family(bgp::family_name(r.family));
    m->set_best_reason(r.best_reason);
    for (const auto& p : r.paths) {
      auto* pm = m->add_paths();
      const auto& a = *p.attrs;
      pm->set_peer_address(p.from);
      pm->set_next_hop(a.next_hop.str());
      pm->set_as_path(bgp::as_path_str(a.as_path));
      pm->set_origin(origin_name(a.origin));
      pm->set_has_med(a.med.has_value());
      pm->set_med(a.med.value_or(0));
      pm->set_local_pref(a.local_pref.value_or(100));
      for (uint32_t c : a.communities) pm->add_communities(community_str(c));
      for (const auto& c : a.large_communities) pm->add_large_communities(large_community_str(c));
      for (uint64_t c : a.ext_communities) pm->add_ext_communities(hex8(c));
      pm->set_originator_id(a.originator_id ? a.originator_id->str() : "");
      for (uint32_t c : a.cluster_list) pm->add_cluster_list(IpAddress::v4(c).str());
      pm->set_best(p.best);
      pm->set_ecmp(p.ecmp);
      pm->set_stale(p.stale);
    }
  }
  return rl;
}

void log(const std::string& msg) { std::cerr << "tabby: " << msg << std::endl; }

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
  AgentConfig config = std::move(*cfg);
  auto started = std::chrono::system_clock::now();

  boost::asio::io_context io;
  bgp::Speaker speaker(io, config.bgp);
  ApiServer api(io);

  // Speaker -> ApiServer: read-only snapshots.
  api.handle("/v1/status", [&] { return status_message(config, speaker, started); });
  api.handle("/v1/routes", [&] { return routes_message(speaker); });

  std::unique_ptr<BgpKernelRoutes> kernel;
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
  // Restart detection (RFC 4724 §4.1): a marker beside the API socket lives
  // while the agent runs and stays after a graceful stop or a crash; finding it
  // at start means peers may still hold our routes, so we come up as a
  // restarting speaker. A non-graceful stop removes it.
  const std::string marker = config.api_socket + ".running";
  bool restarting = ::access(marker.c_str(), F_OK) == 0;
  speaker.set_restarting(restarting);
  if (restarting) log("previous run did not stop for good: starting as a restarting BGP speaker (RFC 4724 R bit)");
  if (FILE* f = std::fopen(marker.c_str(), "w")) std::fclose(f);
  if (auto st = speaker.start(); !st) {
    std::cerr << "tabby agent: " << st.error().message << "\n";
    return 1;
  }
  log("node " + config.node_name + " running: router ID " + config.bgp.router_id.str() + ", AS " +
      std::to_string(config.bgp.asn) + ", " + std::to_string(config.bgp.peers.size()) + " peers, API on " +
      config.api_socket);

  boost::asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      // config file -> Speaker: re-read; a bad file keeps the running config.
      auto fresh = load_config(config_path);
      if (!fresh) {
        log("reload rejected, keeping the running config: " + fresh.error().message);
      } else if (fresh->api_socket != config.api_socket || fresh->node_name != config.node_name) {
        log("reload rejected: nodeName and apiSocket cannot change while running (restart the agent)");
      } else if (auto st = speaker.reconfigure(fresh->bgp); !st) {
        log("reload rejected: " + st.error().message);
      } else {
        config = std::move(*fresh);
        log("config reloaded from " + config_path);
      }
      signals.async_wait(on_signal);
      return;
    }
    log(std::string("stopping on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    // Graceful restart (RFC 4724): when enabled, leave without a NOTIFICATION
    // so that peers keep our routes while the agent restarts.
    speaker.stop(config.bgp.graceful_restart, "tabby agent stopping");
    if (kernel) kernel->stop();  // kernel routes stay in place (restart without loss)
    if (!config.bgp.graceful_restart) ::unlink(marker.c_str());
    api.stop();
    // Let queued NOTIFICATIONs go out, but never hang on a stuck peer.
    auto deadline = std::make_shared<boost::asio::steady_timer>(io, std::chrono::seconds(2));
    deadline->async_wait([&io, deadline](const boost::system::error_code&) { io.stop(); });
  };
  signals.async_wait(on_signal);
  io.run();
  return 0;
}

}  // namespace tabby::felix
