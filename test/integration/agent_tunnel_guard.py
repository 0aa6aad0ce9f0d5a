#!/usr/bin/env python3
"""agent_tunnel_guard.py — tunnel traffic only from nodes: VXLAN (UDP to the agent's
vxlanPort) and IPIP (IP protocol 4) addressed to a node are accepted only from the
underlay addresses of known nodes (set `tunnel-peers` in `table inet tabby`), the
rest is counted and dropped before the kernel decapsulates it.

Topology (namespaces this test creates): nodes on one bridge (198.18.0.0/24), the
file datastore, an IPPool with `vxlanMode: Always`, a pod on node1 ("target",
app=db) and one on node2 ("client", app=web); a NetworkPolicy lets only app=web
pods reach app=db pods. node2 runs with `dataplane.policy: false`. A non-node host
("rogue", 198.18.0.99) sits on the same bridge.

The attack: rogue sends crafted VXLAN (its own outer address, VNI 4096, the target
node's vxlan.tabby MAC) whose inner packet is UDP to the target pod with the
client pod's address as its (spoofed) source: the policy would let it through.

Checks:
1. Node-to-node pod traffic over VXLAN works (pings both ways).
2. The crafted VXLAN to node1 never reaches the target pod; node1's
   tabby_tunnel_packets_dropped_total{proto="vxlan"} in /metrics (and the nft
   counter) rises by the packets sent. The same against node2 (policy off).
3. The table holds the IPIP rule (layer-4 protocol 4, counter tunnel-drop-ipip; IPIP
   itself cannot run on this kernel) and `tunnel-peers` holds exactly the nodes.
4. A node added later (node3) is admitted once its Node resource appears: its
   address joins the set by element add (the drop counter is not reset, so the
   table was not reloaded) and its pod pings the target over VXLAN.
5. A node removed (node3's Node resource deleted) is no longer admitted: its
   address leaves the set and its crafted VXLAN is dropped and counted.
6. Restart without loss: while node1's agent is down the set and the rules stay
   (rogue's VXLAN is still dropped); a 20/s ping from node2's pod to node1's pod
   across the agent's stop and start loses nothing.

Run against today's main (TABBY_BIN=<old build>) check 2 fails: the pod receives the
crafted packets."""
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, socket_in_netns, step, wait_until  # noqa: E402
from tabbytest.rawtcp import checksum  # noqa: E402

VX = "vxlan.tabby"
VNI = 4096
VXLAN_PORT = 4789
POOL = "198.19.0.0/16"
ROGUE_IP = "198.18.0.99"
LISTEN_PORT = 5555


def crafted_vxlan(inner_dst_mac, inner_src_ip, inner_dst_ip, payload):
    """VXLAN header + inner Ethernet + IPv4 + UDP (RFC 7348 §5): the UDP payload an
    attacker sends to a node's VXLAN port."""
    udp = struct.pack("!HHHH", 40000, LISTEN_PORT, 8 + len(payload), 0) + payload  # UDP checksum 0: none
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0x4000, 64, 17, 0,
                     socket.inet_aton(inner_src_ip), socket.inet_aton(inner_dst_ip))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = bytes.fromhex(inner_dst_mac.replace(":", "")) + bytes.fromhex("02aabbccdd01") + b"\x08\x00"
    vxlan = struct.pack("!II", 0x08000000, VNI << 8)  # I flag, VNI
    return vxlan + eth + ip + udp


def vx_mac(node):
    out = node.run(["ip", "-j", "link", "show", "dev", VX]).stdout
    return json.loads(out)[0]["address"]


def send_vxlan(ns, src_ip, node_ip, packet, n):
    s = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src_ip, 0))
        for _ in range(n):
            s.sendto(packet, (node_ip, VXLAN_PORT))
            time.sleep(0.02)
    finally:
        s.close()


