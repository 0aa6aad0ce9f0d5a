// tunnel_borrow_test.cpp — tunnel (VTEP / IPIP) addresses borrowed through IPAM when
// no block is left to claim (IPAMConfiguration strictAffinity false, Calico's
// calico-node behaviour): the borrow step, the tunnel address every node then sees
// (VTEP, FDB/ARP peers, the /32 route), the refusals (strictAffinity,
// maxBlocksPerHost, nothing free) as problems, the release when no longer used,
// and what `tabby ipam check` and the collector make of such an allocation (pure:
// Calc only).
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "felix/calc/calc.hpp"
#include "felix/calc/doc_feed.hpp"
#include "test/unit/felix/calc/calc_feed.hpp"

using namespace tabby;
using namespace tabby::felix;
using namespace tabby::felix::test;
using dataplane::RouteClass;
using Action = TunnelAddressStep::Action;

namespace {

std::string node_doc(const std::string& name, const std::string& addr, const std::string& extra = "") {
  return "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: " + name +
         "\nspec:\n  bgp:\n    ipv4Address: " + addr + "\n" + extra + "---\n";
}
std::string pool_doc(const std::string& name, const std::string& cidr, const std::string& extra = "") {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: " + name + "}\nspec:\n  cidr: " + cidr +
         "\n  blockSize: 30\n" + extra + "---\n";
}

using Agent = test::FedCalc;

bool any_contains(const std::vector<std::string>& v, const std::string& s) {
  return std::any_of(v.begin(), v.end(), [&](const std::string& x) { return x.find(s) != std::string::npos; });
}
IpAddress ip(const char* s) { return *IpAddress::parse(s); }

const std::string kNodes = node_doc("node-1", "198.18.0.11/24") + node_doc("node-2", "198.18.0.12/24") +
                           node_doc("node-3", "198.18.0.13/24");
// A VXLAN pool of two /30 blocks, both claimed: node-1's has two free addresses
// (.2, .3; .0 is its VTEP), node-3's none. node-2 has no block and none is left.
const std::string kPool = pool_doc("pool-a", "198.19.0.0/29", "  vxlanMode: Always\n");
const std::string kBlocks = block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1") +
                            block_doc("198.19.0.4/30", "node-3",
                                      "default/c: 198.19.0.5, default/d: 198.19.0.6, default/e: 198.19.0.7");
// The same after node-2's agent borrowed 198.19.0.2 as its VTEP address.
const std::string kLent = block_doc("198.19.0.0/30", "node-1",
                                    "default/a: 198.19.0.1, vxlan-tunnel-addr-node-2: 198.19.0.2",
                                    "vxlan-tunnel-addr-node-2: node-2") +
                          block_doc("198.19.0.4/30", "node-3",
                                    "default/c: 198.19.0.5, default/d: 198.19.0.6, default/e: 198.19.0.7");

}  // namespace

TEST_CASE("tunnel address handles: Calico's names") {
  CHECK(tunnel_handle("node-2", true) == "vxlan-tunnel-addr-node-2");
  CHECK(tunnel_handle("node-2", false) == "ipip-tunnel-addr-node-2");
  auto t = parse_tunnel_handle("vxlan-tunnel-addr-node-2");
  REQUIRE(t);
  CHECK(t->node == "node-2");
  CHECK(t->vxlan);
  t = parse_tunnel_handle("ipip-tunnel-addr-a.b");
  REQUIRE(t);
  CHECK(t->node == "a.b");
  CHECK_FALSE(t->vxlan);
  CHECK_FALSE(parse_tunnel_handle("default/vxlan-tunnel-addr-x"));
  CHECK_FALSE(parse_tunnel_handle("vxlan-tunnel-addr-"));
}

