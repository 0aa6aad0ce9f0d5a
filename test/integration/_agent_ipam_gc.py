"""_agent_ipam_gc.py — the leader-elected IPAM garbage collector, run on
the file (agent_ipam_gc.py), etcd (agent_ipam_gc_etcd.py) and kubernetes
(agent_ipam_gc_k8s.py) datastores.

Three nodes on one datastore, pool 198.19.0.0/16 (/26 blocks), every agent
with ipamGC {gracePeriod: 3, interval: 0.5, leaseDuration: 2}; node1 and node2 start
at the same moment (they race for the lease).
1. Exactly one agent becomes the collector; one lease object exists.
2. node3 dies with a pod on it (agent stopped, its namespace and pod namespace
   deleted, its Node resource deleted — its block claim and its pod's
   WorkloadEndpoint stay); a pod on node1 loses its WorkloadEndpoint without a CNI
   DEL. After the grace period node3's pod endpoint, its block and the leaked
   address are released, each exactly once (by the collector only), and
   `tabby ipam check` finds nothing.
3. node2's first pod claims the block node3 had (the lowest free one).
3b. An IPv6 pool is added; a dual-stack pod on node1 claims node1's first IPv6
   block and is deleted with a CNI DEL: after the grace period the collector
   releases that empty IPv6 block (logged once), node1's IPv4 block (its
   tunnel address, a live pod) stays.
4. The collector's agent stops: the other agent takes the lease over (the next
   epoch) once it has expired.

Against main before this work: step 1 fails (no agent collects: no lease)."""
import ipaddress
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, sh, step, wait_until  # noqa: E402

GC = {"ipamGC": {"gracePeriod": 3, "interval": 0.5, "leaseDuration": 2}}


def log_of(agent):
    with open(agent.log) as f:
        return f.read()


def leases(c):
    out = []
    for t in c.store.objects("IPAMLease.tabby.dev"):
        out.append(json.loads(t))
    return out


def collectors(c, names):
    return [n for n in names if "this node is the IPAM garbage collector" in log_of(c.agents[n])]


def released_lines(c, names):
    return {n: [l for l in log_of(c.agents[n]).splitlines() if "ipam-gc: released" in l] for n in names}


