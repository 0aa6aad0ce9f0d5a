// http.hpp — internal: the HTTP/1.1 client the etcd and Kubernetes
// datastores share (Boost.Beast, C++20 coroutines on the agent's io_context).
// Plain TCP for etcd's JSON gateway, TLS (OpenSSL through Beast's ssl_stream,
// peer verified against the configured CA and the URL's host name or IP) for
// the API server. One connection per request ("Connection: close"), so a
// request never waits behind a watch stream. Errors are Results, never thrown.
#pragma once

#include <utility>  // before Asio's awaitable.hpp (it uses std::exchange)

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "base/base.hpp"

namespace tabby::felix::ds {

namespace asio = boost::asio;

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string str() const { return (tls ? "https://" : "http://") + host + ":" + port; }
};
// "http://host:port", "https://host[:port]" (a path after the port is ignored).
Result<Url> parse_url(std::string_view text);

struct HttpResponse {
  unsigned status = 0;
  std::string body;
};

class HttpClient {
 public:
  // `tls` may be null (plain HTTP only).
  HttpClient(asio::io_context& io, std::shared_ptr<asio::ssl::context> tls);
  ~HttpClient();

  // Sent as the Authorization header when it returns non-empty ("Bearer ...").
  std::function<std::string()> authorization;

  // One request; the whole exchange bounded by `timeout`.
  asio::awaitable<Result<HttpResponse>> request(const Url& url, boost::beast::http::verb verb, std::string target,
                                                std::string body, std::string content_type,
                                                std::chrono::milliseconds timeout);
  // A streaming request: connects and sends within `timeout`, then reads the
  // body without a deadline and calls on_line for each '\n'-terminated line
  // while the status is 2xx (on_line returns false to stop reading). Returns
  // the status; for a non-2xx status the body. An error is a transport error
  // (refused, reset, closed by close_streams()).
  asio::awaitable<Result<HttpResponse>> stream_lines(const Url& url, boost::beast::http::verb verb,
                                                     std::string target, std::string body,
                                                     std::string content_type,
                                                     std::function<bool(std::string_view)> on_line,
                                                     std::chrono::milliseconds timeout);
  // Aborts every stream_lines in flight (stop()); plain requests go on.
  void close_streams();

  struct Live;  // registry of open streams (internal)

 private:
  asio::io_context& io_;
  std::shared_ptr<asio::ssl::context> tls_;
  std::shared_ptr<Live> live_;
};

}  // namespace tabby::felix::ds