class Listener:
    """A UDP socket in a pod's namespace that collects what reaches the pod."""

    def __init__(self, pod):
        self.sock = socket_in_netns(pod.netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", LISTEN_PORT))
        self.sock.setblocking(False)

    def drain(self, wait=1.0):
        time.sleep(wait)
        got = []
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                return got
            got.append((data, addr))


def metric(agent, name, labels):
    status, body = agent.http_get("/metrics")
    check(status == 200, f"/metrics on {agent.node.name} answered {status}")
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in body.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def nft(node, *args):
    return node.run(["nft"] + list(args)).stdout


def nft_counter(node, name):
    out = json.loads(nft(node, "-j", "list", "counter", "inet", "tabby", name))
    return next(int(i["counter"]["packets"]) for i in out["nftables"] if "counter" in i)


def peers_set(node):
    out = json.loads(nft(node, "-j", "list", "set", "inet", "tabby", "tunnel-peers"))
    s = next(i["set"] for i in out["nftables"] if "set" in i)
    return sorted(e if isinstance(e, str) else json.dumps(e) for e in s.get("elem", []))


def body(lab):
    c = Cluster(lab)
    c.pool("default-ipv4-ippool", POOL, vxlan="Always")
    c.add_node("node1", 1)
    c.add_node("node2", 2, extra={"dataplane": {"enabled": True, "policy": False}})
    c.wait_ready(60)
    wait_until(lambda: all(len(a.established_peers()) == 1 for a in c.agents.values()), 30, "BGP session up")
    n1, n2 = c.nodes["node1"], c.nodes["node2"]
    a1, a2 = c.agents["node1"], c.agents["node2"]
    target = c.add_pod("node1", "default", "target", labels={"app": "db"})
    client = c.add_pod("node2", "default", "client", labels={"app": "web"})
    c.put({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "db-from-web", "namespace": "default"},
           "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}})
    c.ping_all(timeout=30)
    step(f"2 nodes over VXLAN, {target} (app=db, ingress only from app=web), {client} (app=web)")

    rogue = lab.node("rogue")
    lab.join(c.sw, rogue, f"{ROGUE_IP}/24")
    listener = Listener(target)

    # Sanity of the harness: a real UDP datagram from the client pod reaches the
    # target (the listener works and the policy admits app=web).
    s = socket_in_netns(client.netns, socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"legit", (target.ip, LISTEN_PORT))
    s.close()
    got = wait_until(lambda: listener.drain(0.2) or None, 10, "the client pod's datagram reaches the target pod")
    check(any(d == b"legit" for d, _ in got), f"target got {got}")
    step("client pod -> target pod UDP delivered (policy admits app=web)")

    # --- 2. the attack, against node1 (policy on)
    mac1 = vx_mac(n1)
    n_sent = 5
    attack = crafted_vxlan(mac1, client.ip, target.ip, b"spoofed-from-rogue")
    before_metric = metric(a1, "tabby_tunnel_packets_dropped_total", {"proto": "vxlan"})
    send_vxlan(rogue.ns, ROGUE_IP, n1.ip, attack, n_sent)
    got = listener.drain(1.5)
    check(not got, f"crafted VXLAN from the non-node {ROGUE_IP} reached pod {target} with spoofed source "
                   f"{client.ip}: {len(got)} of {n_sent} packets delivered {got[:2]}")
    check(before_metric is not None, "node1's /metrics has no tabby_tunnel_packets_dropped_total{proto=\"vxlan\"}")
    after_metric = metric(a1, "tabby_tunnel_packets_dropped_total", {"proto": "vxlan"})
    check(after_metric - before_metric >= n_sent,
          f"node1's vxlan drop counter rose by {after_metric - before_metric}, want >= {n_sent}")
    check(nft_counter(n1, "tunnel-drop-vxlan") >= n_sent, "nft counter tunnel-drop-vxlan on node1")
    step(f"node1: {n_sent} crafted VXLAN packets from {ROGUE_IP} dropped; "
         f"tabby_tunnel_packets_dropped_total{{proto=\"vxlan\"}} {before_metric:g} -> {after_metric:g}")

    # ... and against node2, which does not enforce policy: the guard is there anyway.
    rogue_udp = crafted_vxlan(vx_mac(n2), target.ip, client.ip, b"spoofed-to-client")
    client_listener = Listener(client)
    b2 = metric(a2, "tabby_tunnel_packets_dropped_total", {"proto": "vxlan"})
    send_vxlan(rogue.ns, ROGUE_IP, n2.ip, rogue_udp, n_sent)
    got = client_listener.drain(1.5)
    check(not got, f"crafted VXLAN reached pod {client} on node2 (dataplane.policy false): {got[:2]}")
    a2v = metric(a2, "tabby_tunnel_packets_dropped_total", {"proto": "vxlan"})
    check(b2 is not None and a2v - b2 >= n_sent, f"node2 vxlan drop counter {b2} -> {a2v}")
    step("node2 (dataplane.policy false): crafted VXLAN dropped and counted too")

    # --- 3. the table: IPIP rule and the set
    chain = nft(n1, "list", "chain", "inet", "tabby", "tunnel-guard")
    step("node1 chain:\n" + chain)
    check(re.search(r"hook input", chain), f"tunnel-guard is not an input hook chain: {chain}")
    check(re.search(r"udp dport 4789 .*@tunnel-peers .*counter name \"tunnel-drop-vxlan\" drop", chain),
          f"no VXLAN rule in {chain}")
    check(re.search(r"(ip protocol|meta l4proto) (4|ipencap|ipip) .*@tunnel-peers .*counter name \"tunnel-drop-ipip\" drop",
                    chain),
          f"no IPIP (protocol 4) rule in {chain}")
    check(metric(a1, "tabby_tunnel_packets_dropped_total", {"proto": "ipip"}) is not None,
          "no tabby_tunnel_packets_dropped_total{proto=\"ipip\"} series")
    for n in (n1, n2):
        check(peers_set(n) == sorted([n1.ip, n2.ip]), f"{n.name} tunnel-peers {peers_set(n)}")
    step(f"tunnel-peers on both nodes: {peers_set(n1)}")

    # --- 4. a node added later is admitted
    drops_before = nft_counter(n1, "tunnel-drop-vxlan")
    c.add_node("node3", 3)
    c.agents["node3"].wait_ready(60)
    wait_until(lambda: "198.18.0.13" in peers_set(n1), 20, "node1 admits node3 (tunnel-peers)")
    check(nft_counter(n1, "tunnel-drop-vxlan") >= drops_before,
          "node1's drop counter went back to 0 when node3 came: the table was reloaded, not edited")
    p3 = c.add_pod("node3", "default", "web3", labels={"app": "web"})
    c.ping_all([p3, target, client], timeout=30)
    step("node3 added: its address joined tunnel-peers (element add, counters kept), its pod pings over VXLAN")

    # --- 5. a node removed is no longer admitted
    c.remove_node("node3")
    wait_until(lambda: "198.18.0.13" not in peers_set(n1), 20, "node1 no longer admits node3")
    d0 = nft_counter(n1, "tunnel-drop-vxlan")
    send_vxlan(c.nodes["node3"].ns, "198.18.0.13", n1.ip, attack, n_sent)
    got = listener.drain(1.5)
    check(not got, f"VXLAN from removed node3 reached {target}: {got[:2]}")
    check(nft_counter(n1, "tunnel-drop-vxlan") - d0 >= n_sent, "node3's VXLAN not counted as dropped")
    step("node3 removed: left tunnel-peers, its VXLAN is dropped and counted")

    # --- 6. restart without loss
    count = 400  # 20 s at 20/s
    ping = subprocess.Popen(["ip", "netns", "exec", client.netns, "ping", "-i", "0.05", "-c", str(count), "-W", "1",
                             target.ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)
        a1.stop()
        check(peers_set(n1) == sorted([n1.ip, n2.ip]), f"agent down: tunnel-peers {peers_set(n1)}")
        d0 = nft_counter(n1, "tunnel-drop-vxlan")
        send_vxlan(rogue.ns, ROGUE_IP, n1.ip, attack, n_sent)
        got = listener.drain(1.0)
        check(not got and nft_counter(n1, "tunnel-drop-vxlan") - d0 >= n_sent,
              f"agent down: crafted VXLAN not dropped ({got[:2]})")
        step("node1's agent stopped: set and rules stay, crafted VXLAN still dropped")
        time.sleep(2)
        a1.start()
        a1.wait_ready(60)
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    check(m, f"ping output: {out[-300:]}")
    sent, recv = int(m.group(1)), int(m.group(2))
    step(f"ping across node1's agent restart: {sent} sent, {recv} received")
    check(sent == count and recv == sent, f"pod traffic over VXLAN lost {sent - recv} of {sent} packets across the restart")
    check(peers_set(n1) == sorted([n1.ip, n2.ip]), f"after restart: tunnel-peers {peers_set(n1)}")
    send_vxlan(rogue.ns, ROGUE_IP, n1.ip, attack, n_sent)
    got = listener.drain(1.0)
    check(not got, f"after restart crafted VXLAN reached the pod: {got[:2]}")
    step("after restart: set reconciled, crafted VXLAN dropped")


run_test("agent_tunnel_guard", body)
