#!/usr/bin/env python3
"""agent_ipam_uses.py — IPPool allowedUses and IPAMConfiguration, with
real agents and the CNI plugin on the file datastore.

Topology (namespaces this test creates): node1, node2 and node3 on one bridge.
Pools (both vxlanMode: Always): "a-pods" 198.20.0.0/16, /30 blocks (three pod
addresses each), allowedUses [Workload], not on nodes labelled pods=none;
"b-tunnel" 198.19.0.0/24, /26 blocks, allowedUses [Tunnel]. IPAMConfiguration
default: strictAffinity: true, maxBlocksPerHost: 2. Name order alone would take
the tunnel address from a-pods: the uses decide.

Checks:
1. Each node claims a block of b-tunnel when it starts and its vxlan.tabby
   carries that block's first address; no node claims an a-pods block without pods.
2. Pods get addresses of a-pods only (never of the tunnel block, which has 62
   free addresses); pods on node1 and node2 ping each other over VXLAN.
3. strictAffinity with full blocks: node1 fills its /30 (three pods); with
   maxBlocksPerHost 2 (tunnel block + that one) the fourth pod's CNI ADD fails
   with an error naming maxBlocksPerHost and saying nothing is borrowed then; no
   address of node2's block (which has two free) is taken, nothing is recorded
   for the pod and no block is claimed. With maxBlocksPerHost 3 the same ADD
   claims a new a-pods block.
4. node3 (labelled pods=none: only the Tunnel pool selects it) has its tunnel
   address, node1 reaches it over VXLAN, and a pod's CNI ADD on node3 fails with
   an error naming allowedUses; nothing is allocated.
5. `tabby status` on node1 lists no problem about the IPAMConfiguration or the
   pools' allowedUses (they are supported, not reported).

Against main before this work: step 1 fails (the first block by name order, an
a-pods /30, is claimed for the tunnel address; the IPAMConfiguration is an
unknown kind)."""
import ipaddress
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402

PODS, TUNNEL = "198.20.0.0/16", "198.19.0.0/24"


def pool(name, cidr, block, uses, selector="all()"):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, "blockSize": block, "vxlanMode": "Always", "ipipMode": "Never",
                     "allowedUses": uses, "nodeSelector": selector}}


def ipam_config(max_blocks):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration", "metadata": {"name": "default"},
            "spec": {"strictAffinity": True, "maxBlocksPerHost": max_blocks}}


def vtep(node):
    out = json.loads(node.run(["ip", "-j", "-4", "addr", "show", "dev", "vxlan.tabby"], check_rc=False).stdout or "[]")
    addrs = [a["local"] for i in out for a in i.get("addr_info", [])]
    return addrs[0] if addrs else None


def in_net(ip, cidr):
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def body(lab):
    c = Cluster(lab)
    c.put(pool("a-pods", PODS, 30, ["Workload"], "pods != 'none'"))
    c.put(pool("b-tunnel", TUNNEL, 26, ["Tunnel"]))
    c.put(ipam_config(2))
    c.add_node("node1", 1, labels={"pods": "yes"})
    c.add_node("node2", 2, labels={"pods": "yes"})
    c.add_node("node3", 3, labels={"pods": "none"})
    c.wait_ready(60)
    n1 = c.nodes["node1"]

    step("1. each node's tunnel address comes from the Tunnel pool, claimed at start")
    tunnel_block = {}
    for name in ("node1", "node2", "node3"):
        wait_until(lambda name=name: len(c.blocks_of(name)) == 1, 20, f"{name} claims one block without pods")
        block = c.blocks_of(name)[0]
        check(ipaddress.ip_network(block).subnet_of(ipaddress.ip_network(TUNNEL)),
              f"{name} claimed {block} for its tunnel address, not a block of b-tunnel ({TUNNEL})")
        first = str(ipaddress.ip_network(block).network_address)
        wait_until(lambda name=name, first=first: vtep(c.nodes[name]) == first, 20,
                   f"{name}'s vxlan.tabby carries {first} (has {vtep(c.nodes[name])})")
        tunnel_block[name] = block
        step(f"  {name}: tunnel block {block}, VTEP {first}")

    step("2. pods get addresses of the Workload pool only, and reach each other over VXLAN")
    p1 = c.add_pod("node1", "default", "p1")
    p2 = c.add_pod("node2", "default", "p2")
    for p in (p1, p2):
        check(in_net(p.ip, PODS), f"{p.name} got {p.ip}, not an address of a-pods ({PODS})")
    check(len(c.blocks_of("node1")) == 2, f"node1's blocks: {c.blocks_of('node1')}")
    c.ping_all()
    step(f"  p1 {p1.ip}, p2 {p2.ip}; node1's blocks {c.blocks_of('node1')}")

    step("3. strictAffinity + maxBlocksPerHost 2: node1's /30 full, the fourth pod fails instead of borrowing")
    c.add_pod("node1", "default", "p1b")
    c.add_pod("node1", "default", "p1c")
    node1_pod_block = next(b for b in c.blocks_of("node1") if in_net(ipaddress.ip_network(b).network_address, PODS))
    blocks_before = sorted(o["metadata"]["name"] for o in c.block_affinities())
    rc, msg = c.failed_add("node1", "p1d")
    check(rc != 0, "CNI ADD of a fourth pod on node1 succeeded (its block is full and maxBlocksPerHost is 2)")
    check("spec.maxBlocksPerHost is 2" in msg and "no address is borrowed" in msg, f"the CNI error: {msg}")
    check("default/p1d" not in c.allocations(), f"an address was recorded for p1d: {c.allocations().get('default/p1d')}")
    check(sorted(o["metadata"]["name"] for o in c.block_affinities()) == blocks_before,
          "a block was claimed by the failed ADD")
    step(f"  CNI ADD refused: {msg}")
    c.put(ipam_config(3))
    p1d = c.add_pod("node1", "default", "p1d")  # the plugin reads the datastore on every ADD
    check(in_net(p1d.ip, PODS) and not in_net(p1d.ip, node1_pod_block), f"p1d got {p1d.ip}")
    check(len(c.blocks_of("node1")) == 3, f"node1's blocks: {c.blocks_of('node1')}")
    step(f"  with maxBlocksPerHost 3: p1d {p1d.ip} from a new block; node1 has {c.blocks_of('node1')}")

    step("4. node3 (only the Tunnel pool selects it): a VTEP, but no pod address")
    v3 = vtep(c.nodes["node3"])
    wait_until(lambda: n1.run(["ping", "-c", "1", "-W", "1", "-q", v3], check_rc=False).returncode == 0, 20,
               f"node1 pings node3's VTEP {v3} over VXLAN")
    rc, msg = c.failed_add("node3", "p3")
    check(rc != 0, "CNI ADD on node3 succeeded although no Workload pool selects it")
    check("allowedUses include Workload" in msg, f"the CNI error: {msg}")
    check("default/p3" not in c.allocations(), "an address was recorded for p3")
    check(c.blocks_of("node3") == [tunnel_block["node3"]], f"node3's blocks: {c.blocks_of('node3')}")
    step(f"  CNI ADD on node3 refused: {msg}")

    step("5. no problem reported about the IPAMConfiguration or allowedUses")
    st = c.agents["node1"].status()
    check(st is not None, "tabby status answered nothing")
    probs = st.get("problems", [])
    check(not [p for p in probs if "IPAMConfiguration" in p or "allowedUses" in p], f"tabby status problems: {probs}")



run_test("agent_ipam_uses", body)
