// health_server.hpp — the agent's plain-HTTP health and metrics endpoint (Boost.Beast
// over TCP, on the agent's io_context; no threads):
//   GET /livez    200 "ok" — answered by the event loop itself, so an answer proves it runs
//   GET /readyz   200 "ok", or 503 with the reasons one per line; `?verbose` lists every
//                 check ("[+]name ok" / "[-]name failed: reason") either way
//   GET /metrics  the Prometheus text (Content-Type: text/plain; version=0.0.4)
// HEAD is answered like GET without a body; other methods get 405, other paths 404.
// Limits (health_server_limits()): at most 64 connections, and a new one is always
// admitted (the connection waiting longest for a request is closed to make room);
// a request must arrive whole within 10 s of connecting or of the previous answer;
// headers over 8 KiB get 431, a body over 4 KiB gets 413; an answer must be written
// within 10 s. When the process is out of file descriptors, accept backs off
// (base/accept_backoff.hpp) after closing an idle connection of its own if any.
// The callbacks run on the io_context thread, so they read agent state without locks.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/base.hpp"
#include "felix/api/connection_slots.hpp"

namespace tabby::felix {

struct HealthCheck {
  std::string name;    // "datastore", "bgp", "dataplane"
  bool ok = false;
  std::string reason;  // why not (when !ok): "datastore not in sync"
};

struct HealthState {
  bool ready = true;
  std::vector<std::string> reasons;  // one line each, shown by /readyz when not ready
  std::vector<HealthCheck> checks;   // shown by /readyz?verbose
  // Records a check; a failing one clears `ready` and adds its reason.
  void check(std::string name, bool ok, std::string reason = "");
};

struct HttpAnswer {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// The /readyz answer for a state (pure; exposed for tests).
HttpAnswer readyz_answer(const HealthState& st, bool verbose);

// The health server's limits: 64 connections, 10 s per request and per answer.
inline HttpServerLimits health_server_limits() {
  HttpServerLimits l;
  l.max_connections = 64;
  l.request_timeout = std::chrono::seconds(10);
  l.write_timeout = std::chrono::seconds(10);
  return l;
}

// "host:port" → address and port: "127.0.0.1:9091", "[::1]:9091", "localhost:9091"
// (= 127.0.0.1), ":9091" or "0.0.0.0:9091" (every IPv4 address), "[::]:9091".
Result<std::pair<IpAddress, uint16_t>> parse_listen_address(const std::string& text);

class HealthServer {
 public:
  using MetricsFn = std::function<std::string()>;   // the /metrics body, e.g. Metrics::scrape
  using ReadyFn = std::function<HealthState()>;

  HealthServer(boost::asio::io_context& io, MetricsFn metrics, ReadyFn ready);
  ~HealthServer();
  HealthServer(const HealthServer&) = delete;
  HealthServer& operator=(const HealthServer&) = delete;

  // Replaces the limits (before start(); tests use short timeouts).
  void set_limits(const HttpServerLimits& limits);
  // Connections open now (for tests).
  size_t open_connections() const;

  // Binds and starts accepting. Error names the address: "cannot listen on metrics
  // address 127.0.0.1:9091: Address already in use".
  Status start(const std::string& address);
  // Closes the listener (open connections finish their current request).
  void stop();
  // The bound port (useful with port 0); 0 before start().
  uint16_t port() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tabby::felix
