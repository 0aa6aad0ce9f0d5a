// ipam_borrow_test.cpp — IPAM borrowing (IPAMConfiguration strictAffinity false,
// Calico's default): which address a node borrows from another node's block and
// when it may not, what a release and the collector do with a borrowed allocation,
// and the routes and announcements of a borrowed address on the borrowing node,
// the block's node and a third node (pure: Calc only).
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

namespace {

std::string node_doc(const std::string& name, const std::string& addr, const std::string& labels = "") {
  return "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: " + name +
         (labels.empty() ? "" : "\n  labels: {" + labels + "}") + "\nspec:\n  bgp:\n    ipv4Address: " + addr +
         "\n---\n";
}
std::string pool_doc(const std::string& cidr, const std::string& extra = "") {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-a}\nspec:\n  cidr: " + cidr +
         "\n  blockSize: 30\n" + extra + "---\n";
}
std::string wep_doc(const std::string& name, const std::string& node, const std::string& ip, const std::string& iface) {
  return "apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: " + name +
         ", namespace: default}\nspec: {node: " + node + ", interfaceName: " + iface + ", ips: [" + ip + "]}\n---\n";
}

using Agent = test::FedCalc;


// Two nodes, a /29 pool of two /30 blocks (three pod addresses each: the first is
// the tunnel address): node-1's block has one free address, node-2's is full.
const std::string kNodes = node_doc("node-1", "198.18.0.11/24") + node_doc("node-2", "198.18.0.12/24") +
                           node_doc("node-3", "198.18.0.13/24");
const std::string kFull = pool_doc("198.19.0.0/29") +
                          block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1, default/b: 198.19.0.2") +
                          block_doc("198.19.0.4/30", "node-2",
                                    "default/c: 198.19.0.5, default/d: 198.19.0.6, default/e: 198.19.0.7");

}  // namespace

TEST_CASE("IPAM borrowing: strictAffinity false borrows a free address of another node's block") {
  Agent n("node-2");
  n.feed("c.yaml", kNodes + kFull);  // no IPAMConfiguration: Calico's default, strictAffinity false
  REQUIRE(n.errors.empty());
  auto p = n.calc.plan_ip("node-2", "default/x", IpFamily::V4);
  REQUIRE(p);
  CHECK_FALSE(p->claim_block);
  CHECK(p->block.str() == "198.19.0.0/30");
  CHECK(p->ip.str() == "198.19.0.3");
  CHECK(p->borrowed_from == "node-1");
  CHECK(p->affinity.key.name == block_affinity_name(*Prefix::parse("198.19.0.0/30")));
  const auto& a = std::get<BlockAffinity>(p->affinity.body);
  CHECK(a.node == "node-1");  // the block stays node-1's
  CHECK(a.allocations.size() == 3);
  CHECK(a.allocations.at("default/x").str() == "198.19.0.3");
  CHECK(a.borrowed == std::map<std::string, std::string>{{"default/x", "node-2"}});

  // An address an endpoint holds without an allocation record is not handed out.
  n.feed("w.yaml", wep_doc("y", "node-1", "198.19.0.3", "caliy"));
  p = n.calc.plan_ip("node-2", "default/x", IpFamily::V4);
  REQUIRE_FALSE(p);
  CHECK(p.error().message ==
        "IPAM: no free block for node node-2 in any enabled IPv4 pool whose nodeSelector matches it and whose "
        "allowedUses include Workload, and no other node's block in such a pool has a free address to borrow");
  n.drop("w.yaml");

  // strictAffinity true: never (the error says why).
  n.feed("i.yaml", ipam_doc("{strictAffinity: true}"));
  p = n.calc.plan_ip("node-2", "default/x", IpFamily::V4);
  REQUIRE_FALSE(p);
  CHECK(p.error().message ==
        "IPAM: no free block for node node-2 in any enabled IPv4 pool whose nodeSelector matches it and whose "
        "allowedUses include Workload; IPAMConfiguration default: spec.strictAffinity is true, so no address is "
        "borrowed from another node's block");
  CHECK(n.calc.plan_borrow("node-2", "default/x", IpFamily::V4));  // the step alone would find one

  // maxBlocksPerHost reached: Calico fails the request, no borrowing.
  n.feed("i.yaml", ipam_doc("{strictAffinity: false, maxBlocksPerHost: 1}"));
  p = n.calc.plan_ip("node-2", "default/x", IpFamily::V4);
  REQUIRE_FALSE(p);
  CHECK(p.error().message.find("spec.maxBlocksPerHost is 1 (no address is borrowed") != std::string::npos);

  // autoAllocateBlocks false: no claim, so a node that is not strict borrows (even
  // with free blocks in the pool, as Calico).
  Agent m("node-3");
  m.feed("c.yaml", kNodes + pool_doc("198.19.0.0/24") + block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1") +
                       ipam_doc("{strictAffinity: false, autoAllocateBlocks: false}"));
  REQUIRE(m.errors.empty());
  p = m.calc.plan_ip("node-3", "default/z", IpFamily::V4);
  REQUIRE(p);
  CHECK(p->ip.str() == "198.19.0.2");
  CHECK(p->borrowed_from == "node-1");
  // ... and the same with strictAffinity true is refused naming both settings.
  m.feed("c.yaml", kNodes + pool_doc("198.19.0.0/24") + block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1") +
                       ipam_doc("{strictAffinity: true, autoAllocateBlocks: false}"));
  p = m.calc.plan_ip("node-3", "default/z", IpFamily::V4);
  REQUIRE_FALSE(p);
  CHECK(p.error().message.find("spec.autoAllocateBlocks is false") != std::string::npos);
  CHECK(p.error().message.find("spec.strictAffinity is true") != std::string::npos);
}

