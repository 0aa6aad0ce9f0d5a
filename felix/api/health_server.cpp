// health_server.cpp — /livez, /readyz and /metrics over plain HTTP/1.1 (Boost.Beast,
// async, one session per connection with keep-alive, on the caller's io_context).
// Bounded so that no client can starve it: a connection cap that evicts the
// connection waiting longest instead of refusing a new one, one deadline per
// request, header/body size limits (431/413), accept backoff on EMFILE.
#include "felix/api/health_server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <iostream>
#include <optional>

#include "base/accept_backoff.hpp"
#include "log/log.hpp"

namespace tabby::felix {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

void HealthState::check(std::string name, bool ok, std::string reason) {
  if (!ok) {
    ready = false;
    reasons.push_back(reason.empty() ? name + " not ready" : reason);
  }
  checks.push_back({std::move(name), ok, std::move(reason)});
}

HttpAnswer readyz_answer(const HealthState& st, bool verbose) {
  HttpAnswer a;
  a.status = st.ready ? 200 : 503;
  if (verbose) {
    for (const auto& c : st.checks)
      a.body += c.ok ? "[+]" + c.name + " ok\n"
                     : "[-]" + c.name + " failed: " + (c.reason.empty() ? "not ready" : c.reason) + "\n";
    // Reasons given without a named check are still listed.
    for (const auto& r : st.reasons) {
      bool listed = false;
      for (const auto& c : st.checks) listed = listed || (!c.ok && (c.reason == r || (c.reason.empty() && r == c.name + " not ready")));
      if (!listed) a.body += "[-] " + r + "\n";
    }
    a.body += st.ready ? "readyz check passed\n" : "readyz check failed\n";
  } else if (st.ready) {
    a.body = "ok\n";
  } else {
    for (const auto& r : st.reasons) a.body += r + "\n";
    if (st.reasons.empty()) a.body = "not ready\n";
  }
  return a;
}

Result<std::pair<IpAddress, uint16_t>> parse_listen_address(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return fail_msg("metricsAddress '" + text + "': " + why + " (use HOST:PORT, e.g. 127.0.0.1:9091 or [::1]:9091)");
  };
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return bad("an IPv6 address in brackets must be followed by :PORT");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("write an IPv6 address in brackets");
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    return bad("port must be a number from 0 to 65535");
  IpAddress addr;
  if (host.empty()) {
    addr = IpAddress::v4(0);
  } else if (host == "localhost") {
    addr = IpAddress::v4(0x7f000001);
  } else {
    auto a = IpAddress::parse(host);
    if (!a) return bad("host must be an IP address or localhost");
    addr = *a;
  }
  return std::pair<IpAddress, uint16_t>{addr, static_cast<uint16_t>(std::stoul(port))};
}

namespace {

constexpr logging::Logger kLog{"health"};

tcp::endpoint to_endpoint(const IpAddress& a, uint16_t port) {
  if (a.is_v4()) return {asio::ip::address_v4(a.v4_host_order()), port};
  asio::ip::address_v6::bytes_type b;
  std::copy(a.bytes().begin(), a.bytes().end(), b.begin());
  return {asio::ip::address_v6(b), port};
}

class HealthSession;

// What sessions share with the server; outlives it while connections are open.
struct Shared {
  HealthServer::MetricsFn metrics;
  HealthServer::ReadyFn ready;
  bool stopped = false;  // the callbacks may refer to state that is gone
  HttpServerLimits limits = health_server_limits();
  ConnectionSlots<HealthSession> slots{limits.max_connections};

  HttpAnswer answer(const std::string& target) const;
};

bool query_has(const std::string& query, const std::string& key) {
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    std::string item = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    std::string k = item.substr(0, item.find('='));
    if (k == key) {
      std::string v = item.find('=') == std::string::npos ? "" : item.substr(item.find('=') + 1);
      return v != "0" && v != "false";
    }
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return false;
}

HttpAnswer Shared::answer(const std::string& target) const {
  std::string path = target.substr(0, target.find('?'));
  std::string query = target.find('?') == std::string::npos ? "" : target.substr(target.find('?') + 1);
  HttpAnswer a;
  if (stopped) {
    a.status = 503;
    a.body = "shutting down\n";
  } else if (path == "/livez" || path == "/healthz") {
    a.body = "ok\n";
  } else if (path == "/readyz") {
    a = readyz_answer(ready ? ready() : HealthState{}, query_has(query, "verbose"));
  } else if (path == "/metrics") {
    a.content_type = "text/plain; version=0.0.4; charset=utf-8";
    a.body = metrics ? metrics() : "";
  } else {
    a.status = 404;
    a.body = "not found: " + path + " (paths: /livez /readyz /metrics)\n";
  }
  return a;
}

class HealthSession : public std::enable_shared_from_this<HealthSession> {
 public:
  HealthSession(tcp::socket s, std::shared_ptr<Shared> srv) : stream_(std::move(s)), srv_(std::move(srv)) {
    slot_ = srv_->slots.add(this, std::chrono::steady_clock::now());
  }
  ~HealthSession() { srv_->slots.remove(slot_); }

