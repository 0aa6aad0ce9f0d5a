// bgp_transport_test.cpp — the Asio connection wrapper (bgp/transport.hpp) on a
// real loopback TCP pair: a handler that closes its own connection while it is
// being called (a NOTIFICATION answering the message in hand) must neither be
// destroyed under itself nor be called again for bytes already read.
#include <doctest/doctest.h>

#include <utility>

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <vector>

#include "bgp/transport.hpp"

using namespace tabby;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// Three KEEPALIVEs (RFC 4271 §4.4: a 19-byte header only) in one write, so that
// one read hands all of them to the connection at once.
std::vector<uint8_t> three_keepalives() {
  std::vector<uint8_t> out;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 16; ++j) out.push_back(0xff);
    out.push_back(0);
    out.push_back(19);
    out.push_back(4);
  }
  return out;
}

}  // namespace

TEST_CASE("transport: a handler that closes its connection is not destroyed while running, nor called again") {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  tcp::socket accepted = acceptor.accept();
  auto conn = std::make_shared<bgp::Connection>(std::move(accepted), 1);

  int delivered = 0;
  bool closed_cb = false;
  std::string after_close;
  // A capture too big for std::function's inline storage: it lives on the heap
  // and would be freed by a handler reset inside the call (ASan reports that).
  std::string tag(200, 'x');
  conn->start(
      [&, tag, weak = std::weak_ptr<bgp::Connection>(conn)](std::span<const uint8_t> msg) {
        ++delivered;
        CHECK(msg.size() == 19);
        if (auto c = weak.lock()) c->close_after_flush();
        after_close = tag;  // the capture is still alive after closing
        return true;        // "go on": the connection must still stop delivering
      },
      [&](const std::string&) { closed_cb = true; });
  auto bytes = three_keepalives();
  asio::write(client, asio::buffer(bytes));
  io.run_for(std::chrono::milliseconds(300));
  CHECK(delivered == 1);
  CHECK(after_close == tag);
  CHECK_FALSE(closed_cb);  // a close we asked for is not reported as a failure
  // The peer sees the connection end.
  boost::system::error_code ec;
  uint8_t b;
  client.non_blocking(false);
  size_t n = client.read_some(asio::buffer(&b, 1), ec);
  CHECK(n == 0);
  CHECK(ec == asio::error::eof);
}

TEST_CASE("transport: bytes arriving after close_after_flush are not delivered") {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  auto conn = std::make_shared<bgp::Connection>(acceptor.accept(), 2);
  int delivered = 0;
  conn->start([&](std::span<const uint8_t>) { return ++delivered, true; }, [](const std::string&) {});
  // Something still queued keeps the connection open while it closes.
  conn->send(std::vector<uint8_t>(1 << 20, 0));
  conn->close_after_flush();
  auto bytes = three_keepalives();
  asio::write(client, asio::buffer(bytes));
  io.run_for(std::chrono::milliseconds(200));
  CHECK(delivered == 0);
  conn->close();
  io.run_for(std::chrono::milliseconds(50));
}
