// felix_dataplane_test.cpp — unit tests of the dataplane's pure logic: RouteSync
// (desired vs observed -> deltas) driven through the in-memory RecordingDataplane,
// plus the tunnel module's pure decisions (CrossSubnet, MTU, VXLAN MAC).
#include <doctest/doctest.h>

#include <algorithm>

#include "felix/dataplane.hpp"
#include "felix/recording_dataplane.hpp"
#include "felix/route_sync.hpp"
#include "ipip/ipip.hpp"

using namespace tabby;
using namespace tabby::dataplane;

namespace {
IpAddress ip(const char* s) { return IpAddress::parse(s).value(); }
Prefix pfx(const char* s) { return Prefix::parse(s).value(); }
RecordingDataplane make_dp() { return RecordingDataplane({"eth0", "cali1", "cali2", "tunl0", "vxlan.tabby"}); }
std::vector<Route> remote_direct() {
  return {direct_route(pfx("198.19.1.0/26"), ip("198.18.0.2"), "eth0"),
          direct_route(pfx("198.19.2.0/26"), ip("198.18.0.3"), "eth0")};
}
}  // namespace

TEST_CASE("first apply writes every desired route once, second apply writes nothing") {
  auto dp = make_dp();
  dp.set_routes(RouteClass::LocalWorkload, {workload_route(ip("198.19.0.1"), "cali1"),
                                            workload_route(ip("198.19.0.2"), "cali2")});
  dp.set_routes(RouteClass::LocalBlock, {block_blackhole(pfx("198.19.0.0/26"))});
  dp.set_routes(RouteClass::RemoteBlock, remote_direct());
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.size() == 5);
  CHECK(std::count(dp.ops.begin(), dp.ops.end(), "add blackhole 198.19.0.0/26") == 1);
  CHECK(std::count(dp.ops.begin(), dp.ops.end(), "add 198.19.0.1/32 dev cali1") == 1);
  CHECK(std::count(dp.ops.begin(), dp.ops.end(), "add 198.19.1.0/26 via 198.18.0.2 dev eth0") == 1);
  dp.ops.clear();
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.empty());
  auto st = dp.status();
  CHECK(st.routes_desired == 5);
  CHECK(st.routes_programmed == 5);
  CHECK(st.in_sync);
}

TEST_CASE("a changed class set rewrites only the changed routes; removals wait for completeness") {
  auto dp = make_dp();
  dp.set_routes(RouteClass::RemoteBlock, remote_direct());
  REQUIRE(dp.apply().ok());
  dp.ops.clear();
  // Switch one block to VXLAN, drop the other.
  dp.set_routes(RouteClass::RemoteBlock, {onlink_route(pfx("198.19.1.0/26"), ip("198.19.1.0"), "vxlan.tabby")});
  REQUIRE(dp.apply().ok());
  REQUIRE(dp.ops.size() == 1);
  CHECK(dp.ops[0] == "add 198.19.1.0/26 via 198.19.1.0 dev vxlan.tabby onlink");
  CHECK(dp.kernel_routes(kTabbyRouteProtocol).size() == 2);  // 198.19.2.0/26 is kept: not complete yet
  dp.ops.clear();
  dp.desired_state_complete();
  REQUIRE(dp.apply().ok());
  REQUIRE(dp.ops.size() == 1);
  CHECK(dp.ops[0] == "del 198.19.2.0/26 via 198.18.0.3 dev eth0");
  dp.ops.clear();
  dp.set_routes(RouteClass::RemoteBlock, {});
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"del 198.19.1.0/26 via 198.19.1.0 dev vxlan.tabby onlink"});
  CHECK(dp.kernel_routes(kTabbyRouteProtocol).empty());
}

TEST_CASE("the lower class wins a destination both want") {
  auto dp = make_dp();
  dp.set_routes(RouteClass::RemoteBlock, {direct_route(pfx("198.19.0.1/32"), ip("198.18.0.9"), "eth0")});
  dp.set_routes(RouteClass::LocalWorkload, {workload_route(ip("198.19.0.1"), "cali1")});
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.0.1/32 dev cali1"});
  CHECK(dp.status().routes_desired == 1);
  dp.ops.clear();
  dp.set_routes(RouteClass::LocalWorkload, {});
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.0.1/32 via 198.18.0.9 dev eth0"});
}

