// server.cpp — HTTP over a Unix socket with Boost.Beast: a small async
// server (one session per connection, keep-alive) and a blocking client.
// The server cannot be starved: a connection cap that closes the connection
// waiting longest instead of refusing a new one, one deadline per request,
// header/body limits (431/413), accept backoff on EMFILE.
#include "felix/api/server.hpp"

#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <optional>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "base/accept_backoff.hpp"
#include "proto/tabby.pb.h"
#include "log/log.hpp"

namespace tabby::felix {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

namespace {

constexpr logging::Logger kLog{"api"};

class HttpSession;

// What sessions share with the server.
struct Shared {
  HttpServerLimits limits;
  ConnectionSlots<HttpSession> slots{limits.max_connections};
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(local::socket s, const std::map<std::string, ApiServer::AsyncQueryHandler>& handlers, std::shared_ptr<Shared> srv)
      : socket_(std::move(s)), deadline_(socket_.get_executor()), handlers_(handlers), srv_(std::move(srv)) {
    slot_ = srv_->slots.add(this, std::chrono::steady_clock::now());
  }
  ~HttpSession() { srv_->slots.remove(slot_); }

  void start() { read(); }

  // Closes the connection now (idempotent); it leaves the slots at once.
  void close() {
    if (closed_) return;
    closed_ = true;
    srv_->slots.remove(slot_);
    deadline_.cancel();
    beast::error_code ignored;
    socket_.shutdown(local::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  // The connection is closed unless the next step ends within `d`.
  void arm(std::chrono::milliseconds d) {
    deadline_.expires_after(d);
    deadline_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->close();
    });
  }

  void read() {
    if (closed_) return;
    srv_->slots.reading(slot_, std::chrono::steady_clock::now());
    parser_.emplace();
    parser_->header_limit(srv_->limits.header_limit);
    parser_->body_limit(srv_->limits.body_limit);
    // One deadline for the whole request, idle wait included (slowloris too).
    arm(srv_->limits.request_timeout);
    http::async_read(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (self->closed_) return;
      if (ec == http::error::header_limit)
        return self->refuse(http::status::request_header_fields_too_large, "request headers too large");
      if (ec == http::error::body_limit) return self->refuse(http::status::payload_too_large, "request body too large");
      if (ec) return self->close();  // closed, malformed or past its deadline
      self->respond();
    });
  }

  void respond() {
    const auto& req = parser_->get();
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(req.keep_alive());
    std::string target(req.target());
    bool json = target.find("format=json") != std::string::npos ||
                std::string(req[http::field::accept]).find("application/json") != std::string::npos;
    std::string path = target.substr(0, target.find('?'));
    auto it = handlers_.find(path);
    if (req.method() != http::verb::get) {
      error(*res, http::status::method_not_allowed, "only GET is served", json);
    } else if (it == handlers_.end()) {
      error(*res, http::status::not_found, "no such API path: " + path, json);
    } else {
      auto q = target.find('?');
      srv_->slots.answering(slot_, std::chrono::steady_clock::now());  // not an idle connection while it waits
      it->second(q == std::string::npos ? std::string() : target.substr(q + 1),
                 [self = shared_from_this(), res, json](std::unique_ptr<google::protobuf::Message> msg) {
                   if (self->closed_) return;
                   res->result(http::status::ok);
                   body(*res, *msg, json);
                   self->write(res);
                 });
      return;
    }
    write(res);
  }

  // A request over the limits: answer with `status` and close.
  void refuse(http::status status, const std::string& why) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->keep_alive(false);
    error(*res, status, why, false);
    write(res);
  }

  void write(std::shared_ptr<http::response<http::string_body>> res) {
    res->prepare_payload();
    srv_->slots.answering(slot_, std::chrono::steady_clock::now());
    arm(srv_->limits.write_timeout);
    http::async_write(socket_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      if (self->closed_) return;
      if (ec || !res->keep_alive()) return self->close();
      self->read();
    });
  }

  static void body(http::response<http::string_body>& res, const google::protobuf::Message& m, bool json) {
    if (json) {
      google::protobuf::util::JsonPrintOptions opts;
      opts.always_print_primitive_fields = true;
      opts.preserve_proto_field_names = false;
      std::string out;
      (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
      res.set(http::field::content_type, "application/json");
      res.body() = out + "\n";
    } else {
      res.set(http::field::content_type, "application/x-protobuf");
      res.body() = m.SerializeAsString();
    }
  }

  static void error(http::response<http::string_body>& res, http::status st, const std::string& text, bool json) {
    api::ApiError e;
    e.set_message(text);
    res.result(st);
    body(res, e, json);
  }

  local::socket socket_;
  asio::steady_timer deadline_;
  const std::map<std::string, ApiServer::AsyncQueryHandler>& handlers_;
  std::shared_ptr<Shared> srv_;
  ConnectionSlots<HttpSession>::Id slot_ = 0;
  bool closed_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

struct ApiServer::Impl {
  explicit Impl(asio::io_context& io)
      : io(io), acceptor(io), retry_timer(io), shared(std::make_shared<Shared>()), backoff("the API socket") {}
  asio::io_context& io;
  local::acceptor acceptor;
  asio::steady_timer retry_timer;
  std::shared_ptr<Shared> shared;
  AcceptBackoff backoff;
  std::map<std::string, AsyncQueryHandler> handlers;
  std::string path;

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, local::socket s) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      auto now = std::chrono::steady_clock::now();
      auto& slots = shared->slots;
      if (ec) {
        // Out of descriptors: closing our longest-idle connection gives one
        // back, so `tabby status` waiting in the listen queue still gets in.
        if (AcceptBackoff::is_exhaustion(ec.value())) {
          if (auto idle = slots.idle_victim()) {
            (*idle)->close();
            return accept();
          }
        }
        // Otherwise wait and retry (base/accept_backoff.hpp), never spin.
        auto step = backoff.failed(ec.value(), ec.message(), now);
        if (!step.log.empty()) kLog.info(step.log);
        retry_timer.expires_after(step.delay);
        retry_timer.async_wait([this](beast::error_code tec) {
          if (!tec && acceptor.is_open()) accept();
        });
        return;
      }
      if (auto line = backoff.succeeded(now); !line.empty()) kLog.info(line);
      // At the cap the new connection is admitted and the one waiting longest
      // for a request is closed (connection_slots.hpp): the CLI always gets in.
      if (slots.full())
        if (auto victim = slots.victim()) (*victim)->close();
      std::make_shared<HttpSession>(std::move(s), handlers, shared)->start();
      accept();
    });
  }
};

