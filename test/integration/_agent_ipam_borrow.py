"""_agent_ipam_borrow.py — IPAM borrowing (IPAMConfiguration strictAffinity false,
Calico's default), with real agents and the CNI plugin, run on the file
(agent_ipam_borrow.py), etcd (agent_ipam_borrow_etcd.py) and kubernetes
(agent_ipam_borrow_k8s.py) datastores.

Topology (namespaces this test creates): node1, node2, node3 on one bridge, BGP
full mesh, direct routing (agent_ipam_borrow_vxlan.py: VXLAN, the VTEP addresses
from a second, Tunnel-only pool). Pool 198.19.0.0/27 with /28 blocks: two blocks only.
1. A pod on node1 and one on node3 claim the two blocks: the pool has no block
   left for node2.
2. No IPAMConfiguration (strictAffinity false): a pod on node2 gets an address of
   node1's block, recorded there with spec.borrowed naming node2; the pods of
   node1, node2 and node3 ping each other; node1 and node3 have the /32 of the
   borrowed address via node2 in their kernel, node1 its block's blackhole too;
   (VXLAN: via node2's VTEP on vxlan.tabby); node2 announces the /32 over BGP (node3's `tabby routes` has it from node2);
   `tabby ipam` on node1 lists the borrowed address.
3. Owner and borrower write node1's block at the same time: three ADDs on node1
   and three on node2 run concurrently; every pod gets its own address, every
   allocation is recorded (none lost by the compare-and-swap), and they all
   reach each other.
4. CNI DEL of node2's borrowed pod frees the address in node1's block (the
   allocation and its borrowed record go); the /32 leaves node1's and node3's
   kernels.
5. strictAffinity true: a pod's CNI ADD on node2 fails with an error naming the
   setting, and nothing is recorded for it.

Against main before this work: step 2 fails (the ADD on node2 fails: tabby never
borrowed)."""
import ipaddress
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, sh, step, wait_until  # noqa: E402

POOL = "198.19.0.0/27"
TUNNELS = "198.20.0.0/24"


def ipam_config(store_kind, strict):
    api, kind = ("crd.projectcalico.org/v1", "IPAMConfig") if store_kind == "kubernetes" else \
        ("projectcalico.org/v3", "IPAMConfiguration")
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "default"},
            "spec": {"strictAffinity": strict, "autoAllocateBlocks": True, "maxBlocksPerHost": 0}}


def in_net(ip, cidr):
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def block_of(c, node):
    blocks = c.blocks_of(node)
    check(len(blocks) == 1, f"{node}'s blocks: {blocks}")
    return blocks[0]


def affinity(c, cidr):
    return next(o for o in c.block_affinities() if o["spec"]["cidr"] == cidr)


def host_route(agent, ip):
    """The kernel's tabby route for ip/32 in the agent's node (a line, or '')."""
    return next((l for l in agent.kernel_routes().splitlines() if l.split()[0] in (ip, f"{ip}/32")), "")


def vtep(node):
    out = json.loads(node.run(["ip", "-j", "-4", "addr", "show", "dev", "vxlan.tabby"], check_rc=False).stdout or "[]")
    addrs = [a["local"] for i in out for a in i.get("addr_info", [])]
    return addrs[0] if addrs else None


