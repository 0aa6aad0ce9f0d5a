#!/usr/bin/env python3
"""agent_cross_subnet.py — an IPPool with `vxlanMode: CrossSubnet`, end to end through
the agent (Calico semantics): a remote block is routed directly (`via <node IP>`)
when its node's IPv4 address lies in this node's own subnet (the mask of its
spec.bgp.ipv4Address) and through the VXLAN device (`via <VTEP address> dev
vxlan.tabby onlink`) when it does not.

Topology (all in namespaces this test creates): 4 nodes on two subnets,
198.18.1.0/24 (nodeA1 .11, nodeA2 .12, bridge "fabric") and 198.18.2.0/24
(nodeB1 .11, nodeB2 .12, bridge "fabric2"), joined by a router namespace (.254 on
both, IPv4 forwarding on) that is every node's default route. One shared file
datastore, the full BGP mesh (sessions between the subnets cross the router), two
pods per node attached through the tabby CNI plugin.

Checks:
1. CrossSubnet: each node routes the same-subnet node's blocks directly and the
   other subnet's blocks via vxlan.tabby, onlink to the owner's VTEP address (the
   address on the owner's own vxlan.tabby); every pod pings every other pod.
2. Encapsulation is real: pings to a cross-subnet pod raise the source node's
   vxlan.tabby TX counter and the router forwards that many UDP/4789 packets;
   pings to a same-subnet pod leave vxlan.tabby's TX counter alone. Over the whole
   CrossSubnet phase the router never forwards a plain (unencapsulated) packet
   from or to a pod address (nft counters in the router namespace).
3. The pool switches to `vxlanMode: Always`: every remote block goes via
   vxlan.tabby, same-subnet pings now go through the VXLAN device too, and every
   pod pings every other pod.

IPIP CrossSubnet (`ipipMode: CrossSubnet`) is not tested here: this kernel has no
ipip module (see TESTING.md), so tunl0 cannot exist in a namespace; the route
choice is the same function (ipip::use_tunnel) for both encapsulations.
"""
import ipaddress
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Agent, Cluster  # noqa: E402
from tabbytest.core import check, run_test, sh, step, wait_until  # noqa: E402

SUBNETS = {"A": "198.18.1", "B": "198.18.2"}
NODES = {"nodeA1": ("A", 11), "nodeA2": ("A", 12), "nodeB1": ("B", 11), "nodeB2": ("B", 12)}
VX = "vxlan.tabby"
POOL_CIDR = "198.19.0.0/16"


def add_node(c, switches, name):
    """A node namespace on its subnet's bridge, default route via the router, running the agent."""
    subnet, host = NODES[name]
    node = c.lab.node(name)
    ip = f"{SUBNETS[subnet]}.{host}"
    c.lab.join(switches[subnet], node, f"{ip}/24")
    node.run(["ip", "route", "add", "default", "via", f"{SUBNETS[subnet]}.254"])
    c.nodes[name] = node
    agent = Agent(c, node)
    c.agents[name] = agent
    agent.start()  # registers its Node with ipv4Address <ip>/24 (routerID + the interface's mask)
    return node


def router_counter(router, name):
    out = router.run(["nft", "-j", "list", "counter", "inet", "xsub", name]).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise AssertionError(f"counter {name} not found in {out}")


def vx_tx(node):
    out = node.run(["ip", "-j", "-s", "link", "show", "dev", VX]).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def vtep_address(node):
    out = node.run(["ip", "-j", "-4", "addr", "show", "dev", VX]).stdout
    addrs = [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]
    return addrs[0] if addrs else None


def remote_routes(agent):
    """{block: (via, dev, onlink)} of the agent's remote block routes (proto 44)."""
    out = {}
    for line in agent.kernel_routes().splitlines():
        m = re.match(r"^(\S+/26) via (\S+) dev (\S+)(.*)$", line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3), "onlink" in m.group(4))
    return out