ApiServer::ApiServer(asio::io_context& io) : impl_(std::make_unique<Impl>(io)) {}
ApiServer::~ApiServer() { stop(); }

void ApiServer::handle(const std::string& path, Handler h) {
  impl_->handlers[path] = [h = std::move(h)](const std::string&, const Reply& reply) { reply(h()); };
}
void ApiServer::handle_query(const std::string& path, QueryHandler h) {
  impl_->handlers[path] = [h = std::move(h)](const std::string& q, const Reply& reply) { reply(h(q)); };
}
void ApiServer::handle_query_async(const std::string& path, AsyncQueryHandler h) {
  impl_->handlers[path] = std::move(h);
}

Status ApiServer::start(const std::string& socket_path) {
  // A socket file may be left over from an agent that died: replace it, but
  // never steal the socket of an agent that is still answering.
  struct stat st;
  if (::stat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail_msg("API socket path " + socket_path + " exists and is not a socket");
    local::socket probe(impl_->io);
    beast::error_code ec;
    probe.connect(local::endpoint(socket_path), ec);
    if (!ec) return fail_msg("another agent is already serving the API on " + socket_path);
    ::unlink(socket_path.c_str());
  }
  auto dir = socket_path.substr(0, socket_path.rfind('/'));
  if (!dir.empty() && dir != socket_path) {
    std::string partial;
    for (size_t i = 1; i <= dir.size(); ++i)
      if (i == dir.size() || dir[i] == '/') ::mkdir(dir.substr(0, i).c_str(), 0755);
  }
  beast::error_code ec;
  impl_->acceptor.open(local(), ec);
  if (!ec) impl_->acceptor.bind(local::endpoint(socket_path), ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail_msg("cannot listen on API socket " + socket_path + ": " + ec.message());
  ::chmod(socket_path.c_str(), 0660);
  impl_->path = socket_path;
  impl_->backoff = AcceptBackoff("the API socket " + socket_path);
  impl_->accept();
  return {};
}

void ApiServer::set_limits(const HttpServerLimits& limits) {
  impl_->shared->limits = limits;
  impl_->shared->slots = ConnectionSlots<HttpSession>(limits.max_connections);
}

size_t ApiServer::open_connections() const { return impl_->shared->slots.size(); }

void ApiServer::stop() {
  if (!impl_ || !impl_->acceptor.is_open()) return;
  impl_->retry_timer.cancel();
  beast::error_code ec;
  impl_->acceptor.close(ec);
  ::unlink(impl_->path.c_str());
  // Open connections refer to the handlers: close them now.
  for (auto* session : impl_->shared->slots.all()) session->close();
}

Result<std::string> api_get(const std::string& socket_path, const std::string& path) {
  asio::io_context io;
  local::socket s(io);
  beast::error_code ec;
  s.connect(local::endpoint(socket_path), ec);
  if (ec) return fail_msg("cannot reach the agent's API at " + socket_path + ": " + ec.message() +
                          " (is `tabby agent` running? pass --socket PATH if it uses another socket)");
  http::request<http::empty_body> req{http::verb::get, path, 11};
  req.set(http::field::host, "tabby");
  req.set(http::field::accept, "application/x-protobuf");
  req.keep_alive(false);
  http::write(s, req, ec);
  if (ec) return fail_msg("API request to " + socket_path + " failed: " + ec.message());
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(256u << 20);
  http::read(s, buf, parser, ec);
  auto res = parser.release();
  if (ec) return fail_msg("API answer from " + socket_path + " unreadable: " + ec.message());
  if (res.result() != http::status::ok) {
    api::ApiError e;
    std::string why = e.ParseFromString(res.body()) ? e.message() : std::string(res.reason());
    return fail_msg("API error " + std::to_string(res.result_int()) + ": " + why);
  }
  return std::move(res.body());
}

}  // namespace tabby::felix