TEST_CASE("restart: routes of a previous run are adopted, leftovers swept only after completeness") {
  auto dp = make_dp();
  for (const auto& r : remote_direct()) dp.kernel_add(r, kTabbyRouteProtocol);
  dp.kernel_add(block_blackhole(pfx("198.19.9.0/26")), kTabbyRouteProtocol);  // leftover
  REQUIRE(dp.resync().ok());  // the start-up dump
  CHECK(dp.ops.empty());      // nothing deleted before the desired state is known
  dp.set_routes(RouteClass::RemoteBlock, remote_direct());
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.empty());  // identical routes are adopted, not rewritten
  CHECK(dp.kernel_routes(kTabbyRouteProtocol).size() == 3);
  dp.desired_state_complete();
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"del blackhole 198.19.9.0/26"});
}

TEST_CASE("a foreign route for one of our prefixes is never touched and is reported") {
  auto dp = make_dp();
  Route foreign = direct_route(pfx("198.19.1.0/26"), ip("198.18.0.77"), "eth0");
  dp.kernel_add(foreign, 12);  // bird
  dp.kernel_add(block_blackhole(pfx("203.0.113.0/24")), 17);  // zebra, not wanted by us
  REQUIRE(dp.resync().ok());
  dp.set_routes(RouteClass::RemoteBlock, remote_direct());
  dp.desired_state_complete();
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.2.0/26 via 198.18.0.3 dev eth0"});
  auto st = dp.status();
  REQUIRE(st.conflicts.size() == 1);
  CHECK(st.conflicts[0].kernel_protocol == 12);
  CHECK(st.conflicts[0].wanted.dst == pfx("198.19.1.0/26"));
  CHECK(st.conflicts[0].kernel_route == "198.19.1.0/26 via 198.18.0.77 dev eth0");
  auto dump = dp.kernel_dump();
  CHECK(std::count(dump.begin(), dump.end(), "proto 12 198.19.1.0/26 via 198.18.0.77 dev eth0") == 1);
  CHECK(std::count(dump.begin(), dump.end(), "proto 17 blackhole 203.0.113.0/24") == 1);
  // Cleanup leaves foreign routes too.
  dp.ops.clear();
  REQUIRE(dp.cleanup().ok());
  CHECK(dp.kernel_routes(12).size() == 1);
  CHECK(dp.kernel_routes(17).size() == 1);
  CHECK(dp.kernel_routes(kTabbyRouteProtocol).empty());
}

TEST_CASE("when the foreign route goes away, ours is written") {
  auto dp = make_dp();
  Route foreign = direct_route(pfx("198.19.1.0/26"), ip("198.18.0.77"), "eth0");
  dp.kernel_add(foreign, 12);
  REQUIRE(dp.resync().ok());
  dp.set_routes(RouteClass::RemoteBlock, remote_direct());
  REQUIRE(dp.apply().ok());
  CHECK(dp.status().conflicts.size() == 1);
  dp.ops.clear();
  dp.kernel_notify_delete(foreign);
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.1.0/26 via 198.18.0.2 dev eth0"});
  CHECK(dp.status().conflicts.empty());
}

TEST_CASE("a route of ours deleted by hand is repaired: at once on its event, or by resync") {
  auto dp = make_dp();
  dp.set_routes(RouteClass::RemoteBlock, remote_direct());
  REQUIRE(dp.apply().ok());
  dp.ops.clear();
  dp.kernel_notify_delete(remote_direct()[0]);
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.1.0/26 via 198.18.0.2 dev eth0"});
  dp.ops.clear();
  dp.kernel_delete(remote_direct()[1]);  // silently (as a link-down flush does)
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.empty());  // not seen without an event ...
  REQUIRE(dp.resync().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.2.0/26 via 198.18.0.3 dev eth0"});  // ... resync repairs
}

