// accept_backoff_test.cpp — the accept-failure policy (base/accept_backoff.hpp):
// growing delays, one log line per episode, recovery ends the episode.
#include <doctest/doctest.h>

#include <cerrno>
#include <vector>

#include "base/accept_backoff.hpp"

using namespace tabby;
using namespace std::chrono_literals;

TEST_CASE("accept backoff: delays grow from 100 ms to 1.6 s, one log line per episode") {
  AcceptBackoff b("BGP port 179");
  auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  CHECK(!b.backing_off());
  CHECK(b.succeeded(t0).empty());  // no episode, nothing to say

  auto s = b.failed(EMFILE, "Too many open files", t0);
  CHECK(s.delay == 100ms);
  CHECK(s.log.find("cannot accept on BGP port 179: Too many open files (out of file descriptors or memory)") == 0);
  CHECK(b.backing_off());
  CHECK(b.episodes() == 1);
  std::vector<long> delays;
  for (int i = 0; i < 6; ++i) {
    auto n = b.failed(EMFILE, "Too many open files", t0 + 1s);
    CHECK(n.log.empty());  // logged once, not per attempt
    delays.push_back(static_cast<long>(n.delay.count()));
  }
  CHECK(delays == std::vector<long>{200, 400, 800, 1600, 1600, 1600});

  auto line = b.succeeded(t0 + 2500ms);
  CHECK(line == "accepting again on BGP port 179 after 2500 ms (7 failed attempts)");
  CHECK(!b.backing_off());
  CHECK(b.succeeded(t0 + 3s).empty());

  // A new episode starts from the first delay again and logs again.
  s = b.failed(ENFILE, "Too many open files in system", t0 + 4s);
  CHECK(s.delay == 100ms);
  CHECK(!s.log.empty());
  CHECK(b.episodes() == 2);
  CHECK(b.succeeded(t0 + 4100ms) == "accepting again on BGP port 179 after 100 ms (1 failed attempt)");
}

TEST_CASE("accept backoff: exhaustion errors are told apart; others back off too") {
  CHECK(AcceptBackoff::is_exhaustion(EMFILE));
  CHECK(AcceptBackoff::is_exhaustion(ENFILE));
  CHECK(AcceptBackoff::is_exhaustion(ENOBUFS));
  CHECK(AcceptBackoff::is_exhaustion(ENOMEM));
  CHECK(!AcceptBackoff::is_exhaustion(ECONNABORTED));
  AcceptBackoff b("the API socket");
  auto s = b.failed(EPERM, "Operation not permitted", std::chrono::steady_clock::now());
  CHECK(s.delay == 100ms);
  CHECK(s.log.find("out of file descriptors") == std::string::npos);
  CHECK(s.log.find("cannot accept on the API socket: Operation not permitted") == 0);
}
