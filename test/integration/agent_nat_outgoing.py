#!/usr/bin/env python3
"""agent_nat_outgoing.py — IPPool natOutgoing with Calico's semantics, in the kernel:
a packet from a pod of a natOutgoing pool to an address outside every pool leaves
the node with the node's address; pod-to-pod traffic (here across nodes through
VXLAN) keeps the pod's address; a pool without natOutgoing is not masqueraded;
a disabled pool still counts as a pod network; flipping the flag in the datastore
takes effect without a restart and without reloading `table inet tabby`.

Topology (namespaces this test creates): node1 (198.18.0.11, label nat=yes) and
node2 (198.18.0.12, label nat=no) on one bridge, the file datastore; pool "a-nat"
198.19.0.0/16 (natOutgoing, VXLAN, nodeSelector nat == 'yes') and pool "b-plain"
198.20.0.0/16 (VXLAN, nodeSelector nat == 'no'); pod1 on node1, pod2 on node2.
An "outside" host on the bridge at 198.18.0.254 (the nodes' default gateway) and
198.51.100.1, off every pool, with no route to any pool: it sees the source
address of what reaches it (a UDP listener).

Checks:
1. pod1 -> outside: the outside sees 198.18.0.11 (node1's address); pod2 ->
   outside: it sees pod2's own address (b-plain has no natOutgoing).
2. pod1 <-> pod2 (VXLAN between the nodes): each sees the other's pod address;
   node1 itself sees pod1's own address (a node's own addresses are never
   masqueraded to).
3. Both nodes' tables hold the NAT sets with the pools' CIDRs and the
   nat-outgoing chain (its IPv6 rule too).
4. natOutgoing flipped on for b-plain: pod2 -> outside is masqueraded (198.18.0.12)
   within seconds, no agent restarted; node1's masquerade counter is not reset
   (the table was changed by element, not reloaded). Flipped off on a-nat: pod1
   -> outside keeps its own address.
5. A disabled pool covering 198.51.100.0/24 appears: pod1 (natOutgoing again) ->
   198.51.100.1 is no longer masqueraded (a disabled pool is still a pod network);
   -> 198.18.0.254 still is.

Run against today's main (TABBY_BIN=<old build>) check 1 fails: the outside sees
pod1's address."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import TestFailure, check, run_test, socket_in_netns, step, wait_until  # noqa: E402

PORT = 7777
OUTSIDE = "198.18.0.254"
OUTSIDE_FAR = "198.51.100.1"


def pool(name, cidr, nat, selector, disabled=False):
    spec = {"cidr": cidr, "blockSize": 26, "vxlanMode": "Always", "natOutgoing": nat, "nodeSelector": selector}
    if disabled:
        spec = {"cidr": cidr, "disabled": True}
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}


class Listener:
    """A UDP socket in a namespace: which source address each token came from."""

    def __init__(self, ns):
        self.sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", PORT))
        self.sock.settimeout(0.2)

    def source_of(self, token, wait=1.5):
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                data, addr = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            if data == token:
                return addr[0]
        return None


def seen_as(pod, listener, dst):
    """Sends a datagram from the pod (a new socket: a new flow, so a new NAT decision)
    to dst and returns the source address the listener saw (None: nothing came)."""
    token = os.urandom(8).hex().encode()
    s = socket_in_netns(pod.netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(token, (dst, PORT))
    finally:
        s.close()
    return listener.source_of(token)


def expect_seen(pod, listener, dst, want, what, timeout=15):
    got = []

    def ok():
        got.append(seen_as(pod, listener, dst))
        return got[-1] == want
    try:
        wait_until(ok, timeout, f"{what}: {pod} -> {dst} seen as {want}")
    except TestFailure as e:
        raise TestFailure(f"{e}; seen as: {sorted(set(map(str, got)))} (None: nothing arrived)") from None
    step(f"  {what}: {pod.name} -> {dst} seen as {want}")


def set_elems(node, name):
    out = json.loads(node.run(["nft", "-j", "list", "set", "inet", "tabby", name]).stdout)
    s = next(i["set"] for i in out["nftables"] if "set" in i)
    elems = []
    for e in s.get("elem", []):
        if isinstance(e, dict) and "prefix" in e:
            elems.append(f"{e['prefix']['addr']}/{e['prefix']['len']}")
        else:
            elems.append(json.dumps(e))
    return sorted(elems)


def nat_chain(node):
    """(rule texts, masquerade packet counter of the IPv4 rule) of chain nat-outgoing."""
    text = node.run(["nft", "list", "chain", "inet", "tabby", "nat-outgoing"]).stdout
    out = json.loads(node.run(["nft", "-j", "list", "chain", "inet", "tabby", "nat-outgoing"]).stdout)
    rules = [i["rule"] for i in out["nftables"] if "rule" in i]
    packets = None
    for r in rules:
        if any("masquerade" in x for x in r["expr"]) and any(
                "match" in x and x["match"]["left"].get("payload", {}).get("protocol") == "ip" for x in r["expr"]):
            packets = next(x["counter"]["packets"] for x in r["expr"] if "counter" in x)
    return text, packets


def body(lab):
    c = Cluster(lab)
    c.put(pool("a-nat", "198.19.0.0/16", True, "nat == 'yes'"))
    c.put(pool("b-plain", "198.20.0.0/16", False, "nat == 'no'"))
    outside = lab.node("outside")
    lab.join(c.sw, outside, f"{OUTSIDE}/24", f"{OUTSIDE_FAR}/24")
    c.add_node("node1", 1, labels={"nat": "yes"})
    c.add_node("node2", 2, labels={"nat": "no"})
    c.wait_ready(60)
    wait_until(lambda: all(len(a.established_peers()) == 1 for a in c.agents.values()), 30, "BGP session up")
    n1, n2 = c.nodes["node1"], c.nodes["node2"]
    pod1 = c.add_pod("node1", "default", "pod1")
    pod2 = c.add_pod("node2", "default", "pod2")
    check(pod1.ip.startswith("198.19."), f"pod1 got {pod1.ip}, not from a-nat")
    check(pod2.ip.startswith("198.20."), f"pod2 got {pod2.ip}, not from b-plain")
    c.ping_all()
    out_l = Listener(outside.ns)
    step("1. to the outside: a natOutgoing pool is masqueraded, the other is not")
    expect_seen(pod1, out_l, OUTSIDE, n1.ip, "a-nat (natOutgoing)")
    expect_seen(pod2, out_l, OUTSIDE, pod2.ip, "b-plain (no natOutgoing)")
    expect_seen(pod1, out_l, OUTSIDE_FAR, n1.ip, "a-nat to a farther outside address")

    step("2. pod to pod across nodes (VXLAN) keeps the pod's address; so does pod to its own node")
    l1, l2 = Listener(pod1.netns), Listener(pod2.netns)
    expect_seen(pod1, l2, pod2.ip, pod1.ip, "pod1 -> pod2")
    expect_seen(pod2, l1, pod1.ip, pod2.ip, "pod2 -> pod1")
    expect_seen(pod1, Listener(n1.ns), n1.ip, pod1.ip, "pod1 -> its node's own address")

    step("3. the NAT sets and chain in both nodes' tables")
    for n in (n1, n2):
        check(set_elems(n, "pod-pools-v4") == ["198.19.0.0/16", "198.20.0.0/16"],
              f"{n.name} pod-pools-v4: {set_elems(n, 'pod-pools-v4')}")
        check(set_elems(n, "nat-pools-v4") == ["198.19.0.0/16"], f"{n.name} nat-pools-v4: {set_elems(n, 'nat-pools-v4')}")
        text, _ = nat_chain(n)
        for want in ("hook postrouting", "ip saddr @nat-pools-v4 ip daddr != @pod-pools-v4", "masquerade",
                     "ip6 saddr @nat-pools-v6 ip6 daddr != @pod-pools-v6"):
            check(want in text, f"{n.name}: chain nat-outgoing lacks {want!r}:\n{text}")
    _, before = nat_chain(n1)
    check(before and before >= 2, f"node1's masquerade counter after pod1's flows: {before}")

    step("4. natOutgoing flipped in the datastore: takes effect live, by element change")
    pids = {name: a.pids() for name, a in c.agents.items()}
    c.put(pool("b-plain", "198.20.0.0/16", True, "nat == 'no'"))
    expect_seen(pod2, out_l, OUTSIDE, n2.ip, "b-plain flipped to natOutgoing")
    wait_until(lambda: set_elems(n1, "nat-pools-v4") == ["198.19.0.0/16", "198.20.0.0/16"], 10,
               "node1's nat-pools-v4 gains b-plain")
    _, after = nat_chain(n1)
    check(after is not None and after >= before,
          f"node1's masquerade counter went from {before} to {after}: the table was reloaded, not changed by element")
    c.put(pool("a-nat", "198.19.0.0/16", False, "nat == 'yes'"))
    expect_seen(pod1, out_l, OUTSIDE, pod1.ip, "a-nat flipped off")
    expect_seen(pod2, l1, pod1.ip, pod2.ip, "pod2 -> pod1 still")
    for name, a in c.agents.items():
        a.check_alive()
        check(a.pids() == pids[name], f"{name}'s agent was restarted")

    step("5. a disabled pool is still a pod network: never masqueraded to")
    c.put(pool("a-nat", "198.19.0.0/16", True, "nat == 'yes'"))
    expect_seen(pod1, out_l, OUTSIDE_FAR, n1.ip, "a-nat natOutgoing again")
    c.put(pool("z-disabled", "198.51.100.0/24", False, None, disabled=True))
    expect_seen(pod1, out_l, OUTSIDE_FAR, pod1.ip, "destination in a disabled pool")
    expect_seen(pod1, out_l, OUTSIDE, n1.ip, "destination outside every pool")
    check(set_elems(n1, "pod-pools-v4") == ["198.19.0.0/16", "198.20.0.0/16", "198.51.100.0/24"],
          f"node1 pod-pools-v4: {set_elems(n1, 'pod-pools-v4')}")


run_test("agent_nat_outgoing", body)