TEST_CASE("tunnel address borrowing: no block left, strictAffinity false: the step borrows from another node's block") {
  Agent n("node-2");
  n.feed("c.yaml", kNodes + kPool + kBlocks);
  REQUIRE(n.errors.empty());
  CHECK_FALSE(n.calc.tunnel_block_to_claim());
  CHECK_FALSE(n.calc.tunnel_address("node-2", true));
  CHECK_FALSE(n.calc.tunnel_config().vxlan.tunnel_address);  // today: no VTEP at all
  auto s = n.calc.tunnel_address_step();
  REQUIRE(s.action == Action::Borrow);
  CHECK(s.vxlan);
  CHECK(s.handle == "vxlan-tunnel-addr-node-2");
  CHECK(s.ip.str() == "198.19.0.2");  // the lowest free address (the first is node-1's VTEP)
  CHECK(s.block.str() == "198.19.0.0/30");
  CHECK(s.block_node == "node-1");
  CHECK(s.affinity.key.name == block_affinity_name(*Prefix::parse("198.19.0.0/30")));
  const auto& a = std::get<BlockAffinity>(s.affinity.body);
  CHECK(a.node == "node-1");
  CHECK(a.allocations.at("vxlan-tunnel-addr-node-2").str() == "198.19.0.2");
  CHECK(a.allocations.at("default/a").str() == "198.19.0.1");
  CHECK(a.borrowed == std::map<std::string, std::string>{{"vxlan-tunnel-addr-node-2", "node-2"}});
  // The version compared: the block as the calculation holds it.
  const auto& was = std::get<BlockAffinity>(s.original.body);
  CHECK(was.allocations.size() == 1);
  CHECK(was.borrowed.empty());
  CHECK(n.calc.tunnel_address_problems().empty());

  // A free block in a pool that serves tunnels: the node claims it instead.
  n.feed("p2.yaml", pool_doc("pool-b", "198.19.1.0/30", "  vxlanMode: Always\n"));
  CHECK(n.calc.tunnel_block_to_claim());
  CHECK(n.calc.tunnel_address_step().action == Action::None);
  n.feed("p2.yaml", "");

  // Another node's view changes nothing: only this node's agent borrows for it.
  Agent n1("node-1");
  n1.feed("c.yaml", kNodes + kPool + kBlocks);
  CHECK(n1.calc.tunnel_address_step().action == Action::None);

  // An explicit address on the Node: nothing to borrow.
  Agent e("node-2");
  e.feed("c.yaml", node_doc("node-1", "198.18.0.11/24") +
                       node_doc("node-2", "198.18.0.12/24", "  ipv4VXLANTunnelAddr: 198.19.9.9\n") + kPool + kBlocks);
  CHECK(e.calc.tunnel_address_step().action == Action::None);
  CHECK(e.calc.tunnel_address_problems().empty());
  // No pool uses a tunnel: nothing to borrow.
  Agent d("node-2");
  d.feed("c.yaml", kNodes + pool_doc("pool-a", "198.19.0.0/29") + kBlocks);
  CHECK(d.calc.tunnel_address_step().action == Action::None);
  CHECK(d.calc.tunnel_address_problems().empty());
}

TEST_CASE("tunnel address borrowing: refusals are problems, not silence") {
  Agent n("node-2");
  // strictAffinity true: nothing borrowed, and the problem names the setting.
  n.feed("c.yaml", kNodes + kPool + kBlocks + ipam_doc("{strictAffinity: true}"));
  CHECK(n.calc.tunnel_address_step().action == Action::None);
  auto probs = n.calc.tunnel_address_problems();
  REQUIRE(probs.size() == 1);
  CHECK(probs[0] ==
        "IPAM: node node-2 has no VXLAN tunnel address: no free block to claim in any enabled IPv4 pool whose "
        "nodeSelector matches it and whose allowedUses include Tunnel; IPAMConfiguration default: "
        "spec.strictAffinity is true, so none is borrowed from another node's block");
  CHECK(has(n.problems(), probs[0]));  // in `tabby status`

  // maxBlocksPerHost reached (node-2 holds a block of a pool that serves pods only):
  // Calico borrows nothing then either.
  n.feed("c.yaml", kNodes + kPool + kBlocks +
                       pool_doc("pods", "198.19.2.0/30", "  allowedUses: [Workload]\n") +
                       block_doc("198.19.2.0/30", "node-2") + ipam_doc("{strictAffinity: false, maxBlocksPerHost: 1}"));
  REQUIRE(n.errors.empty());
  CHECK(n.calc.tunnel_address_step().action == Action::None);
  probs = n.calc.tunnel_address_problems();
  REQUIRE(probs.size() == 1);
  CHECK(probs[0].find("spec.maxBlocksPerHost is 1 (no address is borrowed once that limit is reached)") !=
        std::string::npos);

  // autoAllocateBlocks false: no claim, so the node borrows (as Calico), even with free blocks.
  n.feed("c.yaml", kNodes + pool_doc("pool-a", "198.19.0.0/24", "  vxlanMode: Always\n") + kBlocks +
                       ipam_doc("{strictAffinity: false, autoAllocateBlocks: false}"));
  CHECK_FALSE(n.calc.tunnel_block_to_claim());
  auto s = n.calc.tunnel_address_step();
  CHECK(s.action == Action::Borrow);
  CHECK(s.ip.str() == "198.19.0.2");

  // Nothing free anywhere: a problem saying so.
  n.feed("c.yaml", kNodes + kPool + block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1, default/b: 198.19.0.2, default/f: 198.19.0.3") +
                       block_doc("198.19.0.4/30", "node-3", "default/c: 198.19.0.5, default/d: 198.19.0.6, default/e: 198.19.0.7"));
  CHECK(n.calc.tunnel_address_step().action == Action::None);
  probs = n.calc.tunnel_address_problems();
  REQUIRE(probs.size() == 1);
  CHECK(probs[0].find("and no other node's block in an enabled IPv4 pool with vxlanMode set whose allowedUses "
                      "include Tunnel and whose nodeSelector matches it has a free address to borrow") !=
        std::string::npos);

  // A pool that serves pods only: its blocks are not for tunnel addresses.
  n.feed("c.yaml", kNodes + pool_doc("pool-a", "198.19.0.0/29", "  vxlanMode: Always\n  allowedUses: [Workload]\n") +
                       kBlocks);
  CHECK(n.calc.tunnel_address_step().action == Action::None);
  CHECK(n.calc.tunnel_address_problems().size() == 1);
}

