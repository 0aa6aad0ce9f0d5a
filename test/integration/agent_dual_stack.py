#!/usr/bin/env python3
"""agent_dual_stack.py — dual-stack pods end to end: an IPv4 and an IPv6
IPPool, three nodes with both address families, pods attached by the tabby CNI
plugin get one address of each family, and every pair reaches every other over
IPv6 (ping and TCP) as over IPv4. Blocks of both families are routed on every
node (IPv6 /122 blocks, Calico's default, directly to the owner node's IPv6
address) and advertised over MP-BGP (an IPv6 session per node pair); the routes
are back in both families after an agent restart. natOutgoing on the IPv6 pool
masquerades a pod's traffic to an IPv6 host outside every pool.

Topology (namespaces this test creates): node1..node3 on one bridge at
198.18.0.1{1,2,3}/24 and 2001:db8:18::1{1,2,3}/64 (Node resources carry both
addresses), the file datastore; pools 198.19.0.0/16 and 2001:db8:19::/64, both
natOutgoing, no encapsulation; two pods per node; an "outside" host on the bridge
at 2001:db8:18::fe, off every pool, with no route to the pools.

Checks:
1. each pod's CNI result, WorkloadEndpoint and eth0 carry one IPv4 and one IPv6
   address; CNI CHECK passes, and fails naming the IPv6 default route once it is gone; `tabby ipam -o json` lists blocks of both families (the IPv6 ones /122).
2. all pairs ping each other over IPv6 and IPv4; all pairs connect over TCP/IPv6.
3. every node has a kernel route for each other node's IPv6 block (via that node's
   IPv6 address) and a /128 to each of its pods; each agent has an Established
   IPv6 BGP session to every other node and learned the other nodes' IPv6 blocks.
4. a pod's IPv6 packet to the outside host arrives from its node's IPv6 address
   (nat-pools-v6 holds the IPv6 pool).
5. node2's agent restarted: every node's routes of both families are as before;
   all pairs still ping over IPv6.
6. a NetworkPolicy that allows only
   one pod into a server pod: the other pods' IPv6 TCP is refused, the allowed one
   still connects.

Against main before this work: step 1 fails (the CNI result has only an IPv4
address; the plugin refused IPv6)."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, sh, socket_in_netns, step, wait_until  # noqa: E402

V6_NET = "2001:db8:18::"
OUTSIDE6 = "2001:db8:18::fe"
POOL4, POOL6 = "198.19.0.0/16", "2001:db8:19::/64"
TCP_PORT, UDP_PORT = 8080, 7777


def pool(name, cidr):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, "natOutgoing": True, "ipipMode": "Never", "vxlanMode": "Never"}}


def node_resource(name, idx):
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name, "labels": {}},
            "spec": {"bgp": {"ipv4Address": f"198.18.0.{10 + idx}/24", "ipv6Address": f"{V6_NET}{10 + idx}/64"}}}


def routes(node, fam):
    out = node.run(["ip", fam, "route", "show", "proto", "44"]).stdout
    return sorted(l.strip() for l in out.splitlines() if l.strip())


def tcp_pairs(pods):
    """Every pod connects to every other pod's IPv6 address over TCP and sends a token
    the server reads back: the failed pairs."""
    servers = {}
    for p in pods:
        s = socket_in_netns(p.netns, socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((p.ip6, TCP_PORT))
        s.listen(64)
        s.settimeout(3)
        servers[p.name] = s
    failed = []
    try:
        for a in pods:
            for b in pods:
                if a is b:
                    continue
                token = os.urandom(8)
                c = socket_in_netns(a.netns, socket.AF_INET6, socket.SOCK_STREAM)
                c.settimeout(3)
                try:
                    c.connect((b.ip6, TCP_PORT))
                    c.sendall(token)
                    conn, peer = servers[b.name].accept()
                    conn.settimeout(3)
                    got = conn.recv(64)
                    conn.close()
                    if got != token or peer[0] != a.ip6:
                        failed.append(f"{a.name}->{b.name} (got {got!r} from {peer[0]})")
                except OSError as e:
                    failed.append(f"{a.name}->{b.name} ({e})")
                finally:
                    c.close()
    finally:
        for s in servers.values():
            s.close()
    return failed


def tcp_ok(src, dst, timeout=2.0):
    """One IPv6 TCP connection src -> dst:TCP_PORT (dst listens): True when it connects."""
    srv = socket_in_netns(dst.netns, socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((dst.ip6, TCP_PORT))
    srv.listen(4)
    c = socket_in_netns(src.netns, socket.AF_INET6, socket.SOCK_STREAM)
    c.settimeout(timeout)
    try:
        c.connect((dst.ip6, TCP_PORT))
        return True
    except OSError:
        return False
    finally:
        c.close()
        srv.close()


def seen_from(pod, listener):
    """A UDP datagram from the pod to the outside host: the source address it arrived from."""
    token = os.urandom(8).hex().encode()
    s = socket_in_netns(pod.netns, socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.sendto(token, (OUTSIDE6, UDP_PORT))
    finally:
        s.close()
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        try:
            data, addr = listener.recvfrom(2048)
        except socket.timeout:
            continue
        if data == token:
            return addr[0]
    return None


def set_elems(node, name):
    out = json.loads(node.run(["nft", "-j", "list", "set", "inet", "tabby", name]).stdout)
    s = next(i["set"] for i in out["nftables"] if "set" in i)
    return sorted(f"{e['prefix']['addr']}/{e['prefix']['len']}" for e in s.get("elem", [])
                  if isinstance(e, dict) and "prefix" in e)


def body(lab):
    c = Cluster(lab)
    c.put(pool("default-ipv4-ippool", POOL4))
    c.put(pool("default-ipv6-ippool", POOL6))
    outside = lab.node("outside")
    lab.join(c.sw, outside, f"{OUTSIDE6}/64")
    names = ["node1", "node2", "node3"]
    for i, name in enumerate(names, 1):
        c.put(node_resource(name, i))
        node = c.add_node(name, i, start=False)
        node.add_addr("eth0", f"{V6_NET}{10 + i}/64")
        c.agents[name].start()
    c.wait_ready(60)
    # Two sessions per node pair: IPv4 between the IPv4 addresses, IPv6 between the IPv6 ones.
    wait_until(lambda: all(len(a.established_peers()) == 4 for a in c.agents.values()), 40,
               "IPv4 and IPv6 BGP sessions up between every node pair")
    for a in c.agents.values():
        v6_peers = [p for p in a.established_peers() if ":" in p]
        check(len(v6_peers) == 2, f"{a.node.name}: IPv6 sessions {v6_peers}")

    step("1. pods get one address of each family")
    pods = [c.add_pod(n, "default", f"pod-{n[-1]}{k}") for n in names for k in "ab"]
    for p in pods:
        check(len(p.ips) == 2 and ":" not in p.ips[0] and p.ip6 and p.ip6.startswith("2001:db8:19:"),
              f"{p}: CNI result addresses {p.ips}")
        addrs = sh(["ip", "-n", p.netns, "-o", "addr", "show", "dev", "eth0"]).stdout
        check(f"{p.ip}/32" in addrs and f"{p.ip6}/128" in addrs, f"{p}: eth0 addresses:\n{addrs}")
    # CNI CHECK of a dual-stack pod: both addresses, both default routes, the host side.
    p0 = pods[0]
    conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby",
            "tabbyConfig": c.agents[p0.node.name].conf,
            "prevResult": {"ips": [{"address": f"{p0.ip}/32"}, {"address": f"{p0.ip6}/128"}]}}
    r = c._cni(p0.node, "CHECK", p0.netns, p0.container_id, p0.namespace, p0.name, conf=conf)
    check(r.returncode == 0, f"CNI CHECK of {p0} failed: {r.stdout}{r.stderr}")
    sh(["ip", "-n", p0.netns, "-6", "route", "del", "default"])
    r = c._cni(p0.node, "CHECK", p0.netns, p0.container_id, p0.namespace, p0.name, conf=conf)
    check(r.returncode != 0 and "default route via fe80::ecee:eeff:feee:eeee" in r.stdout,
          f"CNI CHECK did not notice the missing IPv6 default route: rc={r.returncode} {r.stdout}")
    sh(["ip", "-n", p0.netns, "-6", "route", "add", "default", "via", "fe80::ecee:eeff:feee:eeee", "dev", "eth0"])
    weps = [json.loads(t) for t in c.store.objects("WorkloadEndpoint.tabby.dev")]
    check(len(weps) == len(pods), f"{len(weps)} WorkloadEndpoints for {len(pods)} pods")
    for w in weps:
        ips = w["spec"]["ips"]
        check(len(ips) == 2 and ":" not in ips[0] and ":" in ips[1], f"WorkloadEndpoint {w['metadata']['name']}: ips {ips}")
    ipam = c.agents["node1"].api("ipam")
    blocks = [b["cidr"] for b in (ipam or {}).get("blocks", [])]
    v6_blocks = sorted(b for b in blocks if ":" in b)
    check(len([b for b in blocks if ":" not in b]) == 3 and len(v6_blocks) == 3,
          f"tabby ipam: blocks {blocks} (want an IPv4 and an IPv6 block per node)")
    check(all(b.endswith("/122") for b in v6_blocks), f"IPv6 blocks are not /122: {v6_blocks}")
    text = sh([c.bin, "ipam", "--socket", c.agents["node1"].sock]).stdout
    check(all(b in text for b in v6_blocks) and POOL6 in text, f"`tabby ipam` lacks the IPv6 blocks:\n{text}")
    step(f"  {len(pods)} pods, IPv6 blocks {v6_blocks}")

    step("2. all pairs over IPv6 (ping, TCP) and IPv4 (ping)")
    n6 = ping_all6(c, pods)
    c.ping_all(pods)
    failed = tcp_pairs(pods)
    check(not failed, "IPv6 TCP failed: " + ", ".join(failed[:10]))
    step(f"  {n6} pairs ping over IPv6, {n6} pairs connect over TCP/IPv6")

    step("3. routes of both families on every node; IPv6 blocks learned over BGP")
    v6_block_of = {}
    for p in pods:
        v6_block_of.setdefault(p.node.name, next(b for b in v6_blocks if in_block(p.ip6, b)))
    check_routes(c, pods, v6_block_of)
    for name, a in c.agents.items():
        learned = {r["prefix"] for r in (a.api("routes") or {}).get("routes", [])}
        for other, b in v6_block_of.items():
            if other != name:
                check(b in learned, f"{name} did not learn {other}'s IPv6 block {b} over BGP: {sorted(learned)}")
    before = {n: (routes(c.nodes[n], "-4"), routes(c.nodes[n], "-6")) for n in names}

    step("4. natOutgoing on the IPv6 pool: the outside host sees the node's IPv6 address")
    for n in names:
        check(POOL6 in set_elems(c.nodes[n], "nat-pools-v6"), f"{n}: nat-pools-v6 lacks {POOL6}")
        check(POOL6 in set_elems(c.nodes[n], "pod-pools-v6"), f"{n}: pod-pools-v6 lacks {POOL6}")
    lst = socket_in_netns(outside.ns, socket.AF_INET6, socket.SOCK_DGRAM)
    lst.bind(("::", UDP_PORT))
    lst.settimeout(0.2)
    for p in (pods[0], pods[2]):
        want = p.node.ip6
        got = []
        wait_until(lambda: got.append(seen_from(p, lst)) or got[-1] == want, 10,
                   f"{p.name} -> {OUTSIDE6} seen as {want}")
        step(f"  {p.name} ({p.ip6}) -> outside seen as {want}")
    lst.close()

    step("5. node2's agent restarted: routes of both families come back on every node")
    a2 = c.agents["node2"]
    a2.stop()
    a2.start()
    a2.wait_ready(60)
    wait_until(lambda: all(len(a.established_peers()) == 4 for a in c.agents.values()), 40, "sessions back")
    wait_until(lambda: all((routes(c.nodes[n], "-4"), routes(c.nodes[n], "-6")) == before[n] for n in names), 30,
               "every node's routes of both families as before the restart")
    check_routes(c, pods, v6_block_of)
    ping_all6(c, pods)

    step("6. an IPv6 NetworkPolicy denies one pair")
    server, allowed, denied = pods[5], pods[0], pods[2]
    c.put({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": server.name, "namespace": "default", "labels": {"app": "server"}},
           "spec": {"nodeName": server.node.name}})
    c.put({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": allowed.name, "namespace": "default", "labels": {"app": "client"}},
           "spec": {"nodeName": allowed.node.name}})
    c.put({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "server-from-client", "namespace": "default"},
           "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}})
    wait_until(lambda: not tcp_ok(denied, server), 20, f"{denied.name} -> {server.name} refused over IPv6")
    check(tcp_ok(allowed, server, 3), f"{allowed.name} -> {server.name} over IPv6 was refused too")
    check(not c.ping(denied, server.ip6, count=1), f"{denied.name} still pings {server.name} over IPv6")
    step(f"  {denied.name} -> {server.name} refused, {allowed.name} -> {server.name} allowed (IPv6)")


def in_block(ip, block):
    import ipaddress  # noqa: PLC0415
    return ipaddress.ip_address(ip) in ipaddress.ip_network(block)


def ping_all6(c, pods, timeout=20):
    pairs = [(a, b) for a in pods for b in pods if a is not b]
    end = time.monotonic() + timeout
    failed = pairs
    while True:
        failed = [(a, b) for a, b in failed if not c.ping(a, b.ip6, count=1)]
        if not failed or time.monotonic() > end:
            break
        time.sleep(0.5)
    check(not failed, "IPv6 pairs that cannot reach each other: " +
          ", ".join(f"{a.name}->{b.name}" for a, b in failed[:10]))
    return len(pairs)


def check_routes(c, pods, v6_block_of):
    for name, node in c.nodes.items():
        if name not in v6_block_of:
            continue
        r6 = routes(node, "-6")
        for other, b in v6_block_of.items():
            if other == name:
                continue
            want = f"{b} via {c.nodes[other].ip6}"
            check(any(l.startswith(want) for l in r6), f"{name}: no route {want!r}:\n" + "\n".join(r6))
        for p in pods:
            if p.node.name == name:
                check(any(l.startswith(f"{p.ip6} dev {p.host_if}") for l in r6),
                      f"{name}: no /128 route to {p.name} ({p.ip6} dev {p.host_if}):\n" + "\n".join(r6))
        r4 = routes(node, "-4")
        check(sum(1 for l in r4 if "via 198.18.0." in l) >= 2, f"{name}: IPv4 block routes missing:\n" + "\n".join(r4))


run_test("agent_dual_stack", body)
