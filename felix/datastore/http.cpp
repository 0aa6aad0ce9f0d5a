// http.cpp — the coroutine HTTP/1.1 client of datastore_http.hpp.
// Invariant: every stream_lines() in flight has its TCP stream in Live::streams
// (removed on exit by an RAII guard), so close_streams() can abort it; the
// coroutine owns the stream, close_streams() only closes the socket.
#include "felix/datastore/http.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <openssl/x509v3.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <limits>

namespace tabby::felix::ds {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::redirect_error;
using asio::use_awaitable;

struct HttpClient::Live {
  std::set<beast::tcp_stream*> streams;
};

Result<Url> parse_url(std::string_view text) {
  Url u;
  std::string_view rest = text;
  if (rest.substr(0, 7) == "http://") {
    rest.remove_prefix(7);
  } else if (rest.substr(0, 8) == "https://") {
    u.tls = true;
    rest.remove_prefix(8);
  } else {
    return fail_msg("URL '" + std::string(text) + "': expected http:// or https://");
  }
  rest = rest.substr(0, rest.find('/'));
  if (rest.empty()) return fail_msg("URL '" + std::string(text) + "': no host");
  if (rest.front() == '[') {  // [IPv6]:port
    auto close = rest.find(']');
    if (close == std::string_view::npos) return fail_msg("URL '" + std::string(text) + "': unclosed [");
    u.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (!rest.empty() && rest.front() == ':') u.port = std::string(rest.substr(1));
  } else {
    auto colon = rest.rfind(':');
    u.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) u.port = std::string(rest.substr(colon + 1));
  }
  if (u.port.empty()) u.port = u.tls ? "443" : "80";
  for (char c : u.port)
    if (c < '0' || c > '9') return fail_msg("URL '" + std::string(text) + "': bad port");
  return u;
}

HttpClient::HttpClient(asio::io_context& io, std::shared_ptr<asio::ssl::context> tls)
    : io_(io), tls_(std::move(tls)), live_(std::make_shared<Live>()) {}

HttpClient::~HttpClient() { close_streams(); }

void HttpClient::close_streams() {
  auto streams = live_->streams;
  for (auto* s : streams) {
    beast::error_code ec;
    s->socket().shutdown(tcp::socket::shutdown_both, ec);
    s->socket().close(ec);
  }
}

namespace {

beast::tcp_stream& lowest(beast::tcp_stream& s) { return s; }
beast::tcp_stream& lowest(beast::ssl_stream<beast::tcp_stream>& s) { return beast::get_lowest_layer(s); }

std::string describe(const Url& url, const beast::error_code& ec, const char* step) {
  return url.str() + ": " + step + ": " + ec.message();
}

bool clean_eof(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
}

asio::awaitable<Status> connect(beast::tcp_stream& s, const Url& url, std::chrono::milliseconds timeout) {
  beast::error_code ec;
  tcp::resolver resolver(co_await asio::this_coro::executor);
  auto results = co_await resolver.async_resolve(url.host, url.port, redirect_error(use_awaitable, ec));
  if (ec) co_return fail_msg(describe(url, ec, "resolve"));
  s.expires_after(timeout);
  co_await s.async_connect(results, redirect_error(use_awaitable, ec));
  if (ec) co_return fail_msg(describe(url, ec, "connect"));
  // TCP keepalive (idle 10 s, 3 probes 5 s apart): a watch stream to a peer
  // whose host vanished without a FIN/RST (host down, partition) breaks within
  // ~25 s instead of the kernel's 2 h default. (A stopped but alive process
  // still ACKs probes: that case is not detected.)
  int fd = s.socket().native_handle();
  int on = 1, idle = 10, intvl = 5, cnt = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  co_return Status{};
}

asio::awaitable<Status> handshake(beast::ssl_stream<beast::tcp_stream>& s, const Url& url) {
  SSL* ssl = s.native_handle();
  beast::error_code ec;
  auto addr = asio::ip::make_address(url.host, ec);
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (!ec) {
    X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl, url.host.c_str());
    X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
  }
  (void)addr;
  ec = {};
  co_await s.async_handshake(asio::ssl::stream_base::client, redirect_error(use_awaitable, ec));
  if (ec) co_return fail_msg(describe(url, ec, "TLS handshake"));
  co_return Status{};
}

http::request<http::string_body> make_request(const Url& url, http::verb verb, std::string target, std::string body,
                                              const std::string& content_type, const std::string& auth) {
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, url.host + ":" + url.port);
  req.set(http::field::user_agent, "tabby-agent");
  req.set(http::field::accept, "application/json");
  if (!auth.empty()) req.set(http::field::authorization, auth);
  if (!body.empty() || verb == http::verb::post || verb == http::verb::put) {
    req.set(http::field::content_type, content_type.empty() ? "application/json" : content_type);
    req.body() = std::move(body);
  }
  req.keep_alive(false);
  req.prepare_payload();
  return req;
}

