// transport_test.cpp — the Asio connection wrapper (bgp/transport.hpp) on a
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

// Per-session memory follows what is in flight. An open, idle connection
// holds no receive buffer (it was 64 KiB, zero-filled, per connection); a message
// split across reads is still framed; a burst of 1 MB of messages is delivered whole
// and the buffer is given back afterwards; a big write buffer is freed once sent.
TEST_CASE("transport: receive buffer only while bytes are in flight, framing across reads, output freed") {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  auto conn = std::make_shared<bgp::Connection>(acceptor.accept(), 3);
  CHECK(conn->buffer_bytes() == 0);

  std::vector<size_t> sizes;
  size_t bytes_seen = 0;
  bool closed = false;
  conn->start(
      [&](std::span<const uint8_t> msg) {
        sizes.push_back(msg.size());
        for (uint8_t b : msg.subspan(19)) bytes_seen += b;  // the body's bytes, checked below
        return true;
      },
      [&](const std::string&) { closed = true; });
  io.run_for(std::chrono::milliseconds(50));
  CHECK(conn->buffer_bytes() == 0);  // started, nothing received: no buffer

  // One 4096-byte message (an UPDATE-sized frame, body of 1s) written in two halves
  // with a pause between: the first read holds a partial message.
  std::vector<uint8_t> big(4096, 1);
  for (int j = 0; j < 16; ++j) big[size_t(j)] = 0xff;
  big[16] = 0x10;
  big[17] = 0x00;
  big[18] = 2;
  asio::write(client, asio::buffer(big.data(), 1000));
  io.run_for(std::chrono::milliseconds(50));
  CHECK(sizes.empty());
  CHECK(conn->buffer_bytes() > 0);  // the partial message is kept
  asio::write(client, asio::buffer(big.data() + 1000, big.size() - 1000));
  io.run_for(std::chrono::milliseconds(50));
  REQUIRE(sizes.size() == 1);
  CHECK(sizes[0] == 4096);
  CHECK(bytes_seen == 4096 - 19);
  CHECK(conn->buffer_bytes() == 0);  // drained: given back

  // A burst: 256 messages of 4096 bytes in one write (1 MiB), more than one read holds.
  std::vector<uint8_t> burst;
  for (int i = 0; i < 256; ++i) burst.insert(burst.end(), big.begin(), big.end());
  sizes.clear();
  bytes_seen = 0;
  asio::async_write(client, asio::buffer(burst), [](const boost::system::error_code&, size_t) {});
  io.run_for(std::chrono::milliseconds(500));
  CHECK(sizes.size() == 256);
  CHECK(bytes_seen == 256 * (4096 - 19));
  CHECK(conn->buffer_bytes() == 0);
  CHECK_FALSE(closed);

  // Output: a 1 MiB send is written out, then its buffer is freed.
  conn->send(std::vector<uint8_t>(1 << 20, 0));
  size_t got = 0;
  std::vector<uint8_t> sink(1 << 16);
  client.non_blocking(true);
  for (int i = 0; i < 200 && got < (1u << 20); ++i) {
    io.run_for(std::chrono::milliseconds(5));
    boost::system::error_code ec;
    got += client.read_some(asio::buffer(sink), ec);
  }
  io.run_for(std::chrono::milliseconds(20));
  CHECK(got == (1u << 20));
  CHECK(conn->queued_bytes() == 0);
  CHECK(conn->buffer_bytes() == 0);
  conn->close();
}
