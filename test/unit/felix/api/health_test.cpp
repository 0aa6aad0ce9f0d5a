// health_test.cpp — the health/metrics HTTP server on real loopback TCP: binds
// 127.0.0.1:0, fetches /livez, /readyz (plain and ?verbose, ready and not), /metrics,
// HEAD, 404 and 405 with a Beast client on the same io_context (one thread), and
// checks that a second server on the same port fails with an error naming the address.
// Also the pure parts: listen-address parsing and the /readyz body.
#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

#include "felix/api/health_server.hpp"

using namespace tabby;
using namespace tabby::felix;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

struct Fetched {
  bool done = false;
  std::string error;
  int status = 0;
  std::string content_type, content_length, body;
};

// One request on a fresh connection, driven by running `io` until the answer is in
// (the server under test runs on the same io_context).
Fetched fetch(asio::io_context& io, const asio::ip::address& addr, uint16_t port, const std::string& target,
              http::verb verb = http::verb::get) {
  Fetched f;
  beast::tcp_stream stream(io);
  http::request<http::empty_body> req{verb, target, 11};
  req.set(http::field::host, "test");
  req.keep_alive(false);
  http::response_parser<http::string_body> parser;
  parser.skip(verb == http::verb::head);  // a HEAD answer has headers only
  beast::flat_buffer buf;
  auto fail = [&](const char* step, beast::error_code ec) {
    f.error = std::string(step) + ": " + ec.message();
    f.done = true;
  };
  stream.expires_after(std::chrono::seconds(5));
  stream.async_connect(tcp::endpoint(addr, port), [&](beast::error_code ec) {
    if (ec) return fail("connect", ec);
    http::async_write(stream, req, [&](beast::error_code ec2, size_t) {
      if (ec2) return fail("write", ec2);
      http::async_read(stream, buf, parser, [&](beast::error_code ec3, size_t) {
        if (ec3) return fail("read", ec3);
        auto& res = parser.get();
        f.status = static_cast<int>(res.result_int());
        f.content_type = std::string(res[http::field::content_type]);
        f.content_length = std::string(res[http::field::content_length]);
        f.body = res.body();
        f.done = true;
      });
    });
  });
  io.restart();
  while (!f.done && io.run_one() > 0) {
  }
  return f;
}

Fetched fetch4(asio::io_context& io, uint16_t port, const std::string& target, http::verb verb = http::verb::get) {
  return fetch(io, asio::ip::address_v4::loopback(), port, target, verb);
}

}  // namespace

TEST_CASE("listen addresses: IPv4, [IPv6], localhost, empty host; clear errors") {
  auto a = parse_listen_address("127.0.0.1:9091");
  REQUIRE(a);
  CHECK(a->first.str() == "127.0.0.1");
  CHECK(a->second == 9091);
  a = parse_listen_address("[::1]:0");
  REQUIRE(a);
  CHECK(a->first.str() == "::1");
  CHECK(a->second == 0);
  a = parse_listen_address("localhost:80");
  REQUIRE(a);
  CHECK(a->first.str() == "127.0.0.1");
  a = parse_listen_address(":9091");
  REQUIRE(a);
  CHECK(a->first.str() == "0.0.0.0");
  auto bad = parse_listen_address("::1:9091");
  REQUIRE(!bad);
  CHECK(bad.error().message ==
        "metricsAddress '::1:9091': write an IPv6 address in brackets (use HOST:PORT, e.g. 127.0.0.1:9091 or [::1]:9091)");
  CHECK(!parse_listen_address("127.0.0.1"));
  CHECK(!parse_listen_address("127.0.0.1:65536"));
  CHECK(!parse_listen_address("127.0.0.1:http"));
  CHECK(!parse_listen_address("[::1]9091"));
  auto host = parse_listen_address("metrics.example:9091");
  REQUIRE(!host);
  CHECK(host.error().message.find("host must be an IP address or localhost") != std::string::npos);
}

TEST_CASE("readyz answer: ok, reasons one per line, verbose lists every check") {
  HealthState ok;
  ok.check("datastore", true);
  ok.check("bgp", true);
  auto a = readyz_answer(ok, false);
  CHECK(a.status == 200);
  CHECK(a.body == "ok\n");
  a = readyz_answer(ok, true);
  CHECK(a.status == 200);
  CHECK(a.body == "[+]datastore ok\n[+]bgp ok\nreadyz check passed\n");

  HealthState st;
  st.check("datastore", false, "datastore not in sync");
  st.check("bgp", false, "BGP: waiting for End-of-RIB from 198.18.0.12 (GR wait ends in 87 s)");
  st.check("dataplane", true);
  CHECK(!st.ready);
  a = readyz_answer(st, false);
  CHECK(a.status == 503);
  CHECK(a.body == "datastore not in sync\nBGP: waiting for End-of-RIB from 198.18.0.12 (GR wait ends in 87 s)\n");
  a = readyz_answer(st, true);
  CHECK(a.status == 503);
  CHECK(a.body ==
        "[-]datastore failed: datastore not in sync\n"
        "[-]bgp failed: BGP: waiting for End-of-RIB from 198.18.0.12 (GR wait ends in 87 s)\n"
        "[+]dataplane ok\n"
        "readyz check failed\n");

  HealthState raw;  // filled directly, without check()
  raw.ready = false;
  raw.reasons = {"starting"};
  a = readyz_answer(raw, true);
  CHECK(a.status == 503);
  CHECK(a.body == "[-] starting\nreadyz check failed\n");
}

