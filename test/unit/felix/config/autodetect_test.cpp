// autodetect_test.cpp — IP_AUTODETECTION_METHOD / IP6_AUTODETECTION_METHOD: parsing
// (errors name the method and the bad part) and the address each method picks
// from a node with several interfaces.
#include <doctest/doctest.h>

#include "felix/config/autodetect.hpp"
#include "felix/config/config.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {
InterfaceAddress A(const char* ip, int len) { return {*IpAddress::parse(ip), len}; }

// Index order differs from the order given: selection goes by index.
std::vector<HostInterface> node() {
  return {
      {"ens4", 4, true, {A("203.0.113.5", 24), A("2001:db8:2::5", 64)}},
      {"lo", 1, true, {A("127.0.0.1", 8), A("::1", 128)}},
      {"docker0", 2, true, {A("172.17.0.1", 16)}},
      {"ens3", 3, true, {A("fe80::1", 64), A("169.254.3.3", 16), A("198.18.0.11", 24), A("2001:db8:1::11", 64)}},
      {"cali12345", 5, true, {A("198.19.0.1", 32)}},
      {"eth9", 6, false, {A("198.51.100.9", 24)}},
      {"bond0", 7, true, {A("198.51.100.7", 24)}},
  };
}
std::string pick(const char* method, IpFamily f = IpFamily::V4, std::optional<IpAddress> src = std::nullopt) {
  auto m = parse_autodetection_method(method, f);
  if (!m) return "parse: " + m.error().message;
  auto r = autodetect_address(*m, f, node(), src);
  return r ? *r : "error: " + r.error().message;
}
}  // namespace

TEST_CASE("autodetect: each method picks the expected address") {
  CHECK(pick("") == "198.18.0.11/24");              // first-found: lo, docker0 skipped; link-local skipped
  CHECK(pick("first-found") == "198.18.0.11/24");
  CHECK(pick("first-found", IpFamily::V6) == "2001:db8:1::11/64");
  CHECK(pick("interface=ens4") == "203.0.113.5/24");
  CHECK(pick("interface=bond.*,ens4") == "203.0.113.5/24");  // ens4 has the lower index
  CHECK(pick("interface=^bond") == "198.51.100.7/24");
  CHECK(pick("interface=eth9").find("no interface that is up") != std::string::npos);  // down
  CHECK(pick("skip-interface=ens3") == "203.0.113.5/24");
  CHECK(pick("skip-interface=ens.*") == "198.51.100.7/24");
  CHECK(pick("skip-interface=ens3", IpFamily::V6) == "2001:db8:2::5/64");
  CHECK(pick("cidr=198.51.100.0/24") == "198.51.100.7/24");  // eth9 (lower index) is down
  CHECK(pick("cidr=203.0.113.0/24,198.18.0.0/16") == "198.18.0.11/24");
  CHECK(pick("cidr=2001:db8:2::/48", IpFamily::V6) == "2001:db8:2::5/64");
  CHECK(pick("can-reach=198.51.100.1", IpFamily::V4, *IpAddress::parse("198.51.100.7")) == "198.51.100.7/24");
  CHECK(pick("can-reach=2001:db8:2::1", IpFamily::V6, *IpAddress::parse("2001:db8:2::5")) == "2001:db8:2::5/64");
  auto named = parse_autodetection_method("can-reach=gw.example", IpFamily::V4);
  REQUIRE(named);
  CHECK(named->reach_name == "gw.example");
  CHECK(!named->reach);
}

TEST_CASE("autodetect: errors name the method and the part") {
  CHECK(pick("nearest") ==
        "parse: autodetection method 'nearest': unknown method (first-found, can-reach=ADDRESS|NAME, interface=REGEX, "
        "skip-interface=REGEX, cidr=CIDR)");
  CHECK(pick("interface=(") .find("'(' is not a valid regular expression") != std::string::npos);
  CHECK(pick("interface=") == "parse: autodetection method 'interface=': needs at least one regular expression");
  CHECK(pick("cidr=10.0.0.0") == "parse: autodetection method 'cidr=10.0.0.0': '10.0.0.0' is not a CIDR like 198.18.0.0/16");
  CHECK(pick("cidr=2001:db8::/32") == "parse: autodetection method 'cidr=2001:db8::/32': '2001:db8::/32' is not an IPv4 CIDR");
  // A name is resolved by the host side (autodetect_host.cpp); unresolved, the
  // pure choice says so instead of guessing.
  CHECK(pick("can-reach=example.com") == "error: can-reach=example.com: the name is not resolved");
  CHECK(pick("can-reach=bad_name!").find("is neither an IP address nor a host name") != std::string::npos);
  CHECK(pick("can-reach=a..b").find("is neither an IP address nor a host name") != std::string::npos);
  CHECK(pick("can-reach=2001:db8::1").find("is not an IPv4 address") != std::string::npos);
  CHECK(pick("can-reach=198.51.100.1") == "error: can-reach=198.51.100.1: no route to it");
  CHECK(pick("can-reach=198.51.100.1", IpFamily::V4, *IpAddress::parse("192.0.2.1")) ==
        "error: can-reach=198.51.100.1: source address 192.0.2.1 is on no interface");
  CHECK(pick("cidr=192.0.2.0/24") ==
        "error: cidr=192.0.2.0/24: no IPv4 address inside on an interface that is up (interfaces: lo, docker0, ens3, ens4, cali12345, eth9 (down), bond0)");
}

TEST_CASE("$IP6: an IPv6 address (with or without a length) becomes node_ipv6, anything else is an error") {
  ConfigEnvironment env;
  env.nodename = "n1";
  env.ip6 = "2001:db8::5";
  auto c = parse_config("routerID: 198.18.0.1\n", "node.yaml", env);
  REQUIRE(c);
  CHECK(c->node_ipv6 == "2001:db8::5/128");
  env.ip6 = "2001:db8:1::11/64";
  c = parse_config("routerID: 198.18.0.1\n", "node.yaml", env);
  REQUIRE(c);
  CHECK(c->node_ipv6 == "2001:db8:1::11/64");
  env.ip6 = "198.18.0.1";
  c = parse_config("routerID: 198.18.0.1\n", "node.yaml", env);
  REQUIRE_FALSE(c);
  CHECK(c.error().message.find("$IP6 ('198.18.0.1') is not an IPv6 address") != std::string::npos);
}