template <class Stream>
asio::awaitable<Result<HttpResponse>> exchange(Stream& s, const Url& url, http::request<http::string_body>& req) {
  beast::error_code ec;
  co_await http::async_write(s, req, redirect_error(use_awaitable, ec));
  if (ec) co_return fail_msg(describe(url, ec, "send request"));
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await http::async_read(s, buf, parser, redirect_error(use_awaitable, ec));
  if (ec && !(clean_eof(ec) && parser.is_done())) co_return fail_msg(describe(url, ec, "read response"));
  HttpResponse r;
  r.status = parser.get().result_int();
  r.body = std::move(parser.get().body());
  co_return r;
}

template <class Stream>
asio::awaitable<Result<HttpResponse>> stream(Stream& s, const Url& url, http::request<http::string_body>& req,
                                             const std::function<bool(std::string_view)>& on_line) {
  beast::error_code ec;
  co_await http::async_write(s, req, redirect_error(use_awaitable, ec));
  if (ec) co_return fail_msg(describe(url, ec, "send request"));
  lowest(s).expires_never();
  beast::flat_buffer buf;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await http::async_read_header(s, buf, parser, redirect_error(use_awaitable, ec));
  if (ec) co_return fail_msg(describe(url, ec, "read response header"));
  HttpResponse r;
  r.status = parser.get().result_int();
  bool ok_status = r.status >= 200 && r.status < 300;
  std::string pending;
  char chunk[16384];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    // read_some: return with whatever arrived (a watch line must not wait for
    // the buffer to fill).
    co_await http::async_read_some(s, buf, parser, redirect_error(use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    size_t n = sizeof chunk - parser.get().body().size;
    if (!ok_status) {
      r.body.append(chunk, n);
    } else {
      pending.append(chunk, n);
      size_t start = 0;
      for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string_view line(pending.data() + start, nl - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        if (!on_line(line)) co_return r;
      }
      pending.erase(0, start);
    }
    if (ec) {
      if (clean_eof(ec) && parser.is_done()) break;
      co_return fail_msg(describe(url, ec, "read stream"));
    }
  }
  if (ok_status && !pending.empty()) on_line(pending);
  co_return r;
}

}  // namespace

asio::awaitable<Result<HttpResponse>> HttpClient::request(const Url& url, http::verb verb, std::string target,
                                                          std::string body, std::string content_type,
                                                          std::chrono::milliseconds timeout) {
  auto req = make_request(url, verb, std::move(target), std::move(body), content_type,
                          authorization ? authorization() : std::string());
  if (!url.tls) {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    auto st = co_await connect(s, url, timeout);
    if (!st) co_return fail(st.error());
    s.expires_after(timeout);
    co_return co_await exchange(s, url, req);
  }
  if (!tls_) co_return fail_msg(url.str() + ": TLS not configured");
  beast::ssl_stream<beast::tcp_stream> s(co_await asio::this_coro::executor, *tls_);
  auto st = co_await connect(beast::get_lowest_layer(s), url, timeout);
  if (!st) co_return fail(st.error());
  beast::get_lowest_layer(s).expires_after(timeout);
  st = co_await handshake(s, url);
  if (!st) co_return fail(st.error());
  co_return co_await exchange(s, url, req);
}

asio::awaitable<Result<HttpResponse>> HttpClient::stream_lines(const Url& url, http::verb verb, std::string target,
                                                               std::string body, std::string content_type,
                                                               std::function<bool(std::string_view)> on_line,
                                                               std::chrono::milliseconds timeout) {
  auto live = live_;
  struct Guard {
    std::shared_ptr<Live> live;
    beast::tcp_stream* s;
    ~Guard() { live->streams.erase(s); }
  };
  auto req = make_request(url, verb, std::move(target), std::move(body), content_type,
                          authorization ? authorization() : std::string());
  if (!url.tls) {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    live->streams.insert(&s);
    Guard g{live, &s};
    auto st = co_await connect(s, url, timeout);
    if (!st) co_return fail(st.error());
    co_return co_await stream(s, url, req, on_line);
  }
  if (!tls_) co_return fail_msg(url.str() + ": TLS not configured");
  beast::ssl_stream<beast::tcp_stream> s(co_await asio::this_coro::executor, *tls_);
  live->streams.insert(&beast::get_lowest_layer(s));
  Guard g{live, &beast::get_lowest_layer(s)};
  auto st = co_await connect(beast::get_lowest_layer(s), url, timeout);
  if (!st) co_return fail(st.error());
  beast::get_lowest_layer(s).expires_after(timeout);
  st = co_await handshake(s, url);
  if (!st) co_return fail(st.error());
  co_return co_await stream(s, url, req, on_line);
}

}  // namespace tabby::felix::ds