TEST_CASE("health server on loopback: livez, readyz, metrics, HEAD, 404, 405") {
  asio::io_context io;
  HealthState state;
  state.check("datastore", false, "datastore not in sync");
  int scrapes = 0;
  HealthServer hs(
      io, [&] { return "# TYPE t_scrapes counter\nt_scrapes " + std::to_string(++scrapes) + "\n"; },
      [&] { return state; });
  CHECK(hs.port() == 0);
  auto st = hs.start("127.0.0.1:0");
  REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
  uint16_t port = hs.port();
  REQUIRE(port != 0);

  auto f = fetch4(io, port, "/livez");
  REQUIRE_MESSAGE(f.error.empty(), f.error);
  CHECK(f.status == 200);
  CHECK(f.body == "ok\n");

  f = fetch4(io, port, "/readyz");
  CHECK(f.status == 503);
  CHECK(f.body == "datastore not in sync\n");
  f = fetch4(io, port, "/readyz?verbose");
  CHECK(f.status == 503);
  CHECK(f.body == "[-]datastore failed: datastore not in sync\nreadyz check failed\n");

  state = {};
  state.check("datastore", true);
  f = fetch4(io, port, "/readyz");
  CHECK(f.status == 200);
  CHECK(f.body == "ok\n");
  f = fetch4(io, port, "/readyz?x=1&verbose=1");
  CHECK(f.status == 200);
  CHECK(f.body == "[+]datastore ok\nreadyz check passed\n");

  f = fetch4(io, port, "/metrics");
  CHECK(f.status == 200);
  CHECK(f.content_type.rfind("text/plain; version=0.0.4", 0) == 0);
  CHECK(f.body == "# TYPE t_scrapes counter\nt_scrapes 1\n");
  f = fetch4(io, port, "/metrics");
  CHECK(f.body == "# TYPE t_scrapes counter\nt_scrapes 2\n");  // computed per scrape

  f = fetch4(io, port, "/metrics", http::verb::head);
  REQUIRE_MESSAGE(f.error.empty(), f.error);
  CHECK(f.status == 200);
  CHECK(f.body.empty());
  CHECK(f.content_length == std::to_string(std::string("# TYPE t_scrapes counter\nt_scrapes 3\n").size()));

  f = fetch4(io, port, "/nope");
  CHECK(f.status == 404);
  CHECK(f.body.find("/nope") != std::string::npos);
  f = fetch4(io, port, "/livez", http::verb::post);
  CHECK(f.status == 405);

  SUBCASE("a second server on the same port fails naming the address") {
    HealthServer other(io, [] { return std::string(); }, [] { return HealthState{}; });
    std::string addr = "127.0.0.1:" + std::to_string(port);
    auto st2 = other.start(addr);
    REQUIRE(!st2);
    CHECK(st2.error().message.find("cannot listen on metricsAddress " + addr + ": ") == 0);
    CHECK(st2.error().message.find("in use") != std::string::npos);
    // The first one still answers.
    f = fetch4(io, port, "/livez");
    CHECK(f.status == 200);
  }

  SUBCASE("after stop() the port is closed") {
    hs.stop();
    f = fetch4(io, port, "/livez");
    CHECK(f.error.rfind("connect: ", 0) == 0);
  }
}

TEST_CASE("health server: a bad address is an error before binding") {
  asio::io_context io;
  HealthServer hs(io, [] { return std::string(); }, [] { return HealthState{}; });
  auto st = hs.start("127.0.0.1");
  REQUIRE(!st);
  CHECK(st.error().message.find("metricsAddress '127.0.0.1': no port") == 0);
  CHECK(hs.port() == 0);
}

TEST_CASE("health server on IPv6 loopback") {
  asio::io_context io;
  HealthServer hs(io, [] { return std::string("m 1\n"); }, [] { return HealthState{}; });
  auto st = hs.start("[::1]:0");
  // A machine without an IPv6 loopback address cannot run this test: it fails
  // and says why rather than passing untested.
  REQUIRE_MESSAGE(st.ok(), "IPv6 loopback unavailable, cannot test: " << (st.ok() ? "" : st.error().message));
  auto f = fetch(io, asio::ip::address_v6::loopback(), hs.port(), "/metrics");
  REQUIRE_MESSAGE(f.error.empty(), f.error);
  CHECK(f.status == 200);
  CHECK(f.body == "m 1\n");
}
