// api_server.cpp — HTTP over a Unix socket with Boost.Beast: a small async
// server (one session per connection, keep-alive) and a blocking client.
#include "felix/api_server.hpp"

#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "proto/tabby.pb.h"

namespace tabby::felix {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

namespace {

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(local::socket s, const std::map<std::string, ApiServer::Handler>& handlers)
      : socket_(std::move(s)), handlers_(handlers) {}

  void start() { read(); }

 private:
  void read() {
    req_ = {};
    http::async_read(socket_, buffer_, req_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;  // closed or malformed: drop the connection
      self->respond();
    });
  }

  void respond() {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req_.version());
    res->keep_alive(req_.keep_alive());
    std::string target(req_.target());
    bool json = target.find("format=json") != std::string::npos ||
                std::string(req_[http::field::accept]).find("application/json") != std::string::npos;
    std::string path = target.substr(0, target.find('?'));
    auto it = handlers_.find(path);
    if (req_.method() != http::verb::get) {
      error(*res, http::status::method_not_allowed, "only GET is served", json);
    } else if (it == handlers_.end()) {
      error(*res, http::status::not_found, "no such API path: " + path, json);
    } else {
      auto msg = it->second();
      res->result(http::status::ok);
      body(*res, *msg, json);
    }
    res->prepare_payload();
    http::async_write(socket_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      if (ec || !res->keep_alive()) {
        beast::error_code ignored;
        self->socket_.shutdown(local::socket::shutdown_send, ignored);
        return;
      }
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
  const std::map<std::string, ApiServer::Handler>& handlers_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
};

}  // namespace

struct ApiServer::Impl {
  explicit Impl(asio::io_context& io) : io(io), acceptor(io) {}
  asio::io_context& io;
  local::acceptor acceptor;
  std::map<std::string, Handler> handlers;
  std::string path;

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, local::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) std::make_shared<HttpSession>(std::move(s), handlers)->start();
      accept();
    });
  }
};

ApiServer::ApiServer(asio::io_context& io) : impl_(std::make_unique<Impl>(io)) {}
ApiServer::~ApiServer() { stop(); }

void ApiServer::handle(const std::string& path, Handler h) { impl_->handlers[path] = std::move(h); }

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
  impl_->accept();
  return {};
}

void ApiServer::stop() {
  if (!impl_ || !impl_->acceptor.is_open()) return;
  beast::error_code ec;
  impl_->acceptor.close(ec);
  ::unlink(impl_->path.c_str());
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
