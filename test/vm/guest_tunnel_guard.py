#!/usr/bin/env python3
"""guest_tunnel_guard.py — runs inside the qemu guest (kernel with ipip and nf_tables):
the tunnel guard against IPIP. Two `tabby agent`s on a file datastore (IPPool
`ipipMode: Always`, `dataplane.policy: false`), a pod on each (tabby CNI plugin), and
a host on the same bridge that is not a node.
Checks: the pods ping each other through tunl0; IPIP from the non-node host (a raw
IPPROTO_IPIP socket: outer source its own address, inner UDP to node1's pod with
node2's pod as spoofed source) never reaches the pod, and node1's
tabby_tunnel_packets_dropped_total{proto="ipip"} rises by what was sent. Without the
guard the kernel's fallback tunl0 takes IPIP from anyone and the pod gets it.
Usage: guest_tunnel_guard.py REPO_ROOT TABBY_BIN; prints GUEST-TUNNEL-GUARD PASS."""
import os
import socket
import struct
import sys
import time

os.environ["TABBY_ROOT"] = sys.argv[1]
os.environ["TABBY_BIN"] = sys.argv[2]
sys.path.insert(0, os.path.join(sys.argv[1], "test", "integration"))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import Lab, check, in_netns, socket_in_netns, step, wait_until  # noqa: E402

PORT = 5555


def csum(data):
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def inner_udp(src, dst, payload):
    udp = struct.pack("!HHHH", 40000, PORT, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x4321, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + udp


def metric(agent, proto):
    status, body = agent.http_get("/metrics")
    for line in body.splitlines():
        if line.startswith(f'tabby_tunnel_packets_dropped_total{{proto="{proto}"}} '):
            return float(line.split()[-1])
    return None


def drain(sock, wait):
    time.sleep(wait)
    got = []
    while True:
        try:
            got.append(sock.recvfrom(2048))
        except BlockingIOError:
            return got


def body(lab):
    print("guest kernel", os.uname().release, flush=True)
    c = Cluster(lab)
    c.pool("default-ipv4-ippool", "198.19.0.0/16", ipip="Always")
    for i in (1, 2):
        c.add_node(f"node{i}", i, extra={"dataplane": {"enabled": True, "policy": False}})
    c.wait_ready(120)
    target = c.add_pod("node1", "default", "target")
    client = c.add_pod("node2", "default", "client")
    c.ping_all(timeout=60)
    routes = c.agents["node1"].kernel_routes()
    check("dev tunl0" in routes, f"node1 routes node2's block via tunl0: {routes}")
    step("pods ping each other through tunl0")

    listener = socket_in_netns(target.netns, socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("0.0.0.0", PORT))
    listener.setblocking(False)
    legit = socket_in_netns(client.netns, socket.AF_INET, socket.SOCK_DGRAM)
    legit.sendto(b"legit", (target.ip, PORT))
    legit.close()
    got = wait_until(lambda: drain(listener, 0.2) or None, 10, "client pod datagram reaches the target pod")
    check(any(d == b"legit" for d, _ in got), f"target got {got}")

    rogue = lab.node("rogue")
    lab.join(c.sw, rogue, "198.18.0.99/24")
    a1 = c.agents["node1"]
    before = metric(a1, "ipip")
    # The kernel adds the outer header (protocol 4, source 198.18.0.99).
    raw = in_netns(rogue.ns, socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
    n = 5
    for _ in range(n):
        raw.sendto(inner_udp(client.ip, target.ip, b"spoofed-ipip"), (c.nodes["node1"].ip, 0))
        time.sleep(0.05)
    raw.close()
    got = drain(listener, 1.5)
    check(not got, f"IPIP from the non-node 198.18.0.99 reached {target} with spoofed source {client.ip}: "
                   f"{len(got)} of {n} delivered {got[:2]}")
    check(before is not None, "node1 /metrics has no tabby_tunnel_packets_dropped_total{proto=\"ipip\"}")
    after = metric(a1, "ipip")
    check(after - before >= n, f"node1 ipip drop counter {before} -> {after}, want +{n}")
    step(f"IPIP from a non-node dropped: tabby_tunnel_packets_dropped_total{{proto=\"ipip\"}} {before:g} -> {after:g}")
    c.ping_all(timeout=30)


try:
    with Lab("tguard") as lab:
        body(lab)
    print("GUEST-TUNNEL-GUARD PASS", flush=True)
except Exception as e:  # noqa: BLE001
    print(f"GUEST-TUNNEL-GUARD FAIL: {type(e).__name__}: {e}", flush=True)
    sys.exit(1)
