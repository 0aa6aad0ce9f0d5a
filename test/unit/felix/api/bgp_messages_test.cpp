// bgp_messages_test.cpp — the BGP part of /readyz: which peers keep the node
// from being ready (session not up, or End-of-RIB still owed, RFC 4724 §4.1).
#include <doctest/doctest.h>

#include "felix/api/bgp_messages.hpp"

using namespace tabby;

namespace {
bgp::PeerStatus peer(const char* addr, const char* state, bool eor) {
  bgp::PeerStatus p;
  p.address = *IpAddress::parse(addr);
  p.state = state;
  p.end_of_rib = eor;
  return p;
}
}  // namespace

TEST_CASE("readiness: the BGP reason names peers not up and peers owing End-of-RIB") {
  auto r = felix::bgp_waiting_reason({peer("198.18.0.1", "Established", true), peer("198.18.0.2", "Active", false),
                                      peer("198.18.0.3", "Established", false)});
  CHECK(r ==
        "BGP: waiting for End-of-RIB; peers not up: 198.18.0.2; End-of-RIB not yet received from: 198.18.0.3 "
        "(bounded by the graceful-restart time)");
  r = felix::bgp_waiting_reason({peer("198.18.0.3", "Established", false), peer("198.18.0.4", "Established", false)});
  CHECK(r.find("End-of-RIB not yet received from: 198.18.0.3, 198.18.0.4") != std::string::npos);
  CHECK(r.find("not up") == std::string::npos);
}