def body(lab, store, vxlan=False):
    c = Cluster(lab, store)
    kind = c.store.kind
    c.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})  # the API server needs it
    if vxlan:
        # Pods from the tiny pool, over VXLAN; each node's VTEP address from a pool
        # of its own (allowedUses Tunnel), so node2 has a VTEP though it holds no pod block.
        for name, cidr, block, uses in (("tiny", POOL, 28, ["Workload"]), ("tunnels", TUNNELS, 26, ["Tunnel"])):
            c.put({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
                   "spec": {"cidr": cidr, "blockSize": block, "vxlanMode": "Always", "ipipMode": "Never",
                            "allowedUses": uses}})
    else:
        c.pool("tiny", POOL, block_size=28)
    for i, name in enumerate(["node1", "node2", "node3"], 1):
        c.add_node(name, i)
    c.wait_ready(60)
    via_node2 = "via 198.18.0.12"
    if vxlan:
        wait_until(lambda: vtep(c.nodes["node2"]), 20, "node2 has its VTEP address")
        via_node2 = f"via {vtep(c.nodes['node2'])} dev vxlan.tabby"
        step(f"  VXLAN: node2's VTEP {vtep(c.nodes['node2'])} (a block of {TUNNELS})")

    step("1. node1 and node3 claim the pool's two blocks; none is left for node2")
    pa = c.add_pod("node1", "default", "pa")
    pc = c.add_pod("node3", "default", "pc")
    pod_blocks = lambda n: [b for b in c.blocks_of(n) if ipaddress.ip_network(b).subnet_of(ipaddress.ip_network(POOL))]  # noqa: E731
    b1, b3 = pod_blocks("node1"), pod_blocks("node3")
    check(len(b1) == 1 and len(b3) == 1, f"pod blocks: node1 {b1}, node3 {b3}")
    b1, b3 = b1[0], b3[0]
    check(sorted([b1, b3]) == ["198.19.0.0/28", "198.19.0.16/28"], f"blocks: node1 {b1}, node3 {b3}")
    step(f"  node1 {b1} (pa {pa.ip}), node3 {b3} (pc {pc.ip}); node2 has {pod_blocks('node2')}")

    step("2. strictAffinity false (no IPAMConfiguration): node2's pod borrows from node1's block")
    pb = c.add_pod("node2", "default", "pb")
    check(in_net(pb.ip, b1), f"pb got {pb.ip}, not an address of node1's block {b1}")
    check(pod_blocks("node2") == [], f"node2 claimed {pod_blocks('node2')}")
    spec = affinity(c, b1)["spec"]
    check(spec["node"] == "node1", f"block {b1} now belongs to {spec['node']}")
    check(spec.get("allocations", {}).get("default/pb") == pb.ip, f"{b1}'s allocations: {spec.get('allocations')}")
    check(spec.get("borrowed") == {"default/pb": "node2"}, f"{b1}'s borrowed record: {spec.get('borrowed')}")
    c.ping_all()
    for n in ("node1", "node3"):
        wait_until(lambda n=n: via_node2 in host_route(c.agents[n], pb.ip), 20,
                   f"{n} has the /32 of {pb.ip} via node2 (its routes: {c.agents[n].kernel_routes()!r})")
    check(f"blackhole {b1}" in c.agents["node1"].kernel_routes(), f"node1 lost its blackhole for {b1}")
    check(host_route(c.agents["node2"], pb.ip).find("dev cali") >= 0,
          f"node2's route to its pod: {host_route(c.agents['node2'], pb.ip)!r}")
    step(f"  pb {pb.ip}; node1: {host_route(c.agents['node1'], pb.ip)!r}; node3: {host_route(c.agents['node3'], pb.ip)!r}")

    def learned_from_node2():
        routes = (c.agents["node3"].api("routes") or {}).get("routes", [])
        return any(r.get("prefix") == f"{pb.ip}/32" and
                   any(p.get("peerAddress") == "198.18.0.12" for p in r.get("paths", [])) for r in routes)
    wait_until(learned_from_node2, 20, f"node3's BGP table has {pb.ip}/32 from node2")
    out = sh([c.bin, "ipam", "--socket", c.agents["node1"].sock]).stdout
    check("BORROWED ADDRESS" in out and pb.ip in out and "node2" in out, f"tabby ipam:\n{out}")
    step("  node3 learned the /32 over BGP from node2; tabby ipam on node1:\n" +
         "\n".join("    " + l for l in out.splitlines()[-3:]))

    step("3. node1 and node2 write node1's block concurrently (three ADDs each)")
    results, errors = [], []

    def add(node, name):
        try:
            results.append(c.add_pod(node, "default", name))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(f"{node}/{name}: {e}")
    threads = [threading.Thread(target=add, args=(n, f"{n[-1]}race{i}")) for i in range(3) for n in ("node1", "node2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, f"concurrent ADDs failed: {errors}")
    ips = [p.ip for p in results]
    check(len(set(ips)) == 6, f"addresses handed out twice: {sorted(ips)}")
    allocs = c.allocations()
    for p in results:
        check(allocs.get(f"default/{p.name}") == p.ip, f"{p.name} ({p.ip}) not recorded: {allocs}")
        check(in_net(p.ip, b1), f"{p.name} got {p.ip}, outside node1's block {b1}")
    spec = affinity(c, b1)["spec"]
    want_borrowed = {"default/pb": "node2"} | {f"default/{p.name}": "node2" for p in results if p.node.name == "node2"}
    check(spec.get("borrowed") == want_borrowed, f"{b1}'s borrowed record: {spec.get('borrowed')}")
    c.ping_all(timeout=30)
    step(f"  six concurrent ADDs: {sorted(ips)}; all recorded")

    step("4. CNI DEL of node2's pod frees the borrowed address in node1's block")
    for p in [p for p in results if p.node.name == "node2"]:
        c.del_pod(p)
    c.del_pod(pb)
    spec = affinity(c, b1)["spec"]
    check("default/pb" not in (spec.get("allocations") or {}), f"{b1}'s allocations: {spec.get('allocations')}")
    check(not spec.get("borrowed"), f"{b1}'s borrowed record: {spec.get('borrowed')}")
    check(spec["node"] == "node1", f"block {b1} now belongs to {spec['node']}")
    for n in ("node1", "node3"):
        wait_until(lambda n=n: host_route(c.agents[n], pb.ip) == "", 20, f"{n} drops the /32 of {pb.ip}")
    step(f"  {pb.ip} free again; the /32 is gone from node1 and node3")

    step("5. strictAffinity true: node2's ADD fails with a clear error, nothing recorded")
    c.put(ipam_config(kind, True))
    # node1's block has free addresses again: without strictAffinity node2 would borrow.
    rc, msg = c.failed_add("node2", "pd")
    check(rc != 0, "CNI ADD on node2 succeeded under strictAffinity true")
    check("spec.strictAffinity is true" in msg, f"the CNI error: {msg}")
    check("default/pd" not in c.allocations(), f"an address was recorded for pd: {c.allocations().get('default/pd')}")
    step(f"  CNI ADD refused: {msg}")
    c.put(ipam_config(kind, False))
    pe = c.add_pod("node2", "default", "pe")
    check(in_net(pe.ip, b1) or in_net(pe.ip, b3), f"pe got {pe.ip}")
    step(f"  strictAffinity false again: pe borrows {pe.ip}")


def main(store, vxlan=False):
    label = store if isinstance(store, str) else "k8s"
    name = "agent_ipam_borrow" + ("" if label == "file" else "_" + label) + ("_vxlan" if vxlan else "")
    run_test(name, lambda lab: body(lab, store, vxlan))
