#!/usr/bin/env python3
"""agent_ipam_check.py — `tabby ipam check` finds an address whose CNI DEL never
came, `tabby ipam release` frees it (with a dry run first), and a new pod gets it
back.

Topology (namespaces this test creates): node1 on a bridge with the file datastore,
one IPPool 198.19.0.0/16; pods added through the CNI plugin as a runtime does. The
whole scenario runs twice: on the file datastore, then on a real etcd.

Checks:
1. Two pods; `tabby ipam check` lists nothing.
2. pod2 vanishes without a CNI DEL (its namespace and WorkloadEndpoint are deleted,
   the allocation stays): `tabby ipam check` (text and -o json) lists its address,
   handle default/pod2, block and node, and nothing else.
3. `tabby ipam release` of pod1's address is refused (a WorkloadEndpoint holds it).
4. `tabby ipam release <pod2's address> --dry-run` says what it would do and changes
   nothing; without --dry-run it frees it: check lists nothing, the BlockAffinity no
   longer records it, and the next pod gets that address.
5. Errors: an address no allocation records, a bad address, no --config: non-zero
   with a message.
6. A second node dies (agent stopped, Node resource deleted): check lists its
   block as an orphan with its live endpoint; `release --block` is refused while
   that WorkloadEndpoint exists, and for node1's own block; once the endpoint is
   gone, --dry-run changes nothing, then the block's BlockAffinity is deleted and
   node1 drops its route to it.

Run against today's main (TABBY_BIN=<old build>) check 2 fails: `tabby ipam check`
is not a command there."""
import json
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import Lab, check, run_test, sh, step, wait_until  # noqa: E402


def ipam(c, *args):
    """`tabby ipam ...` on node1 (in its namespace: the datastore is reached from there)."""
    conf = c.agents["node1"].conf
    return sh(c.nodes["node1"].cmd([c.bin, "ipam"] + list(args) + ["--config", conf]), check_rc=False)


def body(lab):
    step("== on the file datastore")
    scenario(lab, "file")
    step("== on etcd")
    with Lab("etcdipam") as lab2:  # its own namespaces (another prefix), cleaned up on exit
        scenario(lab2, "etcd")


