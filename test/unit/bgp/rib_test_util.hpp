// rib_test_util.hpp — helpers shared by the RIB and best-path unit tests:
// building attribute sets and prefixes tersely.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "bgp/rib.hpp"

namespace tabby::bgp::test {

inline IpAddress ip(const char* s) { return IpAddress::parse(s).value(); }
inline Prefix pfx(const char* s) { return Prefix::parse(s).value(); }
inline uint32_t rid(const char* s) { return ip(s).v4_host_order(); }

inline AsPath seq(std::initializer_list<uint32_t> asns) {
  if (asns.size() == 0) return {};
  return {AsPathSegment{AsPathSegment::Type::Sequence, std::vector<uint32_t>(asns)}};
}

// A builder for PathAttributes: attrs().path({1,2}).nh("10.0.0.2").lp(200)
struct A {
  PathAttributes a;
  A() { a.next_hop = ip("192.0.2.1"); }
  A& path(std::initializer_list<uint32_t> asns) { a.as_path = seq(asns); return *this; }
  A& nh(const char* s) { a.next_hop = ip(s); return *this; }
  A& no_nh() { a.next_hop = IpAddress(); return *this; }
  A& lp(uint32_t v) { a.local_pref = v; return *this; }
  A& med(uint32_t v) { a.med = v; return *this; }
  A& origin(Origin o) { a.origin = o; return *this; }
  A& comm(uint32_t c) { a.communities.push_back(c); return *this; }
  A& orig_id(const char* s) { a.originator_id = ip(s); return *this; }
  A& clusters(std::initializer_list<uint32_t> c) { a.cluster_list = c; return *this; }
  operator PathAttributes() const { return a; }
};

}  // namespace tabby::bgp::test
