// types_test.cpp — shared BGP value helpers: AS_PATH measures, End-of-RIB
// markers, shutdown communication, attribute interning, community text.
#include <doctest/doctest.h>

#include "bgp/types.hpp"

using namespace tabby;
using namespace tabby::bgp;

TEST_CASE("AS_PATH length counts a SET as one and confederation segments as zero") {
  AsPath p{{AsPathSegment::Type::ConfedSequence, {65001, 65002}},
           {AsPathSegment::Type::Sequence, {64512, 64513}},
           {AsPathSegment::Type::Set, {1, 2, 3}}};
  CHECK(as_path_length(p) == 3);
  CHECK(as_path_first(p) == 64512u);
  CHECK(as_path_contains(p, 2));
  CHECK_FALSE(as_path_contains(p, 4));
  CHECK(as_path_str(p) == "(65001 65002) 64512 64513 {1,2,3}");
}

TEST_CASE("End-of-RIB markers round-trip through the helpers") {
  CHECK(end_of_rib_family(make_end_of_rib(kIpv4Unicast)) == kIpv4Unicast);
  CHECK(end_of_rib_family(make_end_of_rib(kIpv6Unicast)) == kIpv6Unicast);
  UpdateMessage u = make_end_of_rib(kIpv6Unicast);
  u.mp_withdrawn.push_back(*Prefix::parse("2001:db8::/32"));
  CHECK_FALSE(end_of_rib_family(u).has_value());
}

TEST_CASE("shutdown communication is length-prefixed and cut on a UTF-8 boundary") {
  auto n = make_shutdown_notification(cease_sub::AdministrativeShutdown, "maintenance");
  REQUIRE(n.data.size() == 12);
  CHECK(n.data[0] == 11);
  CHECK(shutdown_message(n) == std::string("maintenance"));
  std::string long_text(254, 'a');
  long_text += "\xc3\xa9";  // a 2-byte character straddling byte 255
  auto cut = make_shutdown_notification(cease_sub::AdministrativeShutdown, long_text);
  CHECK(cut.data[0] == 254);
  CHECK(describe_notification(6, 2) == "Cease/Administrative Shutdown");
}

TEST_CASE("equal attribute sets are interned once and freed with their last reference") {
  AttrStore store;
  PathAttributes a;
  a.as_path = {{AsPathSegment::Type::Sequence, {64513}}};
  a.next_hop = *IpAddress::parse("198.18.0.2");
  a.communities = {64512u << 16 | 100};
  {
    AttrRef r1 = store.intern(a);
    AttrRef r2 = store.intern(a);
    CHECK(r1 == r2);
    CHECK(store.size() == 1);
    PathAttributes b = a;
    b.med = 10;
    AttrRef r3 = store.intern(b);
    CHECK_FALSE(r3 == r1);
    CHECK(store.size() == 2);
    CHECK(r3->med == 10u);
  }
  CHECK(store.size() == 0);
}

TEST_CASE("community text: well-known names, ASN:VALUE and large A:B:C (RFC 1997, RFC 8092)") {
  CHECK(community_str(*parse_community("64512:100")) == "64512:100");
  CHECK(*parse_community("no-export") == kNoExport);
  CHECK_FALSE(parse_community("1:2:3").ok());
  CHECK(large_community_str(*parse_large_community("4200000000:1:2")) == "4200000000:1:2");
  CHECK_FALSE(parse_large_community("1:2").ok());
  CHECK(parse_community("70000:1").error().message.find("not a community") != std::string::npos);
}