def scenario(lab, store):
    c = Cluster(lab, store=store)
    c.pool("default-ipv4-ippool", "198.19.0.0/16")
    c.add_node("node1", 1)
    c.wait_ready(60)
    p1 = c.add_pod("node1", "default", "pod1")
    p2 = c.add_pod("node1", "default", "pod2")

    step("1. nothing leaked")
    r = ipam(c, "check")
    check(r.returncode == 0 and "No leaked allocations." in r.stdout, f"check: rc={r.returncode} {r.stdout}{r.stderr}")

    step("2. pod2 gone without a CNI DEL")
    sh(["ip", "netns", "del", p2.netns])
    lab.namespaces.remove(p2.netns)
    c.pods.remove(p2)
    c.delete(("WorkloadEndpoint.tabby.dev", "default", "pod2"))
    check(c.allocations().get("default/pod2") == p2.ip, f"the allocation stays: {c.allocations()}")
    r = ipam(c, "check", "-o", "json")
    check(r.returncode == 0, f"check -o json: rc={r.returncode} {r.stdout}{r.stderr}")
    leaks = json.loads(r.stdout)["leaks"]
    check(len(leaks) == 1, f"leaks: {leaks}")
    leak = leaks[0]
    check(leak["address"] == p2.ip and leak["handle"] == "default/pod2" and leak["node"] == "node1"
          and leak["block"].startswith("198.19.") and "no WorkloadEndpoint default/pod2" in leak["reason"],
          f"leak: {leak}")
    r = ipam(c, "check")
    check(p2.ip in r.stdout and "default/pod2" in r.stdout and "1 leaked allocation" in r.stdout, r.stdout)
    step("  " + r.stdout.strip().replace("\n", "\n  "))

    step("3. an address a pod holds is not released")
    r = ipam(c, "release", p1.ip)
    check(r.returncode == 1 and "held by WorkloadEndpoint default/pod1" in r.stderr,
          f"release of pod1's address: rc={r.returncode} {r.stdout}{r.stderr}")
    check(c.allocations().get("default/pod1") == p1.ip, "pod1's allocation stays")

    step("4. dry run, then release; the address is reused")
    before = c.allocations()
    r = ipam(c, "release", p2.ip, "--dry-run")
    check(r.returncode == 0 and r.stdout.startswith(f"would release {p2.ip}"), f"dry run: {r.stdout}{r.stderr}")
    check(c.allocations() == before, "the dry run changed the datastore")
    r = ipam(c, "release", p2.ip)
    check(r.returncode == 0 and r.stdout.startswith(f"released {p2.ip} (handle default/pod2"),
          f"release: {r.stdout}{r.stderr}")
    step("  " + r.stdout.strip())
    check("default/pod2" not in c.allocations() and c.allocations().get("default/pod1") == p1.ip, f"after: {c.allocations()}")
    r = ipam(c, "check")
    check("No leaked allocations." in r.stdout, r.stdout)
    p3 = c.add_pod("node1", "default", "pod3")
    check(p3.ip == p2.ip, f"pod3 got {p3.ip}, not the released {p2.ip}")
    c.ping_all()

    step("5. errors")
    r = ipam(c, "release", "198.19.200.7")
    check(r.returncode == 1 and "no IPAM allocation records 198.19.200.7" in r.stderr, f"{r.stdout}{r.stderr}")
    r = ipam(c, "release", "not-an-ip")
    check(r.returncode == 2 and "is not an IP address" in r.stderr, f"{r.stdout}{r.stderr}")
    r = sh(c.nodes["node1"].cmd([c.bin, "ipam", "check"]), check_rc=False)
    check(r.returncode == 2 and "usage" in r.stderr, f"no --config: {r.returncode} {r.stderr}")

    step("6. a dead node's block")
    c.add_node("node2", 2)
    c.agents["node2"].wait_ready(60)
    p4 = c.add_pod("node2", "default", "pod4")
    block2 = c.blocks_of("node2")
    check(len(block2) == 1, f"node2's blocks: {block2}")
    block2 = block2[0]
    wait_until(lambda: block2 in c.agents["node1"].kernel_routes(), 20, "node1 routes node2's block")
    c.agents["node2"].stop()
    c.delete(("Node.projectcalico.org", "", "node2"))
    r = ipam(c, "check", "-o", "json")
    orphans = json.loads(r.stdout)["orphanBlocks"]
    check(orphans == [{"block": block2, "node": "node2", "blockAffinity": orphans[0]["blockAffinity"] if orphans else "",
                       "allocations": 1, "liveEndpoints": ["default/pod4"]}], f"orphans: {orphans}")
    r = ipam(c, "check")
    check("1 block of nodes that no longer exist" in r.stdout and block2 in r.stdout, r.stdout)
    r = ipam(c, "release", "--block", block2)
    check(r.returncode == 1 and "still has WorkloadEndpoints holding its addresses (default/pod4)" in r.stderr,
          f"{r.returncode} {r.stdout}{r.stderr}")
    own = c.blocks_of("node1")[0]
    r = ipam(c, "release", "--block", own)
    check(r.returncode == 1 and "belongs to node node1, which exists" in r.stderr, f"{r.returncode} {r.stderr}")
    sh(["ip", "netns", "del", p4.netns])
    lab.namespaces.remove(p4.netns)
    c.pods.remove(p4)
    c.delete(("WorkloadEndpoint.tabby.dev", "default", "pod4"))
    r = ipam(c, "release", "--block", block2, "--dry-run")
    check(r.returncode == 0 and r.stdout.startswith(f"would release block {block2} of node node2"), r.stdout + r.stderr)
    check(c.blocks_of("node2") == [block2], "the dry run changed the datastore")
    r = ipam(c, "release", "--block", block2)
    check(r.returncode == 0 and r.stdout.startswith(f"released block {block2} of node node2"), r.stdout + r.stderr)
    step("  " + r.stdout.strip())
    check(c.blocks_of("node2") == [], f"node2's blocks after the release: {c.blocks_of('node2')}")
    wait_until(lambda: block2 not in c.agents["node1"].kernel_routes(), 20, "node1 drops its route to the block")
    r = ipam(c, "check", "-o", "json")
    check(json.loads(r.stdout) == {"leaks": [], "orphanBlocks": []}, r.stdout)


run_test("agent_ipam_check", body)