  void read() {
    srv_->slots.reading(slot_, std::chrono::steady_clock::now());
    parser_.emplace();
    parser_->body_limit(srv_->limits.body_limit);
    parser_->header_limit(srv_->limits.header_limit);
    // One deadline for the whole request, idle wait included: a client that
    // trickles its headers (slowloris) is closed like an idle one.
    stream_.expires_after(srv_->limits.request_timeout);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec == http::error::header_limit)
        return self->refuse(http::status::request_header_fields_too_large, "request headers too large\n");
      if (ec == http::error::body_limit) return self->refuse(http::status::payload_too_large, "request body too large\n");
      if (ec) return self->close();  // closed, timed out, evicted or malformed
      self->respond();
    });
  }

  // Closes the connection now (idempotent); it leaves the slots at once, so an
  // evicted connection makes room before its callbacks run.
  void close() {
    if (closed_) return;
    closed_ = true;
    srv_->slots.remove(slot_);
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

 private:
  void respond() {
    const auto& req = parser_->get();
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(req.keep_alive());
    res->set(http::field::server, "tabby");
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res->result(http::status::method_not_allowed);
      res->set(http::field::allow, "GET, HEAD");
      res->set(http::field::content_type, "text/plain; charset=utf-8");
      res->body() = "only GET and HEAD are served\n";
    } else {
      HttpAnswer a = srv_->answer(std::string(req.target()));
      res->result(static_cast<unsigned>(a.status));
      res->set(http::field::content_type, a.content_type);
      res->body() = std::move(a.body);
    }
    res->prepare_payload();
    if (req.method() == http::verb::head) res->body().clear();  // headers keep the GET length
    write(res);
  }

  // A request over the limits: answer with `status` and close.
  void refuse(http::status status, const std::string& why) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "tabby");
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    res->keep_alive(false);
    res->body() = why;
    res->prepare_payload();
    write(res);
  }

  void write(std::shared_ptr<http::response<http::string_body>> res) {
    if (closed_) return;
    srv_->slots.answering(slot_, std::chrono::steady_clock::now());
    stream_.expires_after(srv_->limits.write_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      if (ec || !res->keep_alive() || self->closed_) return self->close();
      self->read();
    });
  }

  beast::tcp_stream stream_;
  std::shared_ptr<Shared> srv_;
  ConnectionSlots<HealthSession>::Id slot_ = 0;
  bool closed_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

struct HealthServer::Impl : std::enable_shared_from_this<Impl> {
  explicit Impl(asio::io_context& io)
      : acceptor(io), retry_timer(io), shared(std::make_shared<Shared>()), backoff("the metrics address") {}
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer;
  std::shared_ptr<Shared> shared;
  AcceptBackoff backoff;
  void accept();
};

void HealthServer::Impl::accept() {
  acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
    auto now = std::chrono::steady_clock::now();
    auto& slots = self->shared->slots;
    if (ec) {
      // Out of descriptors: closing our longest-idle connection gives one back,
      // so a probe waiting in the listen queue still gets in.
      if (AcceptBackoff::is_exhaustion(ec.value())) {
        if (auto idle = slots.idle_victim()) {
          (*idle)->close();
          return self->accept();
        }
      }
      // Otherwise wait and retry (base/accept_backoff.hpp), never spin.
      auto step = self->backoff.failed(ec.value(), ec.message(), now);
      if (!step.log.empty()) kLog.info(step.log);
      self->retry_timer.expires_after(step.delay);
      self->retry_timer.async_wait([self](beast::error_code tec) {
        if (!tec && self->acceptor.is_open()) self->accept();
      });
      return;
    }
    if (auto line = self->backoff.succeeded(now); !line.empty()) kLog.info(line);
    // At the cap the new connection is admitted and the one waiting longest
    // for a request is closed (connection_slots.hpp): never refuse a probe.
    if (slots.full())
      if (auto victim = slots.victim()) (*victim)->close();
    std::make_shared<HealthSession>(std::move(s), self->shared)->read();
    self->accept();
  });
}

HealthServer::HealthServer(asio::io_context& io, MetricsFn metrics, ReadyFn ready)
    : impl_(std::make_shared<Impl>(io)) {
  impl_->shared->metrics = std::move(metrics);
  impl_->shared->ready = std::move(ready);
}

HealthServer::~HealthServer() {
  stop();
  impl_->shared->stopped = true;
  impl_->shared->metrics = nullptr;
  impl_->shared->ready = nullptr;
}

Status HealthServer::start(const std::string& address) {
  auto parsed = parse_listen_address(address);
  if (!parsed) return fail_msg(parsed.error().message);
  tcp::endpoint ep = to_endpoint(parsed->first, parsed->second);
  beast::error_code ec;
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
    return fail_msg("cannot listen on metricsAddress " + address + ": " + ec.message());
  }
  impl_->backoff = AcceptBackoff("metricsAddress " + address);
  impl_->accept();
  return {};
}

void HealthServer::stop() {
  impl_->retry_timer.cancel();
  if (!impl_->acceptor.is_open()) return;
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
}

void HealthServer::set_limits(const HttpServerLimits& limits) {
  impl_->shared->limits = limits;
  impl_->shared->slots = ConnectionSlots<HealthSession>(limits.max_connections);
}

size_t HealthServer::open_connections() const { return impl_->shared->slots.size(); }

uint16_t HealthServer::port() const {
  beast::error_code ec;
  if (!impl_->acceptor.is_open()) return 0;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

}  // namespace tabby::felix