TEST_CASE("a route of ours changed by hand is put back") {
  auto dp = make_dp();
  dp.set_routes(RouteClass::RemoteBlock, remote_direct());
  REQUIRE(dp.apply().ok());
  dp.ops.clear();
  dp.kernel_notify_add(direct_route(pfx("198.19.1.0/26"), ip("198.18.0.99"), "eth0"), kTabbyRouteProtocol);
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.1.0/26 via 198.18.0.2 dev eth0"});
}

TEST_CASE("routes through a missing interface are pending until it appears") {
  auto dp = make_dp();
  dp.set_routes(RouteClass::LocalWorkload, {workload_route(ip("198.19.0.5"), "cali5")});
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.empty());
  CHECK(dp.status().routes_pending == 1);
  CHECK_FALSE(dp.status().in_sync);
  dp.add_interface("cali5");
  REQUIRE(dp.resync().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.19.0.5/32 dev cali5"});
  CHECK(dp.status().routes_pending == 0);
  // The interface goes away: the kernel drops the route; a resync marks it pending again.
  dp.remove_interface("cali5");
  dp.ops.clear();
  REQUIRE(dp.resync().ok());
  CHECK(dp.ops.empty());
  CHECK(dp.status().routes_pending == 1);
}

TEST_CASE("ECMP next hops compare regardless of order; a changed hop set is one replace") {
  auto dp = make_dp();
  std::vector<NextHop> hops = {{ip("198.18.0.3"), "eth0", false, 1}, {ip("198.18.0.2"), "eth0", false, 1}};
  dp.set_routes(RouteClass::Static, {ecmp_route(pfx("203.0.113.0/24"), hops)});
  REQUIRE(dp.apply().ok());
  REQUIRE(dp.ops.size() == 1);
  CHECK(dp.ops[0] == "add 203.0.113.0/24 nexthop via 198.18.0.2 dev eth0 weight 1 nexthop via 198.18.0.3 dev eth0 weight 1");
  dp.ops.clear();
  std::reverse(hops.begin(), hops.end());
  dp.set_routes(RouteClass::Static, {ecmp_route(pfx("203.0.113.0/24"), hops)});
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.empty());
  hops.push_back({ip("198.18.0.4"), "eth0", false, 2});
  dp.set_routes(RouteClass::Static, {ecmp_route(pfx("203.0.113.0/24"), hops)});
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.size() == 1);
}

TEST_CASE("IPv6: /128 workloads, blackholes, and metric 0 meaning the kernel's 1024") {
  auto dp = make_dp();
  dp.set_routes(RouteClass::LocalWorkload, {workload_route(ip("2001:db8:0:1::5"), "cali1")});
  dp.set_routes(RouteClass::LocalBlock, {block_blackhole(pfx("2001:db8:0:1::/122"))});
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.size() == 2);
  auto routes = dp.kernel_routes(kTabbyRouteProtocol);
  for (const auto& r : routes) CHECK(r.metric == 1024);
  // The kernel reports metric 1024: the index treats that as equal to what we asked for.
  dp.ops.clear();
  REQUIRE(dp.resync().ok());
  CHECK(dp.ops.empty());
  dp.remove_route(RouteClass::LocalWorkload, workload_route(ip("2001:db8:0:1::5"), "cali1"));
  dp.desired_state_complete();
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"del 2001:db8:0:1::5/128 metric 1024 dev cali1"});
}

TEST_CASE("route-by-route edits touch only their key among many") {
  auto dp = make_dp();
  std::vector<Route> many;
  for (uint32_t i = 0; i < 5000; ++i)
    many.push_back(workload_route(IpAddress::v4((198u << 24) | (19u << 16) | i), "cali1"));
  dp.set_routes(RouteClass::LocalWorkload, many);
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.size() == 5000);
  dp.ops.clear();
  dp.upsert_route(RouteClass::LocalWorkload, workload_route(ip("198.20.0.1"), "cali2"));
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops == std::vector<std::string>{"add 198.20.0.1/32 dev cali2"});
  dp.ops.clear();
  dp.upsert_route(RouteClass::LocalWorkload, workload_route(ip("198.20.0.1"), "cali2"));  // unchanged
  REQUIRE(dp.apply().ok());
  CHECK(dp.ops.empty());
}

