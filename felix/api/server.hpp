// server.hpp — the local control API: HTTP/1.1 over a Unix socket
// (Boost.Beast). Each GET path maps to a handler returning a protobuf message;
// the answer is binary protobuf, or JSON (protobuf's JSON mapping) when the
// client asks with `Accept: application/json` or `?format=json`.
// Handlers run on the io_context thread, so they read module state without locks
// and never mutate it.
// Limits (HttpServerLimits defaults): at most 64 connections, and a new one is
// always admitted (the connection waiting longest for a request is closed to make
// room); a request must arrive whole within 10 s of connecting or of the previous
// answer; headers over 8 KiB get 431, a body over 4 KiB 413; an answer must be
// written within 60 s. Out of file descriptors, accept backs off
// (base/accept_backoff.hpp) after closing an idle connection of its own if any.
//
// Module felix/api. Owns: what the agent shows: API messages and metrics (pure), the
// local API server, CLI and health/metrics port (I/O). May call: felix/calc, policy,
// bgp (read-only state), proto, Boost.Asio/Beast, log. It never changes agent state.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <google/protobuf/message.h>

#include "base/base.hpp"
#include "felix/api/connection_slots.hpp"

namespace tabby::felix {

class ApiServer {
 public:
  using Handler = std::function<std::unique_ptr<google::protobuf::Message>()>;

  explicit ApiServer(boost::asio::io_context& io);
  ~ApiServer();
  // Register before start(): e.g. "/v1/status".
  void handle(const std::string& path, Handler h);
  // A handler that reads the request's query string (the text after '?').
  using QueryHandler = std::function<std::unique_ptr<google::protobuf::Message>(const std::string& query)>;
  void handle_query(const std::string& path, QueryHandler h);
  // A handler that answers later, for work that must not hold up the event loop
  // (`tabby policy trace --check` waits for a probe packet): it calls `reply` once,
  // on the io_context's thread; the connection waits within its request deadline
  // and a reply to a connection closed meanwhile is dropped.
  using Reply = std::function<void(std::unique_ptr<google::protobuf::Message>)>;
  using AsyncQueryHandler = std::function<void(const std::string& query, Reply reply)>;
  void handle_query_async(const std::string& path, AsyncQueryHandler h);
  // Binds the socket (replacing a stale socket file left by a dead agent, but
  // refusing if another agent is answering on it) and starts accepting.
  Status start(const std::string& socket_path);
  void stop();
  // Replaces the limits (before start(); tests use short timeouts).
  void set_limits(const HttpServerLimits& limits);
  // Connections open now (for tests).
  size_t open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Client side, used by the CLI: GET `path` over the Unix socket; returns the
// body (binary protobuf) or an error naming the socket and what failed.
Result<std::string> api_get(const std::string& socket_path, const std::string& path);

}  // namespace tabby::felix
