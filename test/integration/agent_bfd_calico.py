#!/usr/bin/env python3
"""agent_bfd_calico.py — Calico's BGPPeer `failureDetectionMode: BFDIfDirectlyConnected`
on the agent with a file datastore (RFC 5880/5881/5882).

One node (Node resource 198.18.0.11/24, mesh off) and two BGPPeers, both with
BFDIfDirectlyConnected: a BIRD 2 ToR on the node's subnet (198.18.0.254, `protocol
bfd`, `bfd on`) and a peer outside it (203.0.113.9). Checked: BFD runs with the ToR
(tabby's default 300 ms × 3) and comes Up, the ToR's route is in the kernel; the far
peer gets no BFD and `tabby status` lists a problem naming it and why. The ToR's link
is cut inside its namespace: the session goes down and the route leaves the kernel
within 3 × 300 ms (+0.1 s margin; printed). The link returns: BFD, BGP and the route
come back.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.bfd import bird_bfd_block, bird_bfd_state, kernel_route, time_until  # noqa: E402
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, fail, run_test, sh, step, wait_until  # noqa: E402
from tabbytest.daemons import Bird  # noqa: E402

TOR, FAR, NODE = "198.18.0.254", "203.0.113.9", "198.18.0.11"
ROUTE = "198.51.100.0/24"


def peer(name, ip, asn):
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": name},
            "spec": {"peerIP": ip, "asNumber": asn, "failureDetectionMode": "BFDIfDirectlyConnected"}}


def body(lab):
    c = Cluster(lab)
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512}})
    c.put(peer("tor", TOR, 64513))
    c.put(peer("far", FAR, 64514))
    tor_node = lab.node("tor")
    lab.join(c.sw, tor_node, f"{TOR}/24")
    tor = Bird(tor_node, 64513, TOR, peers=[{"ip": NODE, "asn": 64512, "bfd": True, "gr": True, "hold": 30,
                                              "keepalive": 10}],
               extra=bird_bfd_block(300, 300, 3))
    tor.announce(ROUTE)
    tor.start()
    # The far peer never answers, so the initial BGP sync ends only at the restart
    # time, and until then the dataplane deletes no route: keep that wait short.
    c.add_node("node1", 1, labels={"rack": "r1"}, extra={"gracefulRestart": {"enabled": True, "restartTime": 10}})
    agent = c.agents["node1"]
    node = c.nodes["node1"]

    def peer_status(ip):
        for p in (agent.status() or {}).get("peers", []):
            if p.get("peerAddress") == ip:
                return p
        return {}
    wait_until(lambda: peer_status(TOR).get("state") == "Established", 40, "node1: session with the ToR")
    wait_until(lambda: peer_status(TOR).get("bfdState") == "Up", 20, "node1: BFD Up with the ToR")
    wait_until(lambda: bird_bfd_state(tor, NODE) == "Up", 10, "BIRD: BFD Up toward node1")
    st = peer_status(TOR)
    check(int(st.get("bfdDetectionTimeMs", 0)) == 900, f"default BFD 300 ms x 3 -> detection 900 ms: {st}")
    check(not peer_status(FAR).get("bfdState"), f"no BFD for the far peer: {peer_status(FAR)}")
    probs = (agent.status() or {}).get("problems", [])
    check(any(FAR in p and "not on a directly connected subnet" in p for p in probs),
          f"tabby status lacks the problem for {FAR}: {probs}")
    wait_until(lambda: kernel_route(node, ROUTE), 20, "node1 installs the ToR's route")
    wait_until(lambda: agent.ready(), 40, "node1 ready (initial sync over)")
    step(f"BFD Up with the ToR ({st.get('bfdTxIntervalMs')} ms, detect {st.get('bfdDetectionTimeMs')} ms); "
         f"the far peer has no BFD and a problem says why")
    time.sleep(1.0)
    sh(["ip", "-n", tor_node.ns, "link", "set", "eth0", "down"])
    dt = time_until(lambda: not kernel_route(node, ROUTE), 10)
    if dt is None:
        fail(f"route still in node1's kernel 10 s after the cut: {kernel_route(node, ROUTE)!r}; {peer_status(TOR)}")
    print(f"MEASURED agent_bfd_calico route_gone_s={dt:.3f} limit_s=0.900")
    check(peer_status(TOR).get("state") != "Established", f"session still up: {peer_status(TOR)}")
    check(dt <= 0.9 + 0.1, f"route left the kernel after {dt:.3f}s, more than 3 x 300 ms (+0.1 s)")
    step(f"ToR link cut: route gone from node1's kernel after {dt * 1000:.0f} ms (limit 900 ms)")
    sh(["ip", "-n", tor_node.ns, "link", "set", "eth0", "up"])
    wait_until(lambda: peer_status(TOR).get("bfdState") == "Up", 30, "BFD Up again")
    wait_until(lambda: peer_status(TOR).get("state") == "Established", 40, "session back")
    wait_until(lambda: kernel_route(node, ROUTE), 20, "route back in node1's kernel")
    step("link back: BFD Up, BGP re-established, route back in the kernel")


run_test("agent_bfd_calico", body)
