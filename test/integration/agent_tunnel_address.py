#!/usr/bin/env python3
"""agent_tunnel_address.py — a node's tunnel (VTEP) address comes when the node
starts, not with its first pod: with a VXLAN pool each agent claims an IPAM block
(a BlockAffinity, create-if-absent) as soon as it is in sync and has its Node, so
a node without pods is reachable over VXLAN.

Topology (namespaces this test creates): node1 and node2 on one bridge, the file
datastore, one IPPool 198.19.0.0/16 with vxlanMode: Always; no pods at first.

Checks:
1. Without any pod, each node claims one block (its BlockAffinity is in the
   datastore) and its vxlan.tabby device carries the block's first address.
2. node1 (no pods) pings node2's VTEP address, and node2 node1's, over VXLAN.
3. A pod on node2 gets an address of the node's claimed block, never the VTEP
   address; a pod on node1 reaches it and node2's VTEP address.
4. node2's agent restarted: it claims nothing new (still one block) and its VTEP
   address stays.

Run against today's main (TABBY_BIN=<old build>) check 1 fails: a node without
pods claims no block and its vxlan.tabby has no address."""
import ipaddress
import json
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402

POOL = "198.19.0.0/16"


def vtep(node):
    out = json.loads(node.run(["ip", "-j", "-4", "addr", "show", "dev", "vxlan.tabby"], check_rc=False).stdout or "[]")
    addrs = [a["local"] for i in out for a in i.get("addr_info", [])]
    return addrs[0] if addrs else None


def ping(node, ip):
    return node.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", ip], check_rc=False).returncode == 0


def body(lab):
    c = Cluster(lab)
    c.pool("default-ipv4-ippool", POOL, vxlan="Always")
    c.add_node("node1", 1)
    c.add_node("node2", 2)
    c.wait_ready(60)
    n1, n2 = c.nodes["node1"], c.nodes["node2"]

    step("1. each node claims a block and has its VTEP address before any pod")
    for name, n in (("node1", n1), ("node2", n2)):
        wait_until(lambda name=name: len(c.blocks_of(name)) == 1, 20, f"{name} claims one block without pods")
        block = ipaddress.ip_network(c.blocks_of(name)[0])
        check(block.subnet_of(ipaddress.ip_network(POOL)), f"{name}'s block {block} is not in the pool")
        wait_until(lambda n=n, block=block: vtep(n) == str(block.network_address), 20,
                   f"{name}'s vxlan.tabby carries {block.network_address} (has {vtep(n)})")
        step(f"  {name}: block {block}, VTEP {vtep(n)}")
    v1, v2 = vtep(n1), vtep(n2)

    step("2. nodes without pods reach each other's VTEP over VXLAN")
    wait_until(lambda: ping(n1, v2), 20, f"node1 pings node2's VTEP {v2}")
    wait_until(lambda: ping(n2, v1), 20, f"node2 pings node1's VTEP {v1}")
    routes = n1.run(["ip", "route", "show", "proto", "44"]).stdout
    check(f"via {v2} dev vxlan.tabby" in routes, f"node1 routes node2's block via its VTEP:\n{routes}")

    step("3. pods take addresses of the claimed block, never the VTEP address")
    p2 = c.add_pod("node2", "default", "pod2")
    block2 = ipaddress.ip_network(c.blocks_of("node2")[0])
    check(ipaddress.ip_address(p2.ip) in block2 and p2.ip != v2, f"pod2 got {p2.ip} (block {block2}, VTEP {v2})")
    check(len(c.blocks_of("node2")) == 1, f"node2's blocks after its first pod: {c.blocks_of('node2')}")
    p1 = c.add_pod("node1", "default", "pod1")
    c.ping_all()
    wait_until(lambda: c.ping(p1, v2, count=1), 10, f"pod1 pings node2's VTEP {v2}")

    step("4. node2's agent restarted: no new claim, same VTEP")
    a2 = c.agents["node2"]
    a2.stop()
    a2.start()
    a2.wait_ready(60)
    wait_until(lambda: vtep(n2) == v2, 20, "node2's VTEP after the restart")
    check(c.blocks_of("node2") == [str(block2)], f"node2's blocks after a restart: {c.blocks_of('node2')}")
    c.ping_all()


run_test("agent_tunnel_address", body)
