// loopback_port.hpp — for unit tests that run several BGP speakers or agents on
// 127.0.0.1, .2 and .3: a TCP port free on all three addresses.
#pragma once

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>

namespace tabby::test {

inline uint16_t free_port_on_loopback_1_to_3() {
  namespace asio = boost::asio;
  using asio::ip::tcp;
  asio::io_context io;
  for (int tries = 0; tries < 50; ++tries) {
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    uint16_t port = a.local_endpoint().port();
    bool ok = true;
    for (const char* other : {"127.0.0.2", "127.0.0.3"}) {
      boost::system::error_code ec;
      tcp::acceptor b(io);
      b.open(tcp::v4(), ec);
      if (!ec) b.bind(tcp::endpoint(asio::ip::make_address(other), port), ec);
      if (ec) ok = false;
    }
    if (ok) return port;
  }
  FAIL("no TCP port free on 127.0.0.1-3");
  return 0;
}

}  // namespace tabby::test