def body(lab):
    c = Cluster(lab)  # its bridge "fabric" is subnet A's
    switches = {"A": c.sw, "B": lab.switch("fabric2")}
    router = lab.node("router")
    lab.join(switches["A"], router, f"{SUBNETS['A']}.254/24")
    lab.join(switches["B"], router, f"{SUBNETS['B']}.254/24")
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    # Counters of what the router forwards: VXLAN (UDP 4789) and plain pod traffic.
    rules = f"""table inet xsub {{
  counter vxlan {{ }}
  counter plainpod {{ }}
  chain routed {{
    type filter hook forward priority 0; policy accept;
    udp dport 4789 counter name vxlan
    ip saddr {POOL_CIDR} counter name plainpod
    ip daddr {POOL_CIDR} counter name plainpod
  }}
}}
"""
    sh(router.cmd(["nft", "-f", "-"]), input_=rules)

    pool = c.pool("default-ipv4-ippool", POOL_CIDR, vxlan="CrossSubnet")
    for name in NODES:
        add_node(c, switches, name)
    c.wait_ready(60)
    wait_until(lambda: all(len(a.established_peers()) == 3 for a in c.agents.values()), 40,
               "full mesh (3 peers each, half of them across the router)")
    step("4 agents on 2 subnets ready, full mesh up across the router")

    for name in NODES:
        for p in (1, 2):
            c.add_pod(name, "default", f"web-{name[-2:].lower()}-{p}")
    node_ip = {n: f"{SUBNETS[s]}.{h}" for n, (s, h) in NODES.items()}
    blocks = {}  # block -> owner node
    for pod in c.pods:
        blocks[str(ipaddress.ip_network(f"{pod.ip}/26", strict=False))] = pod.node.name
    check(len(blocks) == 4, f"want one block per node, got {blocks}")
    vteps = {n: wait_until(lambda n=n: vtep_address(c.nodes[n]), 20, f"{VX} address on {n}") for n in NODES}
    step(f"blocks {blocks}; VTEP addresses {vteps}")

    def want_routes(mode):
        out = {}
        for me in NODES:
            want = {}
            for blk, owner in blocks.items():
                if owner == me:
                    continue
                same = NODES[owner][0] == NODES[me][0]
                if mode == "CrossSubnet" and same:
                    want[blk] = (node_ip[owner], "eth0", False)
                else:
                    want[blk] = (vteps[owner], VX, True)
            out[me] = want
        return out

    def routes_are(mode):
        want = want_routes(mode)
        got = {n: remote_routes(a) for n, a in c.agents.items()}
        return got == want or None

    want = want_routes("CrossSubnet")
    wait_until(lambda: routes_are("CrossSubnet"), 20,
               f"CrossSubnet routes: same subnet direct, other subnet via {VX} onlink; want {want}, "
               f"have {({n: remote_routes(a) for n, a in c.agents.items()})}")
    for n, a in c.agents.items():
        step(f"{n} routes:\n  " + "\n  ".join(a.kernel_routes().splitlines()))
    c.ping_all()

    # Encapsulation, measured per destination from a pod on nodeA1.
    src = next(p for p in c.pods if p.node.name == "nodeA1")
    same_dst = next(p for p in c.pods if p.node.name == "nodeA2")
    cross_dst = next(p for p in c.pods if p.node.name == "nodeB2")
    n_ping = 10

    def measured_ping(dst):
        tx0, vx0, plain0 = vx_tx(c.nodes["nodeA1"]), router_counter(router, "vxlan"), router_counter(router, "plainpod")
        check(c.ping(src, dst.ip, count=n_ping), f"{src} -> {dst}: {n_ping} pings did not all pass")
        return (vx_tx(c.nodes["nodeA1"]) - tx0, router_counter(router, "vxlan") - vx0,
                router_counter(router, "plainpod") - plain0)

    tx, vx, plain = measured_ping(same_dst)
    step(f"same subnet {src} -> {same_dst}: {VX} TX +{tx}, router UDP/4789 +{vx}, router plain pod packets +{plain}")
    check(tx == 0, f"same-subnet pings went through {VX} on nodeA1 (TX +{tx}); CrossSubnet should route them directly")
    check(vx == 0 and plain == 0, f"same-subnet pings crossed the router (UDP/4789 +{vx}, plain +{plain})")

    tx, vx, plain = measured_ping(cross_dst)
    step(f"cross subnet {src} -> {cross_dst}: {VX} TX +{tx}, router UDP/4789 +{vx}, router plain pod packets +{plain}")
    check(tx >= n_ping, f"cross-subnet pings did not go out through {VX} on nodeA1 (TX +{tx}, want >= {n_ping})")
    check(vx >= 2 * n_ping, f"the router forwarded only {vx} UDP/4789 packets for {n_ping} echo requests + replies")
    check(router_counter(router, "plainpod") == 0,
          f"the router forwarded {router_counter(router, 'plainpod')} unencapsulated pod packets in CrossSubnet mode")
    step("CrossSubnet: cross-subnet pod traffic is VXLAN-encapsulated at the router, same-subnet traffic is not")

    step("pool -> vxlanMode Always")
    pool["spec"]["vxlanMode"] = "Always"
    c.put(pool)
    wait_until(lambda: routes_are("Always"), 20, f"every remote block via {VX} onlink to its owner's VTEP")
    step("nodeA1 routes:\n  " + "\n  ".join(c.agents["nodeA1"].kernel_routes().splitlines()))
    c.ping_all()
    tx, vx, plain = measured_ping(same_dst)
    step(f"Always, same subnet {src} -> {same_dst}: {VX} TX +{tx}, router UDP/4789 +{vx}")
    check(tx >= n_ping, f"with vxlanMode Always same-subnet pings did not use {VX} (TX +{tx}, want >= {n_ping})")
    check(vx == 0, f"same-subnet VXLAN packets crossed the router (+{vx})")
    tx, vx, plain = measured_ping(cross_dst)
    check(tx >= n_ping and vx >= 2 * n_ping, f"Always, cross subnet: {VX} TX +{tx}, router UDP/4789 +{vx}")
    check(router_counter(router, "plainpod") == 0, "the router forwarded unencapsulated pod packets")
    step("Always: every remote block via VXLAN, all pods reach each other")


run_test("agent_cross_subnet", body)