def body(lab, store):
    c = Cluster(lab, store)
    c.pool("default-ipv4-ippool", "198.19.0.0/16")
    c.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})  # the API server needs it
    for i, name in enumerate(["node1", "node2", "node3"], 1):
        c.add_node(name, i, start=False, extra=GC)
    step("1. node1 and node2 start together and race for the lease")
    c.agents["node1"].start()
    c.agents["node2"].start()
    c.wait_ready(60)
    wait_until(lambda: len(collectors(c, ["node1", "node2"])) >= 1, 20, "an agent becomes the IPAM collector")
    time.sleep(2)  # several renew rounds: a second collector would show by now
    leaders = collectors(c, ["node1", "node2"])
    check(len(leaders) == 1, f"collectors: {leaders} (want exactly one)")
    ls = leases(c)
    check(len(ls) == 1 and ls[0]["spec"]["holder"] == leaders[0] and ls[0]["spec"]["epoch"] == 1,
          f"lease objects: {ls}")
    leader = leaders[0]
    other = "node2" if leader == "node1" else "node1"
    step(f"  {leader} holds lease ipam-gc-1; {other} waits")

    step("2. node3 dies with a pod; a pod on node1 loses its WorkloadEndpoint without a CNI DEL")
    c.agents["node3"].start()
    c.agents["node3"].wait_ready(60)
    keep = c.add_pod("node1", "default", "keep")
    leak = c.add_pod("node1", "default", "leak")
    dead = c.add_pod("node3", "default", "dead")
    block3 = next(json.loads(t) for t in c.store.objects("BlockAffinity.tabby.dev")
                  if json.loads(t)["spec"]["node"] == "node3")["spec"]["cidr"]
    c.agents["node3"].stop()
    sh(["ip", "netns", "del", dead.netns])
    lab.namespaces.remove(dead.netns)
    sh(["ip", "netns", "del", c.nodes["node3"].ns])
    lab.namespaces.remove(c.nodes["node3"].ns)
    c.pods.remove(dead)
    c.delete(("Node.projectcalico.org", "", "node3"))
    c.delete(("WorkloadEndpoint.tabby.dev", "default", "leak"))
    t0 = time.monotonic()

    def collected():
        blocks = [json.loads(t)["spec"] for t in c.store.objects("BlockAffinity.tabby.dev")]
        node3_gone = not any(b["node"] == "node3" for b in blocks)
        leak_gone = not any("default/leak" in b.get("allocations", {}) for b in blocks)
        dead_gone = not any(json.loads(t)["metadata"]["name"] == "dead"
                            for t in c.store.objects("WorkloadEndpoint.tabby.dev"))
        return node3_gone and leak_gone and dead_gone
    wait_until(collected, 20, f"node3's block {block3} and {leak.ip} of default/leak released")
    took = time.monotonic() - t0
    check(took >= 2.5, f"released after {took:.1f}s, before the 3 s grace period")
    time.sleep(1.5)
    lines = released_lines(c, ["node1", "node2"])
    check(not lines[other], f"{other} (not the collector) released: {lines[other]}")
    got = lines[leader]
    check(len(got) == 3 and any(block3 in l and "node3" in l for l in got) and any(leak.ip in l for l in got)
          and any("WorkloadEndpoint default/dead" in l for l in got),
          f"{leader}'s releases (want node3's pod endpoint, its block and {leak.ip}, once each): {got}")
    kept = [json.loads(t)["spec"] for t in c.store.objects("BlockAffinity.tabby.dev")]
    check(any("default/keep" in b.get("allocations", {}) for b in kept), "the live pod's allocation was released")
    chk = c.nodes["node1"].run([c.bin, "ipam", "check", "--config", c.agents["node1"].conf]).stdout
    check("No leaked allocations." in chk and "no longer exist" not in chk, f"tabby ipam check:\n{chk}")
    step(f"  released after {took:.1f}s by {leader} only: " + "; ".join(l.split("released ", 1)[1] for l in got))

    step("3. node2's first pod claims the freed block")
    p2 = c.add_pod("node2", "default", "reuse")
    check(ipaddress.ip_address(p2.ip) in ipaddress.ip_network(block3), f"node2's pod got {p2.ip}, not from {block3}")
    c.ping_all([keep, p2])
    step(f"  node2's pod {p2.ip} is in node3's former block {block3}")

    step("3b. an IPv6 pool: node1's dual-stack pod is deleted; its empty IPv6 block is released")
    c.pool("default-ipv6-ippool", "2001:db8:19::/64", block_size=122)
    six = c.add_pod("node1", "default", "six")
    check(six.ip6 is not None, f"the pod got no IPv6 address: {six.ips}")
    block6 = next(b for b in c.blocks_of("node1") if ":" in b)
    check(ipaddress.ip_address(six.ip6) in ipaddress.ip_network(block6), f"{six.ip6} is not in {block6}")
    v4_before = [b for b in c.blocks_of("node1") if ":" not in b]
    c.del_pod(six)
    t0 = time.monotonic()
    wait_until(lambda: block6 not in c.blocks_of("node1"), 20, f"node1's empty IPv6 block {block6} released")
    took = time.monotonic() - t0
    check(took >= 2.5, f"released after {took:.1f}s, before the 3 s grace period")
    time.sleep(1.0)
    got6 = [l for l in released_lines(c, [leader])[leader] if block6 in l]
    check(len(got6) == 1 and "(empty)" in got6[0], f"{leader}'s release lines for {block6}: {got6}")
    check([b for b in c.blocks_of("node1") if ":" not in b] == v4_before,
          f"node1's IPv4 blocks changed: {v4_before} -> {c.blocks_of('node1')}")
    step(f"  {block6} released after {took:.1f}s by {leader}; node1 keeps {v4_before}")

    step("4. the collector stops: the other agent takes over the lease")
    c.agents[leader].stop()
    wait_until(lambda: "this node is the IPAM garbage collector" in log_of(c.agents[other]), 15,
               f"{other} becomes the collector")
    wait_until(lambda: any(l["spec"]["holder"] == other and l["spec"]["epoch"] == 2 for l in leases(c)), 5,
               f"lease ipam-gc-2 held by {other}")
    step(f"  {other} took lease ipam-gc-2")


def main(store):
    label = store if isinstance(store, str) else "k8s"
    run_test("agent_ipam_gc" + ("" if label == "file" else "_" + label), lambda lab: body(lab, store))
