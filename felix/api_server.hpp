// api_server.hpp — the local control API: HTTP/1.1 over a Unix socket
// (Boost.Beast). Each GET path maps to a handler returning a protobuf message;
// the answer is binary protobuf, or JSON (protobuf's JSON mapping) when the
// client asks with `Accept: application/json` or `?format=json`.
// Handlers run on the io_context thread, so they read module state without locks
// and never mutate it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <google/protobuf/message.h>

#include "base/base.hpp"

namespace tabby::felix {

class ApiServer {
 public:
  using Handler = std::function<std::unique_ptr<google::protobuf::Message>()>;

  explicit ApiServer(boost::asio::io_context& io);
  ~ApiServer();
  // Register before start(): e.g. "/v1/status".
  void handle(const std::string& path, Handler h);
  // Binds the socket (replacing a stale socket file left by a dead agent, but
  // refusing if another agent is answering on it) and starts accepting.
  Status start(const std::string& socket_path);
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Client side, used by the CLI: GET `path` over the Unix socket; returns the
// body (binary protobuf) or an error naming the socket and what failed.
Result<std::string> api_get(const std::string& socket_path, const std::string& path);

}  // namespace tabby::felix