TEST_CASE("IPAM borrowing: only from blocks of enabled pools that serve pods and select the node") {
  Agent n("node-2");
  n.feed("c.yaml", kNodes + kFull);
  REQUIRE(n.calc.plan_ip("node-2", "default/x", IpFamily::V4));
  // nodeSelector no longer matches node-2: its blocks are not node-2's to borrow from.
  n.feed("c.yaml", kNodes + pool_doc("198.19.0.0/29", "  nodeSelector: kubernetes.io/hostname == 'node-1'\n") +
                       block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1, default/b: 198.19.0.2"));
  CHECK_FALSE(n.calc.plan_ip("node-2", "default/x", IpFamily::V4));
  // Disabled: nobody gets new addresses from it.
  n.feed("c.yaml", kNodes + pool_doc("198.19.0.0/29", "  disabled: true\n") +
                       block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1, default/b: 198.19.0.2"));
  CHECK_FALSE(n.calc.plan_ip("node-2", "default/x", IpFamily::V4));
  // Tunnel addresses only (allowedUses): no pod addresses, borrowed or not.
  n.feed("c.yaml", kNodes + pool_doc("198.19.0.0/29", "  allowedUses: [Tunnel]\n") +
                       block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1, default/b: 198.19.0.2"));
  CHECK_FALSE(n.calc.plan_ip("node-2", "default/x", IpFamily::V4));
  // No IPv6 block anywhere: no IPv6 address to borrow.
  n.feed("c.yaml", kNodes + kFull);
  CHECK_FALSE(n.calc.plan_ip("node-2", "default/x", IpFamily::V6));
}

TEST_CASE("IPAM borrowing: the record, release, tabby ipam, the collector") {
  Agent n("node-1");
  const std::string lent = block_doc("198.19.0.0/30", "node-1",
                                     "default/a: 198.19.0.1, default/b: 198.19.0.2, default/x: 198.19.0.3",
                                     "default/x: node-2");
  n.feed("c.yaml", kNodes + pool_doc("198.19.0.0/29") + lent + wep_doc("x", "node-2", "198.19.0.3", "calix") +
                       wep_doc("a", "node-1", "198.19.0.1", "calia") + wep_doc("b", "node-1", "198.19.0.2", "calib"));
  REQUIRE(n.errors.empty());
  // tabby ipam: the block's address held by node-2.
  auto blocks = n.calc.ipam_blocks("node-1");
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].lent == std::map<IpAddress, std::string>{{*IpAddress::parse("198.19.0.3"), "node-2"}});
  // The borrower's own blocks are full; node-1's are too now: nothing more to borrow.
  CHECK_FALSE(n.calc.plan_borrow("node-2", "default/q", IpFamily::V4));
  // CNI DEL on node-2: the allocation and its borrowed record go; the block stays node-1's.
  auto rel = n.calc.plan_release("default/x");
  REQUIRE(rel.size() == 1);
  const auto& after = std::get<BlockAffinity>(rel[0].body);
  CHECK(after.node == "node-1");
  CHECK(after.allocations.count("default/x") == 0);
  CHECK(after.borrowed.empty());
  auto one = n.calc.plan_release_ip(*IpAddress::parse("198.19.0.3"));
  REQUIRE(one);
  CHECK(one->in_use_by == "default/x");  // `tabby ipam release` refuses: the pod holds it
  CHECK(std::get<BlockAffinity>(one->affinity.body).borrowed.empty());

  // The collector: the borrower's endpoint is alive, so nothing is garbage, even
  // though the block's node is not the pod's node.
  IpamGcMemory mem;
  auto gc = n.calc.plan_ipam_gc(mem, 0, 0);
  CHECK(gc.released.empty());
  // node-1 (the block's node) gone: its block stays while node-2's pod holds an address of it.
  n.feed("c.yaml", node_doc("node-2", "198.18.0.12/24") + pool_doc("198.19.0.0/29") + lent +
                       wep_doc("x", "node-2", "198.19.0.3", "calix"));
  gc = n.calc.plan_ipam_gc(mem, 0, 0);
  CHECK(gc.affinity_removals.empty());
  CHECK(std::find_if(gc.released.begin(), gc.released.end(), [](const std::string& s) {
          return s.find("198.19.0.3") != std::string::npos;
        }) == gc.released.end());
  // The borrower's pod gone without a DEL: its allocation is a leak like any other,
  // and the rewrite drops its borrowed record too.
  n.feed("c.yaml", kNodes + pool_doc("198.19.0.0/29") + lent + wep_doc("a", "node-1", "198.19.0.1", "calia") +
                       wep_doc("b", "node-1", "198.19.0.2", "calib"));
  gc = n.calc.plan_ipam_gc(mem, 0, 0);
  REQUIRE(gc.affinity_updates.size() == 1);
  REQUIRE(gc.affinity_originals.size() == 1);  // the version the rewrite is compared against
  CHECK(std::get<BlockAffinity>(gc.affinity_originals[0].body).borrowed.count("default/x") == 1);
  const auto& gcd = std::get<BlockAffinity>(gc.affinity_updates[0].body);
  CHECK(gcd.allocations.count("default/x") == 0);
  CHECK(gcd.borrowed.empty());

  // Parsing: spec.borrowed names allocations only.
  auto parsed = parse_manifests(block_doc("198.19.0.0/30", "node-1", "default/a: 198.19.0.1", "default/z: node-2"),
                                "b.yaml");
  REQUIRE(parsed.errors.size() == 1);
  CHECK(parsed.errors[0].message.find("spec.borrowed.default/z: has no allocation in spec.allocations") !=
        std::string::npos);
}

TEST_CASE("IPAM borrowing: routes and announcements of a borrowed address") {
  // node-2's pod x holds 198.19.0.3 of node-1's block.
  const std::string base = kNodes + pool_doc("198.19.0.0/29") +
                           block_doc("198.19.0.0/30", "node-1", "default/x: 198.19.0.3", "default/x: node-2");
  const std::string pod = wep_doc("x", "node-2", "198.19.0.3", "calix");

  // The block's node: its blackhole stays, and the /32 to node-2 is more specific.
  Agent n1("node-1");
  n1.feed("c.yaml", base);
  n1.feed("p.yaml", pod);
  CHECK(has(n1.routes(RouteClass::LocalBlock), "blackhole 198.19.0.0/30"));
  CHECK(has(n1.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));
  CHECK(n1.announces("198.19.0.0/30"));
  CHECK_FALSE(n1.announces("198.19.0.3/32"));

  // The borrower: the pod's own /32 to its interface, and it announces the /32.
  Agent n2("node-2");
  n2.feed("c.yaml", base);
  n2.feed("p.yaml", pod);
  CHECK(has(n2.routes(RouteClass::LocalWorkload), "198.19.0.3/32 dev calix"));
  CHECK(has(n2.routes(RouteClass::RemoteBlock), "198.19.0.0/30 via 198.18.0.11"));
  CHECK_FALSE(has(n2.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));
  CHECK(n2.announces("198.19.0.3/32"));
  CHECK_FALSE(n2.announces("198.19.0.0/30"));

  // A third node: the block to node-1, the borrowed address to node-2.
  Agent n3("node-3");
  n3.feed("c.yaml", base);
  auto ch = n3.feed("p.yaml", pod);
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "198.19.0.0/30 via 198.18.0.11"));
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));
  bool added = false;
  for (const auto& op : ch.routes) added |= !op.remove && op.route.str() == "198.19.0.3/32 via 198.18.0.12";
  CHECK(added);

  // The pod deleted: the /32 goes everywhere, and node-2 stops announcing it.
  ch = n3.drop("p.yaml");
  CHECK_FALSE(has(n3.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "198.19.0.0/30 via 198.18.0.11"));
  n2.drop("p.yaml");
  CHECK_FALSE(n2.announces("198.19.0.3/32"));
  n1.drop("p.yaml");
  CHECK_FALSE(has(n1.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));

  // The endpoint before the block (a listing in any order): the /32 follows the block.
  Agent n4("node-3");
  n4.feed("p.yaml", pod);
  n4.feed("c.yaml", base);
  CHECK(has(n4.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));
  // The block released (node-1's BlockAffinity gone): no longer borrowed, no /32.
  n4.feed("c.yaml", kNodes + pool_doc("198.19.0.0/29"));
  CHECK_FALSE(has(n4.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));
  // The borrower's address moves (its Node changed): the /32 follows.
  n4.feed("c.yaml", base);
  n4.feed("n.yaml", "");
  n4.feed("c.yaml", node_doc("node-1", "198.18.0.11/24") + node_doc("node-2", "198.18.0.22/24") +
                        node_doc("node-3", "198.18.0.13/24") + pool_doc("198.19.0.0/29") +
                        block_doc("198.19.0.0/30", "node-1", "default/x: 198.19.0.3", "default/x: node-2"));
  CHECK(has(n4.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.22"));
  CHECK_FALSE(has(n4.routes(RouteClass::RemoteBlock), "198.19.0.3/32 via 198.18.0.12"));
}

TEST_CASE("IPAM borrowing: VXLAN pools route a borrowed address to the borrower's VTEP") {
  // node-2 has its own block (its VTEP 198.19.0.4) and a pod in node-1's block.
  const std::string base = kNodes + pool_doc("198.19.0.0/28", "  vxlanMode: Always\n") +
                           block_doc("198.19.0.0/30", "node-1", "default/x: 198.19.0.2", "default/x: node-2") +
                           block_doc("198.19.0.4/30", "node-2") + wep_doc("x", "node-2", "198.19.0.2", "calix");
  Agent n3("node-3");
  n3.feed("c.yaml", base);
  REQUIRE(n3.errors.empty());
  auto remote = n3.routes(RouteClass::RemoteBlock);
  CAPTURE(remote);
  CHECK(has(remote, "198.19.0.0/30 via 198.19.0.0 dev vxlan.tabby onlink"));
  CHECK(has(remote, "198.19.0.2/32 via 198.19.0.4 dev vxlan.tabby onlink"));
  Agent n1("node-1");
  n1.feed("c.yaml", base);
  CHECK(has(n1.routes(RouteClass::RemoteBlock), "198.19.0.2/32 via 198.19.0.4 dev vxlan.tabby onlink"));
  // The pool switched to direct routing: the /32 follows without the tunnel.
  n3.feed("c.yaml", kNodes + pool_doc("198.19.0.0/28") +
                        block_doc("198.19.0.0/30", "node-1", "default/x: 198.19.0.2", "default/x: node-2") +
                        block_doc("198.19.0.4/30", "node-2") + wep_doc("x", "node-2", "198.19.0.2", "calix"));
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "198.19.0.2/32 via 198.18.0.12"));
}

