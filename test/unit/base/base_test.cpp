// base_test.cpp — IpAddress / Prefix parsing, masking and containment.
#include <doctest/doctest.h>

#include "base/base.hpp"

using namespace tabby;

TEST_CASE("prefixes parse, mask host bits and print back") {
  auto p = Prefix::parse("198.19.1.77/26");
  REQUIRE(p.ok());
  CHECK(p->str() == "198.19.1.64/26");
  CHECK(p->len() == 26);
  auto v6 = Prefix::parse("2001:db8:1::5/48");
  REQUIRE(v6.ok());
  CHECK(v6->str() == "2001:db8:1::/48");
  auto host = Prefix::parse("203.0.113.9");
  REQUIRE(host.ok());
  CHECK(host->len() == 32);
}

TEST_CASE("bad prefixes are errors that name the input") {
  auto a = Prefix::parse("198.19.0.0/33");
  REQUIRE_FALSE(a.ok());
  CHECK(a.error().message.find("198.19.0.0/33") != std::string::npos);
  CHECK_FALSE(Prefix::parse("300.1.1.1/8").ok());
  CHECK_FALSE(Prefix::parse("10.0.0.0/").ok());
  CHECK_FALSE(Prefix::parse("10.0.0.0/2x").ok());
}

TEST_CASE("containment and overlap") {
  auto pool = *Prefix::parse("198.19.0.0/16");
  auto block = *Prefix::parse("198.19.4.0/26");
  CHECK(pool.contains(block));
  CHECK_FALSE(block.contains(pool));
  CHECK(pool.overlaps(block));
  CHECK(block.contains(*IpAddress::parse("198.19.4.63")));
  CHECK_FALSE(block.contains(*IpAddress::parse("198.19.4.64")));
  CHECK_FALSE(pool.contains(*IpAddress::parse("2001:db8::1")));
}

TEST_CASE("link-local detection") {
  CHECK(IpAddress::parse("fe80::1")->is_link_local());
  CHECK_FALSE(IpAddress::parse("2001:db8::1")->is_link_local());
  CHECK(IpAddress::parse("0.0.0.0")->is_unspecified());
}