TEST_CASE("tunnel address borrowing: every node finds the borrowed VTEP (FDB/ARP peer, /32 route)") {
  // The borrower: its VXLAN device gets the borrowed address, and it has nothing more to do.
  Agent n2("node-2");
  n2.feed("c.yaml", kNodes + kPool + kLent);
  REQUIRE(n2.errors.empty());
  CHECK(n2.calc.tunnel_address("node-2", true) == ip("198.19.0.2"));
  CHECK(n2.calc.tunnel_config().vxlan.tunnel_address == ip("198.19.0.2"));
  CHECK(n2.calc.tunnel_address_step().action == Action::None);
  CHECK(n2.calc.tunnel_address_problems().empty());
  CHECK_FALSE(has(n2.routes(RouteClass::RemoteBlock), "198.19.0.2/32 via 198.19.0.2 dev vxlan.tabby onlink"));
  // (The IPIP address is another handle: not this one.)
  CHECK_FALSE(n2.calc.tunnel_address("node-2", false));

  // The block's node: node-2 is a VTEP peer at the borrowed address, and the /32 of
  // that address (inside its own blackholed block) goes to node-2 over VXLAN.
  Agent n1("node-1");
  n1.feed("c.yaml", kNodes + kPool + kBlocks);
  auto peers = [](const Agent& a) {
    std::vector<std::string> v;
    for (const auto& p : a.calc.tunnel_config().vteps) v.push_back(p.node + "=" + p.tunnel_address.str());
    return v;
  };
  CHECK_FALSE(any_contains(peers(n1), "node-2"));  // before: node-2 had no VTEP
  auto ch = n1.feed("c.yaml", kNodes + kPool + kLent);
  CHECK(ch.tunnels_changed);
  CHECK(has(peers(n1), "node-2=198.19.0.2"));
  CHECK(has(n1.routes(RouteClass::LocalBlock), "blackhole 198.19.0.0/30"));
  CHECK(has(n1.routes(RouteClass::RemoteBlock), "198.19.0.2/32 via 198.19.0.2 dev vxlan.tabby onlink"));
  bool added = false;
  for (const auto& op : ch.routes) added |= !op.remove && op.route.str() == "198.19.0.2/32 via 198.19.0.2 dev vxlan.tabby onlink";
  CHECK(added);
  // `tabby ipam` on any node: the address lent to node-2, by its handle.
  auto blocks = n1.calc.ipam_blocks("node-1");
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].used.at(ip("198.19.0.2")) == "vxlan-tunnel-addr-node-2");
  CHECK(blocks[0].lent == std::map<IpAddress, std::string>{{ip("198.19.0.2"), "node-2"}});
  // Not a leak (its handle names no WorkloadEndpoint, but it is node-2's VTEP);
  // the pods' allocations without endpoints (none in this cluster) are.
  auto leaks = n1.calc.ipam_leaks();
  CHECK(leaks.size() == 4);
  CHECK(std::none_of(leaks.begin(), leaks.end(), [](const IpamLeak& l) { return l.ip.str() == "198.19.0.2"; }));

  // A third node: the same peer and /32.
  Agent n3("node-3");
  n3.feed("c.yaml", kNodes + kPool + kLent);
  CHECK(has(peers(n3), "node-2=198.19.0.2"));
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "198.19.0.2/32 via 198.19.0.2 dev vxlan.tabby onlink"));
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "198.19.0.0/30 via 198.19.0.0 dev vxlan.tabby onlink"));

  // Released (the allocation gone): the peer and the /32 go.
  n1.feed("c.yaml", kNodes + kPool + kBlocks);
  CHECK_FALSE(any_contains(peers(n1), "node-2"));
  CHECK_FALSE(has(n1.routes(RouteClass::RemoteBlock), "198.19.0.2/32 via 198.19.0.2 dev vxlan.tabby onlink"));
}