TEST_CASE("IPAM borrowing: IPv6 as IPv4 (a /128 borrowed, routed to the borrower and announced by it)") {
  auto node6 = [](const std::string& name, const std::string& v4, const std::string& v6) {
    return "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: " + name +
           "\nspec:\n  bgp:\n    ipv4Address: " + v4 + "\n    ipv6Address: " + v6 + "\n---\n";
  };
  const std::string nodes = node6("node-1", "198.18.0.11/24", "fd00:18::11/64") +
                            node6("node-2", "198.18.0.12/24", "fd00:18::12/64") +
                            node6("node-3", "198.18.0.13/24", "fd00:18::13/64");
  // A /125 pool of two /126 blocks: node-1's has a free address, node-2's is full.
  const std::string pool6 =
      "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-6}\nspec:\n  cidr: 2001:db8:19::/125\n"
      "  blockSize: 126\n---\n";
  const std::string full = nodes + pool6 +
                           block_doc("2001:db8:19::/126", "node-1", "default/a: '2001:db8:19::1', default/b: '2001:db8:19::2'") +
                           block_doc("2001:db8:19::4/126", "node-2",
                                     "default/c: '2001:db8:19::5', default/d: '2001:db8:19::6', default/e: '2001:db8:19::7'");
  Agent n("node-2");
  n.feed("c.yaml", full);
  REQUIRE(n.errors.empty());
  auto p = n.calc.plan_ip("node-2", "default/x", IpFamily::V6);
  REQUIRE_MESSAGE(p, (p ? "" : p.error().message));
  CHECK_FALSE(p->claim_block);
  CHECK(p->block.str() == "2001:db8:19::/126");
  CHECK(p->ip.str() == "2001:db8:19::3");
  CHECK(p->borrowed_from == "node-1");
  CHECK(std::get<BlockAffinity>(p->affinity.body).borrowed == std::map<std::string, std::string>{{"default/x", "node-2"}});
  // strictAffinity true: not for IPv6 either.
  n.feed("i.yaml", ipam_doc("{strictAffinity: true}"));
  CHECK_FALSE(n.calc.plan_ip("node-2", "default/x", IpFamily::V6));

  // Recorded and held by node-2's pod: node-1 and node-3 route the /128 to node-2, node-2 announces it.
  const std::string lent = nodes + pool6 +
                           block_doc("2001:db8:19::/126", "node-1", "default/x: '2001:db8:19::3'", "default/x: node-2");
  const std::string pod = wep_doc("x", "node-2", "'2001:db8:19::3'", "calix");
  Agent n1("node-1"), n2("node-2"), n3("node-3");
  for (Agent* a : {&n1, &n2, &n3}) {
    a->feed("c.yaml", lent);
    a->feed("p.yaml", pod);
    REQUIRE(a->errors.empty());
  }
  CAPTURE(n1.routes(RouteClass::RemoteBlock));
  CHECK(has(n1.routes(RouteClass::RemoteBlock), "2001:db8:19::3/128 via fd00:18::12"));
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "2001:db8:19::3/128 via fd00:18::12"));
  CHECK(has(n3.routes(RouteClass::RemoteBlock), "2001:db8:19::/126 via fd00:18::11"));
  CHECK(n2.announces("2001:db8:19::3/128"));
  CHECK_FALSE(n1.announces("2001:db8:19::3/128"));
  CHECK(n1.announces("2001:db8:19::/126"));
  // The pod gone: the /128 goes.
  n3.drop("p.yaml");
  CHECK_FALSE(has(n3.routes(RouteClass::RemoteBlock), "2001:db8:19::3/128 via fd00:18::12"));
}
