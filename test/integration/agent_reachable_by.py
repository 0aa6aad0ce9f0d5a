#!/usr/bin/env python3
"""agent_reachable_by.py — BGPPeer reachableBy (file datastore, dataplane on).

Node n1 (198.18.0.11/24, no default route) reaches the BGP peer 198.18.9.254 (BIRD,
AS 65001, on its own link behind router gw) only through gw (198.18.0.1):
1. before the BGPPeer exists the peer is unreachable from n1 (no route);
2. the BGPPeer with reachableBy 198.18.0.1: tabby installs 198.18.9.254/32 via
   198.18.0.1 (proto tabby) and the multihop session comes up over it;
3. reachableBy removed from the BGPPeer: the route goes (and the session with it);
   put back, then the BGPPeer deleted: the route goes again.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest import run_test  # noqa: E402
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, holds_for, step, wait_until  # noqa: E402
from tabbytest.daemons import Bird  # noqa: E402

NODE_IP, GW_IP, GW_FAR, PEER_IP = "198.18.0.11", "198.18.0.1", "198.18.9.1", "198.18.9.254"
NODE_AS, PEER_AS = 64512, 65001


def peer(reachable=True):
    spec = {"peerIP": PEER_IP, "asNumber": PEER_AS}
    if reachable:
        spec["reachableBy"] = GW_IP
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "far"}, "spec": spec}


def body(lab):
    c = Cluster(lab)
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": {"nodeToNodeMeshEnabled": False, "asNumber": NODE_AS}})
    node = c.add_node("n1", 1, start=False, asn=NODE_AS)
    node.run(["ip", "route", "del", "default"])
    gw = lab.node("gw")
    lab.join(c.sw, gw, f"{GW_IP}/24")
    far = lab.node("far")
    lab.link(gw, far, f"{GW_FAR}/24", f"{PEER_IP}/24")
    gw.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    far.run(["ip", "route", "add", "198.18.0.0/24", "via", GW_FAR])
    bird = Bird(far, PEER_AS, PEER_IP, peers=[{"ip": NODE_IP, "asn": NODE_AS, "multihop": 2}])
    bird.announce("203.0.113.0/24")
    bird.start()
    agent = c.agents["n1"]
    agent.start()
    wait_until(lambda: agent.status() is not None, 20, "agent API up")

    def kernel_route():
        for line in agent.kernel_routes().splitlines():
            if line.startswith(PEER_IP + " ") and f"via {GW_IP}" in line:
                return line
        return None

    p = node.run(["ping", "-c", "1", "-W", "1", PEER_IP], check_rc=False)
    check(p.returncode != 0, "the peer answers n1 before any route to it exists: the lab is wrong")
    step("without a route n1 cannot reach the peer")

    c.put(peer())
    line = wait_until(kernel_route, 20, f"kernel route {PEER_IP} via {GW_IP} (proto tabby)")
    step(f"kernel: {line}")
    wait_until(lambda: PEER_IP in agent.established_peers(), 40, "the session over the gateway Established")
    bird.wait_established(NODE_IP, 10)
    step("session Established over the reachableBy route")

    c.put(peer(reachable=False))
    wait_until(lambda: kernel_route() is None, 20, "route removed when reachableBy is removed")
    c.put(peer())
    wait_until(kernel_route, 20, "route back")
    c.delete(peer())
    wait_until(lambda: kernel_route() is None, 20, "route removed with the BGPPeer")
    holds_for(lambda: kernel_route() is None, 2, "the route stays removed")
    step("route follows the BGPPeer")


run_test("agent_reachable_by", body)