TEST_CASE("tunnel address borrowing: IPIP and VXLAN each get their own address, as in Calico") {
  const std::string pools = pool_doc("pool-v", "198.19.0.0/30", "  vxlanMode: Always\n") +
                            pool_doc("pool-i", "198.19.1.0/30", "  ipipMode: Always\n");
  const std::string blocks = block_doc("198.19.0.0/30", "node-1") + block_doc("198.19.1.0/30", "node-1");
  Agent n("node-2");
  n.feed("c.yaml", kNodes + pools + blocks);
  REQUIRE(n.errors.empty());
  auto s = n.calc.tunnel_address_step();  // IPIP first, from the IPIP pool's block
  REQUIRE(s.action == Action::Borrow);
  CHECK_FALSE(s.vxlan);
  CHECK(s.handle == "ipip-tunnel-addr-node-2");
  CHECK(s.ip.str() == "198.19.1.1");
  n.feed("c.yaml", kNodes + pools + block_doc("198.19.0.0/30", "node-1") +
                       block_doc("198.19.1.0/30", "node-1", "ipip-tunnel-addr-node-2: 198.19.1.1",
                                 "ipip-tunnel-addr-node-2: node-2"));
  CHECK(n.calc.tunnel_config().ipip.tunnel_address == ip("198.19.1.1"));
  s = n.calc.tunnel_address_step();  // then VXLAN, from the VXLAN pool's block
  REQUIRE(s.action == Action::Borrow);
  CHECK(s.vxlan);
  CHECK(s.ip.str() == "198.19.0.1");
}

