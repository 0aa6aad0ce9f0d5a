// dataplane_test.cpp — unit tests of the dataplane's pure logic: RouteDiff
// (desired vs observed -> deltas) driven through the in-memory RecordingDataplane,
// plus the tunnel module's pure decisions (CrossSubnet, MTU, VXLAN MAC).
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <unordered_map>

#include "dataplane/dataplane.hpp"
#include "test/fakes/recording_dataplane.hpp"
#include "dataplane/route_diff.hpp"
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

TEST_CASE("RouteDiff marks exactly the changed keys dirty") {
  RouteDiff s;
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

// ---------------------------------------------------------------- flat index, interning, bulk diff

TEST_CASE("FlatIndex: insert, find, erase with backward shift, repoint (against std::unordered_map)") {
  FlatIndex idx;
  std::unordered_map<uint32_t, uint32_t> model;  // id -> hash
  uint64_t x = 12345;
  auto rnd = [&]() { return static_cast<uint32_t>((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 33); };
  uint32_t next_id = 1;
  for (int step = 0; step < 20000; ++step) {
    uint32_t op = rnd() % 3;
    if (op < 2 || model.empty()) {
      uint32_t h = rnd() % 64;  // few hashes: long probe runs and many collisions
      idx.insert(h, next_id);
      model[next_id++] = h;
    } else {
      auto it = model.begin();
      std::advance(it, rnd() % model.size());
      idx.erase(it->second, it->first);
      model.erase(it);
    }
  }
  CHECK(idx.size() == model.size());
  for (const auto& [id, h] : model) {
    uint32_t want = id;
    CHECK(idx.find(h, [&](uint32_t c) { return c == want; }) == id);
  }
  CHECK(idx.find(7, [](uint32_t c) { return c == 0xffffffu; }) == 0);
  auto [id, h] = *model.begin();
  idx.repoint(h, id, 0xfffff0u);
  CHECK(idx.find(h, [](uint32_t c) { return c == 0xfffff0u; }) == 0xfffff0u);
  CHECK(idx.find(h, [&](uint32_t c) { return c == id; }) == 0);
}

TEST_CASE("AttrTable: equal attributes share one id; the id is freed with its last reference") {
  AttrTable t;
  Route a = direct_route(pfx("198.19.1.0/26"), ip("198.18.0.2"), "eth0");
  Route b = direct_route(pfx("198.19.2.0/26"), ip("198.18.0.2"), "eth0");  // other key, same attributes
  Route c = direct_route(pfx("198.19.1.0/26"), ip("198.18.0.3"), "eth0");
  AttrId ia = t.intern(a), ib = t.intern(b), ic = t.intern(c);
  CHECK(ia == ib);
  CHECK(ia != ic);
  CHECK(t.live() == 2);
  CHECK(t.get(ic).nexthops[0].gateway == ip("198.18.0.3"));
  t.cache(ic).bytes = "encoded";
  t.unref(ic);
  CHECK(t.live() == 1);
  AttrId ibh = t.intern(block_blackhole(pfx("198.19.9.0/26")));  // reuses the freed slot ...
  CHECK(ibh == ic);
  CHECK(t.cache(ibh).bytes.empty());  // ... with its cache cleared
  CHECK(t.get(ibh).type == RouteType::Blackhole);
  t.unref(ia);
  CHECK(t.live() == 2);  // ia still referenced once (b)
  t.unref(ib);
  CHECK(t.live() == 1);
}

namespace {
std::vector<Route> bulk(uint32_t n, uint32_t base = 0x0A000000u, const char* gw = "198.18.0.2") {
  std::vector<Route> v;
  for (uint32_t i = 0; i < n; ++i) v.push_back(direct_route(Prefix(IpAddress::v4(base + i), 32), ip(gw), "eth0"));
  return v;
}
void ack_all(RouteDiff& s, const RoutePlan& p) {
  for (const auto& r : p.upserts) s.ack_upsert(r);
  for (const auto& r : p.deletes) s.ack_delete(key_of(r));
}
auto all_writable = [](const RouteAttrs&) { return true; };
}  // namespace

TEST_CASE("set_class with the same content marks nothing dirty and plans nothing") {
  RouteDiff s;
  s.set_class(RouteClass::Static, bulk(3000));
  ack_all(s, s.plan(all_writable));
  s.set_complete();
  CHECK(s.plan(all_writable).upserts.empty());
  auto again = bulk(3000);
  std::reverse(again.begin(), again.end());  // order does not matter
  s.set_class(RouteClass::Static, again);
  CHECK(s.dirty_count() == 0);
  auto p = s.plan(all_writable);
  CHECK(p.upserts.empty());
  CHECK(p.deletes.empty());
  CHECK(s.desired_count() == 3000);
  CHECK(s.owned_count() == 3000);
  CHECK(s.class_count(RouteClass::Static) == 3000);
  CHECK(s.attrs().live() == 1);  // 3000 routes, one attribute value
}

TEST_CASE("set_class: changed next hop, duplicates (last wins), removals, in one call") {
  RouteDiff s;
  s.set_class(RouteClass::Static, bulk(100));
  ack_all(s, s.plan(all_writable));
  s.set_complete();
  auto v = bulk(100);
  v[10] = direct_route(v[10].dst, ip("198.18.0.9"), "eth0");                     // changed
  v.push_back(direct_route(v[20].dst, ip("198.18.0.7"), "eth0"));                // duplicate key: wins
  v.erase(v.begin() + 50, v.begin() + 60);                                        // 10 removed
  s.set_class(RouteClass::Static, v);
  CHECK(s.dirty_count() == 12);
  auto p = s.plan(all_writable);
  REQUIRE(p.upserts.size() == 2);
  CHECK(p.upserts[0].str() == "10.0.0.10/32 via 198.18.0.9 dev eth0");
  CHECK(p.upserts[1].str() == "10.0.0.20/32 via 198.18.0.7 dev eth0");
  CHECK(p.deletes.size() == 10);
  CHECK(std::is_sorted(p.deletes.begin(), p.deletes.end(), [](const Route& a, const Route& b) { return a.dst < b.dst; }));
  ack_all(s, p);
  CHECK(s.desired_count() == 90);
  CHECK(s.owned_count() == 90);
  CHECK(s.class_count(RouteClass::Static) == 90);
  CHECK(s.entry_count() == 90);  // removed routes leave no entry behind
  CHECK(s.attrs().live() == 3);
}

TEST_CASE("a whole class removed at once (compaction path) and re-added") {
  RouteDiff s;
  s.set_class(RouteClass::RemoteBlock, bulk(2000));
  s.set_class(RouteClass::LocalWorkload, bulk(5, 0x0A000000u, "198.18.0.5"));  // shadows 5 of them
  auto p = s.plan(all_writable);
  CHECK(p.upserts.size() == 2000);
  ack_all(s, p);
  s.set_complete();
  s.set_class(RouteClass::RemoteBlock, {});
  p = s.plan(all_writable);
  CHECK(p.upserts.empty());
  CHECK(p.deletes.size() == 1995);
  ack_all(s, p);
  CHECK(s.entry_count() == 5);
  CHECK(s.desired(key_of(bulk(1)[0]))->str() == "10.0.0.0/32 via 198.18.0.5 dev eth0");
  s.set_class(RouteClass::RemoteBlock, bulk(2000));
  CHECK(s.plan(all_writable).upserts.size() == 1995);
}

TEST_CASE("driver-level ops: a failed write stays dirty and is planned again; ops come in address order") {
  RouteDiff s;
  auto v = bulk(300);
  std::reverse(v.begin(), v.end());
  s.set_class(RouteClass::Static, v);
  std::vector<RouteDiff::Op> ops;
  s.plan_ops([](AttrId) { return true; }, ops);
  REQUIRE(ops.size() == 300);
  for (size_t i = 1; i < ops.size(); ++i) CHECK(s.op_key(ops[i - 1]).dst < s.op_key(ops[i]).dst);
  for (size_t i = 0; i < ops.size(); ++i) s.op_done(ops[i], i != 7);  // one failure
  s.ops_finished();
  CHECK(s.owned_count() == 299);
  CHECK(s.dirty_count() == 1);
  s.plan_ops([](AttrId) { return true; }, ops);
  REQUIRE(ops.size() == 1);
  CHECK(s.op_key(ops[0]).dst == pfx("10.0.0.7/32"));
  s.op_done(ops[0], true);
  s.ops_finished();
  s.plan_remove_owned(ops);
  CHECK(ops.size() == 300);
  for (const auto& op : ops) CHECK(op.del);
}

TEST_CASE("streamed observed reset: adopts ours, keeps foreign, drops stale entries") {
  RouteDiff s;
  s.set_class(RouteClass::Static, bulk(10));
  ack_all(s, s.plan(all_writable));
  s.observed_reset_begin();
  KernelRoute kr{bulk(1, 0x0A000005u)[0], kTabbyRouteProtocol};
  s.observed_reset_add(kr);
  KernelRoute foreign{direct_route(pfx("10.0.0.6/32"), ip("198.18.0.66"), "eth0"), 12};
  s.observed_reset_add(foreign);
  KernelRoute other{block_blackhole(pfx("203.0.113.0/24")), 17};
  s.observed_reset_add(other);
  s.observed_reset_end();
  CHECK(s.owned_count() == 1);
  auto p = s.plan(all_writable);
  CHECK(p.upserts.size() == 8);  // 10 desired, 1 adopted as is, 1 blocked by a foreign route
  REQUIRE(s.conflicts().size() == 1);
  CHECK(s.conflicts()[0].kernel_route == "10.0.0.6/32 via 198.18.0.66 dev eth0");
  CHECK(s.observed_protocol(key_of(other.route)) == 17);
  s.set_complete();
  CHECK(s.plan(all_writable).deletes.empty());  // foreign routes are never deleted
}

TEST_CASE("a gateway route written without a device reads back with the kernel's choice: nothing to rewrite") {
  RouteDiff s;
  s.set_class(RouteClass::RemoteBlock, {direct_route(pfx("10.1.0.0/26"), ip("198.18.1.1")),
                                        direct_route(pfx("10.1.0.64/26"), ip("198.18.1.2"))});
  ack_all(s, s.plan(all_writable));
  // What a route dump returns: the same gateways, each with the interface the kernel resolved.
  auto reload = [&](const char* second_gw) {
    s.observed_reset_begin();
    KernelRoute a{direct_route(pfx("10.1.0.0/26"), ip("198.18.1.1"), "eth0"), kTabbyRouteProtocol};
    KernelRoute b{direct_route(pfx("10.1.0.64/26"), ip(second_gw), "eth0"), kTabbyRouteProtocol};
    s.observed_reset_add(a);
    s.observed_reset_add(b);
    s.observed_reset_end();
  };
  reload("198.18.1.2");
  CHECK(s.owned_count() == 2);
  auto p = s.plan(all_writable);
  CHECK(p.upserts.empty());
  CHECK(p.deletes.empty());
  // A different gateway is still a difference.
  reload("198.18.1.9");
  p = s.plan(all_writable);
  REQUIRE(p.upserts.size() == 1);
  CHECK(p.upserts[0].str() == "10.1.0.64/26 via 198.18.1.2");
  // A route that names its device must read back with that device.
  RouteDiff t;
  t.set_class(RouteClass::RemoteBlock, {direct_route(pfx("10.1.0.0/26"), ip("198.18.1.1"), "eth1")});
  ack_all(t, t.plan(all_writable));
  t.observed_reset_begin();
  KernelRoute c{direct_route(pfx("10.1.0.0/26"), ip("198.18.1.1"), "eth0"), kTabbyRouteProtocol};
  t.observed_reset_add(c);
  t.observed_reset_end();
  CHECK(t.plan(all_writable).upserts.size() == 1);
}

TEST_CASE("random edits through the recorder: the kernel ends equal to the desired state") {
  auto dp = make_dp();
  uint64_t x = 99;
  auto rnd = [&]() { return static_cast<uint32_t>((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 33); };
  const char* gws[] = {"198.18.0.2", "198.18.0.3", "198.18.0.4"};
  std::map<std::string, Route> want[kRouteClassCount];  // key text -> route, per class
  const char* gws6[] = {"fd00::2", "fd00::3", "fd00::4"};
  // Keys of every storage shape: IPv4 main table metric 0 (kept inline in the entry),
  // IPv6, another table, another metric (kept aside): `i` picks the shape.
  auto make = [&](uint32_t i) {
    Route r;
    if (i % 4 == 1) {
      uint8_t b[16] = {0xfd, 0x01};
      b[15] = static_cast<uint8_t>(i);
      r = direct_route(Prefix(IpAddress::v6_bytes(b), 128), ip(gws6[rnd() % 3]), "eth0");
      r.metric = 1024;  // the kernel's spelling of IPv6 metric 0
    } else {
      r = direct_route(Prefix(IpAddress::v4(0x0A000000u + i), 32), ip(gws[rnd() % 3]), "eth0");
      if (i % 4 == 2) r.table = 100;
      if (i % 4 == 3) r.metric = 7;
    }
    if (rnd() % 5 == 0) {
      Route b = block_blackhole(r.dst);
      b.table = r.table;
      b.metric = r.metric;
      r = b;
    }
    return r;
  };
  auto key_text = [](const Route& r) { return r.dst.str() + " " + std::to_string(r.table) + " " + std::to_string(r.metric); };
  dp.desired_state_complete();
  for (int round = 0; round < 200; ++round) {
    int cls = static_cast<int>(rnd() % kRouteClassCount);
    switch (rnd() % 3) {
      case 0: {  // replace the class with a random set
        std::vector<Route> v;
        want[cls].clear();
        for (int i = 0; i < 40; ++i) {
          Route r = make(rnd() % 64);
          want[cls][key_text(r)] = r;
          v.push_back(r);
        }
        dp.set_routes(static_cast<RouteClass>(cls), v);
        break;
      }
      case 1: {
        Route r = make(rnd() % 64);
        want[cls][key_text(r)] = r;
        dp.upsert_route(static_cast<RouteClass>(cls), r);
        break;
      }
      default: {
        Route r = make(rnd() % 64);
        want[cls].erase(key_text(r));
        dp.remove_route(static_cast<RouteClass>(cls), r);
      }
    }
    if (rnd() % 3 == 0) continue;  // apply only sometimes: edits accumulate
    REQUIRE(dp.apply().ok());
    std::map<std::string, std::string> expect;  // the lower class wins
    for (int c = kRouteClassCount - 1; c >= 0; --c)
      for (const auto& [k, r] : want[c]) expect[k] = "proto 44 " + r.str();
    std::vector<std::string> got = dp.kernel_dump(), exp;
    for (const auto& [k, line] : expect) exp.push_back(line);
    std::sort(got.begin(), got.end());
    std::sort(exp.begin(), exp.end());
    REQUIRE(got == exp);
    CHECK(dp.status().routes_desired == expect.size());
    CHECK(dp.status().routes_programmed == expect.size());
  }
}

TEST_CASE("RouteDiff keys: inline IPv4, IPv6 and other table/metric keys, several classes at one key") {
  RouteDiff t;
  auto all_writable = [](const RouteAttrs&) { return true; };
  Route v4 = direct_route(pfx("10.9.0.0/24"), ip("198.18.0.2"), "eth0");
  Route v4_table = v4;
  v4_table.table = 100;
  Route v4_metric = v4;
  v4_metric.metric = 20;
  Route v6 = direct_route(pfx("fd10::/64"), ip("fd00::2"), "eth0");
  // Same address, other length: a different key.
  Route v4_other_len = direct_route(pfx("10.9.0.0/25"), ip("198.18.0.2"), "eth0");
  t.set_class(RouteClass::Static, {v4, v4_table, v4_metric, v6, v4_other_len});
  CHECK(t.entry_count() == 5);
  auto plan = t.plan(all_writable);
  CHECK(plan.upserts.size() == 5);
  for (const auto& r : plan.upserts) t.ack_upsert(r);
  Route v6n = v6;
  normalize(v6n);
  for (const Route* r : {&v4, &v4_table, &v4_metric, &v6n, &v4_other_len}) {
    auto d = t.desired(key_of(*r));
    REQUIRE(d);
    CHECK(*d == *r);
    CHECK(t.observed_protocol(key_of(*r)) == kTabbyRouteProtocol);
  }
  // A second and third class want the table-100 key and the inline key: the lowest wins,
  // and dropping it gives the key back to the next one.
  Route bh = block_blackhole(pfx("10.9.0.0/24"));
  Route wl = v4;
  wl.nexthops = {NextHop{std::nullopt, "cali1", false, 1}};
  t.upsert(RouteClass::LocalBlock, bh);
  t.upsert(RouteClass::LocalWorkload, wl);
  CHECK(t.class_count(RouteClass::LocalBlock) == 1);
  CHECK(*t.desired(key_of(v4)) == wl);
  t.remove(RouteClass::LocalWorkload, key_of(wl));
  CHECK(*t.desired(key_of(v4)) == bh);
  t.remove(RouteClass::LocalBlock, key_of(bh));
  CHECK(*t.desired(key_of(v4)) == v4);
  CHECK(t.desired_count() == 5);
  // The class set shrinks to the wide keys only: the inline ones are planned for deletion.
  t.set_complete();
  t.set_class(RouteClass::Static, {v4_table, v6});
  plan = t.plan(all_writable);
  CHECK(plan.upserts.empty());
  std::vector<std::string> dels;
  for (const auto& r : plan.deletes) dels.push_back(r.str());
  std::sort(dels.begin(), dels.end());
  CHECK(dels == std::vector<std::string>{"10.9.0.0/24 metric 20 via 198.18.0.2 dev eth0",
                                         "10.9.0.0/24 via 198.18.0.2 dev eth0",
                                         "10.9.0.0/25 via 198.18.0.2 dev eth0"});
  for (const auto& r : plan.deletes) t.ack_delete(key_of(r));
  CHECK(t.entry_count() == 2);
  CHECK(t.desired(key_of(v4_table)));
  CHECK(t.desired(key_of(v6n)));
  CHECK(!t.desired(key_of(v4)));
  // Wide key slots are reused: adding and removing many leaves the lookups right.
  for (int round = 0; round < 3; ++round) {
    std::vector<Route> v;
    for (uint32_t i = 0; i < 300; ++i) {
      Route r = direct_route(Prefix(IpAddress::v4(0x0B000000u + i * 256), 24), ip("198.18.0.2"), "eth0");
      r.metric = round + 1;
      v.push_back(r);
    }
    t.set_class(RouteClass::RemoteBlock, v);
    CHECK(t.entry_count() == 302);
    for (const auto& r : v) CHECK(t.desired(key_of(r)));
    t.set_class(RouteClass::RemoteBlock, {});
    CHECK(t.entry_count() == 2);
  }
  CHECK(t.desired(key_of(v4_table)));
  CHECK(t.desired(key_of(v6n)));
}

TEST_CASE("restart: a gateway route adopted before anything is desired is not rewritten when it is desired again") {
  // The agent's start: the kernel dump comes first (the kernel names the device it
  // resolved), BGP relearns the route (no device) afterwards: same route, no write.
  RouteDiff s;
  s.observed_reset_begin();
  KernelRoute a{direct_route(pfx("10.2.0.0/24"), ip("198.18.1.1"), "eth0"), kTabbyRouteProtocol};
  KernelRoute b{ecmp_route(pfx("10.2.1.0/24"), {NextHop{ip("198.18.1.1"), "eth0", false, 1},
                                                NextHop{ip("198.18.1.2"), "eth0", false, 1}}),
                kTabbyRouteProtocol};
  KernelRoute c{direct_route(pfx("10.2.2.0/24"), ip("198.18.1.1"), "eth0"), kTabbyRouteProtocol};
  s.observed_reset_add(a);
  s.observed_reset_add(b);
  s.observed_reset_add(c);
  s.observed_reset_end();
  CHECK(s.plan(all_writable).upserts.empty());
  s.upsert(RouteClass::Static, direct_route(pfx("10.2.0.0/24"), ip("198.18.1.1")));
  s.upsert(RouteClass::Static, ecmp_route(pfx("10.2.1.0/24"), {NextHop{ip("198.18.1.2"), "", false, 1},
                                                                NextHop{ip("198.18.1.1"), "", false, 1}}));
  s.upsert(RouteClass::Static, direct_route(pfx("10.2.2.0/24"), ip("198.18.1.9")));  // a real change
  s.set_complete();
  auto p = s.plan(all_writable);
  REQUIRE(p.upserts.size() == 1);
  CHECK(p.upserts[0].str() == "10.2.2.0/24 via 198.18.1.9");
  CHECK(p.deletes.empty());
  // The adopted routes now read as the desired ones: a later reload changes nothing.
  ack_all(s, p);
  s.observed_reset_begin();
  c.route = direct_route(pfx("10.2.2.0/24"), ip("198.18.1.9"), "eth0");
  for (KernelRoute* k : {&a, &b, &c}) s.observed_reset_add(*k);
  s.observed_reset_end();
  p = s.plan(all_writable);
  CHECK(p.upserts.empty());
  CHECK(p.deletes.empty());
}