TEST_CASE("RouteSync marks exactly the changed keys dirty") {
  RouteSync s;
  std::vector<Route> v;
  for (uint32_t i = 0; i < 100; ++i) v.push_back(block_blackhole(Prefix(IpAddress::v4(0xC6130000u + i * 64), 26)));
  s.set_class(RouteClass::LocalBlock, v);
  CHECK(s.dirty_count() == 100);
  auto plan = s.plan([](const RouteAttrs&) { return true; });
  CHECK(plan.upserts.size() == 100);
  for (const auto& r : plan.upserts) s.ack_upsert(r);
  v[7] = block_blackhole(Prefix(IpAddress::v4(0xC6140000u), 26));
  s.set_class(RouteClass::LocalBlock, v);
  CHECK(s.dirty_count() == 2);  // one gone, one new
  plan = s.plan([](const RouteAttrs&) { return true; });
  CHECK(plan.upserts.size() == 1);
  CHECK(plan.deletes.empty());  // not complete yet
  s.set_complete();
  plan = s.plan([](const RouteAttrs&) { return true; });
  CHECK(plan.deletes.size() == 1);
}

TEST_CASE("tunnel configuration reaches the dataplane only when it changes") {
  auto dp = make_dp();
  TunnelConfig t;
  t.node_ip = ip("198.18.0.1");
  t.vxlan.enabled = true;
  t.vteps.push_back(Vtep{"n2", ip("198.19.1.0"), ip("198.18.0.2"), ipip::vxlan_mac_for(ip("198.18.0.2"))});
  dp.set_tunnels(t);
  REQUIRE(dp.apply().ok());
  dp.set_tunnels(t);
  REQUIRE(dp.apply().ok());
  CHECK(dp.tunnel_applies == 1);
  CHECK(dp.tunnels.vxlan.vni == 4096);
  CHECK(dp.tunnels.vxlan.port == 4789);
}

TEST_CASE("route text follows ip-route style") {
  CHECK(block_blackhole(pfx("198.19.0.0/26")).str() == "blackhole 198.19.0.0/26");
  CHECK(onlink_route(pfx("198.19.1.0/26"), ip("198.18.0.2"), "tunl0").str() ==
        "198.19.1.0/26 via 198.18.0.2 dev tunl0 onlink");
  CHECK(std::string(route_class_name(RouteClass::RemoteBlock)) == "remote-block");
}

TEST_CASE("CrossSubnet encapsulates only across subnets; Always and Never as named") {
  Prefix local = pfx("198.18.0.0/24");
  CHECK_FALSE(ipip::use_tunnel(ipip::EncapMode::CrossSubnet, local, ip("198.18.0.7")));
  CHECK(ipip::use_tunnel(ipip::EncapMode::CrossSubnet, local, ip("198.18.1.7")));
  CHECK(ipip::use_tunnel(ipip::EncapMode::Always, local, ip("198.18.0.7")));
  CHECK_FALSE(ipip::use_tunnel(ipip::EncapMode::Never, local, ip("198.18.1.7")));
  CHECK(ipip::parse_encap_mode("CrossSubnet").value() == ipip::EncapMode::CrossSubnet);
  CHECK_FALSE(ipip::parse_encap_mode("crosssubnet").ok());
}

TEST_CASE("tunnel MTUs and the VXLAN MAC") {
  CHECK(ipip::ipip_mtu(1500) == 1480);
  CHECK(ipip::vxlan_mtu(1500) == 1450);
  auto mac = ipip::vxlan_mac_for(ip("198.18.0.2"));
  CHECK(ipip::mac_str(mac) == "66:74:c6:12:00:02");
  CHECK((mac[0] & 1) == 0);  // unicast
  CHECK((mac[0] & 2) == 2);  // locally administered
  CHECK(ipip::vxlan_mac_for(ip("198.18.0.3")) != mac);
  CHECK(std::string(ipip::kNoIpipError) == "kernel has no ipip support: load module ipip or use vxlanMode");
}