TEST_CASE("tunnel address borrowing: released once unused; ipam check and the collector") {
  // node-2 gets a block of its own (a new pool): its VTEP moves there, and the
  // borrowed allocation is released (by its agent, or the collector as a leak).
  Agent n("node-2");
  const std::string own = pool_doc("pool-b", "198.19.1.0/30", "  vxlanMode: Always\n") +
                          block_doc("198.19.1.0/30", "node-2");
  n.feed("c.yaml", kNodes + kPool + kLent + own);
  REQUIRE(n.errors.empty());
  CHECK(n.calc.tunnel_address("node-2", true) == ip("198.19.1.0"));
  auto s = n.calc.tunnel_address_step();
  REQUIRE(s.action == Action::Release);
  CHECK(s.handle == "vxlan-tunnel-addr-node-2");
  CHECK(s.ip.str() == "198.19.0.2");
  CHECK(s.why == "node node-2 has a block of its own (198.19.1.0/30): its VXLAN tunnel address is that block's "
                 "first address");
  const auto& after = std::get<BlockAffinity>(s.affinity.body);
  CHECK(after.allocations.count("vxlan-tunnel-addr-node-2") == 0);
  CHECK(after.borrowed.empty());
  CHECK(after.allocations.count("default/a") == 1);
  auto leaks = n.calc.ipam_leaks();
  REQUIRE(leaks.size() == 5);  // and the pods' allocations: no endpoint in this cluster
  auto tl = std::find_if(leaks.begin(), leaks.end(), [](const IpamLeak& l) { return l.handle == "vxlan-tunnel-addr-node-2"; });
  REQUIRE(tl != leaks.end());
  CHECK(tl->reason == s.why);

  // An explicit address on the Node: the same.
  Agent e("node-2");
  e.feed("c.yaml", node_doc("node-1", "198.18.0.11/24") +
                       node_doc("node-2", "198.18.0.12/24", "  ipv4VXLANTunnelAddr: 198.19.9.9\n") + kPool + kLent);
  s = e.calc.tunnel_address_step();
  REQUIRE(s.action == Action::Release);
  CHECK(s.why == "Node node-2 sets spec.ipv4VXLANTunnelAddr (198.19.9.9)");
  // ... unless it is that very address (a Node that records its allocation, as Calico's do).
  e.feed("c.yaml", node_doc("node-1", "198.18.0.11/24") +
                       node_doc("node-2", "198.18.0.12/24", "  ipv4VXLANTunnelAddr: 198.19.0.2\n") + kPool + kLent);
  CHECK(e.calc.tunnel_address_step().action == Action::None);
  // No pool uses VXLAN any more: released (Calico releases it too).
  e.feed("c.yaml", kNodes + pool_doc("pool-a", "198.19.0.0/29") + kLent);
  s = e.calc.tunnel_address_step();
  REQUIRE(s.action == Action::Release);
  CHECK(s.why == "no enabled IPv4 pool with vxlanMode set selects node node-2 any more");

  // `tabby ipam release` of the VTEP in use: refused (it names the node's tunnel).
  Agent n1("node-1");
  n1.feed("c.yaml", kNodes + kPool + kLent);
  auto r = n1.calc.plan_release_ip(ip("198.19.0.2"));
  REQUIRE(r);
  CHECK(r->in_use_as_tunnel == "node-2's VXLAN tunnel address");
  CHECK(r->in_use_by.empty());

  // The collector: a live node's tunnel allocation is no garbage.
  IpamGcMemory mem;
  auto gc = n1.calc.plan_ipam_gc(mem, 0, 0);
  CHECK_FALSE(any_contains(gc.released, "198.19.0.2"));

  // node-2 gone: its tunnel allocation is a leak, released after the grace period.
  n1.feed("c.yaml", node_doc("node-1", "198.18.0.11/24") + node_doc("node-3", "198.18.0.13/24") + kPool + kLent);
  leaks = n1.calc.ipam_leaks();
  tl = std::find_if(leaks.begin(), leaks.end(), [](const IpamLeak& l) { return l.handle == "vxlan-tunnel-addr-node-2"; });
  REQUIRE(tl != leaks.end());
  CHECK(tl->reason == "node node-2 no longer exists");
  CHECK(tl->node == "node-1");
  r = n1.calc.plan_release_ip(ip("198.19.0.2"));
  REQUIRE(r);
  CHECK(r->in_use_as_tunnel.empty());
  IpamGcMemory mem2;
  gc = n1.calc.plan_ipam_gc(mem2, 0, 1000);
  CHECK(gc.affinity_updates.empty());  // within the grace period
  gc = n1.calc.plan_ipam_gc(mem2, 1000, 1000);
  auto up = std::find_if(gc.affinity_updates.begin(), gc.affinity_updates.end(), [](const Resource& x) {
    return x.key.name == block_affinity_name(*Prefix::parse("198.19.0.0/30"));
  });
  REQUIRE(up != gc.affinity_updates.end());
  const auto& rel = std::get<BlockAffinity>(up->body);
  CHECK(rel.allocations.count("vxlan-tunnel-addr-node-2") == 0);
  CHECK(rel.borrowed.empty());
  CHECK(any_contains(gc.released, "address 198.19.0.2 of vxlan-tunnel-addr-node-2"));
}

TEST_CASE("tunnel address borrowing: a gone node's block stays while another node's VTEP is in it") {
  // node-1 (the block's node) gone; node-2's VTEP is an address of its block.
  Agent n("node-3");
  const std::string lent = block_doc("198.19.0.0/30", "node-1", "vxlan-tunnel-addr-node-2: 198.19.0.2",
                                     "vxlan-tunnel-addr-node-2: node-2");
  n.feed("c.yaml", node_doc("node-2", "198.18.0.12/24") + node_doc("node-3", "198.18.0.13/24") + kPool + lent);
  REQUIRE(n.errors.empty());
  auto orphans = n.calc.orphan_blocks();
  REQUIRE(orphans.size() == 1);
  CHECK(orphans[0].live_tunnels == std::vector<std::string>{"vxlan-tunnel-addr-node-2"});
  CHECK(orphans[0].live_endpoints.empty());
  IpamGcMemory mem;
  auto gc = n.calc.plan_ipam_gc(mem, 0, 0);
  CHECK(gc.affinity_removals.empty());
  CHECK(n.calc.ipam_leaks().empty());
  // Still routed to node-2 (the /32 of its VTEP), the rest of the block nowhere.
  CHECK(has(n.routes(RouteClass::RemoteBlock), "198.19.0.2/32 via 198.19.0.2 dev vxlan.tabby onlink"));
  // node-2 gone too: the block goes.
  n.feed("c.yaml", node_doc("node-3", "198.18.0.13/24") + kPool + lent);
  CHECK(n.calc.orphan_blocks()[0].live_tunnels.empty());
  gc = n.calc.plan_ipam_gc(mem, 0, 0);
  CHECK(gc.affinity_removals.size() == 1);
}
