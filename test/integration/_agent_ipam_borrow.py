"""_agent_ipam_borrow.py — IPAM borrowing (IPAMConfiguration strictAffinity false,
Calico's default), with real agents and the CNI plugin, run on the file
(agent_ipam_borrow.py), etcd (agent_ipam_borrow_etcd.py) and kubernetes
(agent_ipam_borrow_k8s.py) datastores.

Topology (namespaces this test creates): node1, node2, node3 on one bridge, BGP
full mesh, direct routing (agent_ipam_borrow_vxlan.py: VXLAN). Pool 198.19.0.0/27
with /28 blocks: two blocks only.
0. VXLAN only: node1 and node3 start first and claim the two blocks for their
   VTEP addresses; node2 then has no block to claim and borrows its VTEP address
   from node1's block (handle vxlan-tunnel-addr-node2, spec.borrowed naming
   node2): it is on node2's vxlan.tabby, `tabby ipam` lists it, node1 has node2's
   FDB and neighbour entries and the /32 route to it, and node1 reaches it over
   VXLAN before node2 has any pod.
1. A pod on node1 and one on node3 claim the two blocks (VXLAN: they hold them
   already): the pool has no block left for node2.
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
   setting, and nothing is recorded for it. VXLAN: a node4 started now has no
   VTEP address and `tabby status` says why (strictAffinity); strictAffinity
   false again: node4 borrows one.
6. VXLAN only: borrowed VTEPs of live nodes are no leak (`tabby ipam check`);
   node4 deleted: its borrowed VTEP allocation is one ("node node4 no longer
   exists"), and the IPAM collector (a 3 s grace period here) releases it.
7. VXLAN only: a second VXLAN pool lets node2 claim a block of its own: its VTEP
   moves to that block's first address (the old one leaves its vxlan.tabby), its
   agent releases the borrowed one, node1 reaches the new one and every pod
   still reaches every other.

Against main before borrowing: step 2 fails (the ADD on node2 fails: tabby never
borrowed). Against main before tunnel-address borrowing: the VXLAN variant fails
at step 0 (node2 never gets a VTEP address)."""
import ipaddress
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, sh, step, wait_until  # noqa: E402

POOL = "198.19.0.0/27"


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


def vxlan_peer(node, peer_vtep, peer_underlay):
    """(fdb entry, neighbour entry) of a VXLAN peer on node's vxlan.tabby, or None each."""
    neigh = json.loads(node.run(["ip", "-j", "neigh", "show", "dev", "vxlan.tabby"], check_rc=False).stdout or "[]")
    n = next((e for e in neigh if e.get("dst") == peer_vtep), None)
    fdb = json.loads(node.run(["bridge", "-j", "fdb", "show", "dev", "vxlan.tabby"], check_rc=False).stdout or "[]")
    f = next((e for e in fdb if n and e.get("mac") == n.get("lladdr") and e.get("dst") == peer_underlay), None)
    return f, n


# VXLAN variant: a quick IPAM collector (it releases a deleted node's borrowed VTEP in step 6).
GC = {"ipamGC": {"gracePeriod": 3, "interval": 0.5, "leaseDuration": 2}}


def borrow_vtep(c):
    """Step 0 (VXLAN): node2 borrows its VTEP address from node1's block."""
    step("0. node1 and node3 claim the pool's two blocks for their VTEPs; node2 borrows its VTEP")
    c.add_node("node1", 1, extra=GC)
    wait_until(lambda: len(c.blocks_of("node1")) == 1, 30, "node1 claimed a block for its VTEP")
    c.add_node("node3", 3, extra=GC)
    wait_until(lambda: len(c.blocks_of("node3")) == 1, 30, "node3 claimed a block for its VTEP")
    b1, b3 = block_of(c, "node1"), block_of(c, "node3")
    check(sorted([b1, b3]) == ["198.19.0.0/28", "198.19.0.16/28"], f"VTEP blocks: node1 {b1}, node3 {b3}")
    c.add_node("node2", 2, extra=GC)
    c.wait_ready(60)
    n1, n2 = c.nodes["node1"], c.nodes["node2"]
    wait_until(lambda: vtep(n2), 30, "node2 has a VTEP address")
    v2 = vtep(n2)
    check(in_net(v2, b1), f"node2's VTEP {v2} is not an address of node1's block {b1}")
    check(c.blocks_of("node2") == [], f"node2 claimed {c.blocks_of('node2')}")
    spec = affinity(c, b1)["spec"]
    check(spec["node"] == "node1", f"block {b1} now belongs to {spec['node']}")
    check((spec.get("allocations") or {}).get("vxlan-tunnel-addr-node2") == v2, f"{b1}'s allocations: {spec.get('allocations')}")
    check(spec.get("borrowed") == {"vxlan-tunnel-addr-node2": "node2"}, f"{b1}'s borrowed record: {spec.get('borrowed')}")
    out = sh([c.bin, "ipam", "--socket", c.agents["node1"].sock]).stdout
    row = next((l for l in out.splitlines() if f" {v2} " in l), "")
    check("BORROWED ADDRESS" in out and "node2" in row and "vxlan-tunnel-addr-node2" in row, f"tabby ipam:\n{out}")
    v1 = vtep(n1)
    check(v1 == b1.split("/")[0], f"node1's VTEP {v1} is not its block's first address")
    wait_until(lambda: all(vxlan_peer(n1, v2, "198.18.0.12")), 20,
               f"node1 has node2's VXLAN FDB and neighbour entries for {v2}")
    wait_until(lambda: f"via {v2} dev vxlan.tabby" in host_route(c.agents["node1"], v2), 20,
               f"node1 routes {v2}/32 to node2 over VXLAN (its routes: {c.agents['node1'].kernel_routes()!r})")
    wait_until(lambda: f"via {v2} dev vxlan.tabby" in host_route(c.agents["node3"], v2), 20,
               f"node3 routes {v2}/32 to node2 over VXLAN (its routes: {c.agents['node3'].kernel_routes()!r})")
    check(not [p for p in c.pods if p.node.name == "node2"], "node2 has pods already")
    wait_until(lambda: n1.run(["ping", "-c", "1", "-W", "1", v2], check_rc=False).returncode == 0, 20,
               f"node1 pings node2's VTEP {v2} (no pod on node2)")
    # It went through the tunnel: node1's vxlan.tabby sent packets.
    stats = json.loads(n1.run(["ip", "-j", "-s", "link", "show", "dev", "vxlan.tabby"]).stdout)[0]["stats64"]
    check(stats["tx"]["packets"] > 0, f"node1's vxlan.tabby sent nothing: {stats}")
    problems = (c.agents["node2"].status() or {}).get("problems", [])
    check(not [p for p in problems if "tunnel address" in p], f"node2's problems: {problems}")
    step(f"  node2's VTEP {v2} borrowed from node1's block {b1}; node1 reaches it over VXLAN, no pod on node2")
    return v2


def body(lab, store, vxlan=False):
    c = Cluster(lab, store)
    kind = c.store.kind
    c.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})  # the API server needs it
    # Over VXLAN: pods and VTEP addresses from the one tiny pool (node2's VTEP borrowed).
    c.pool("tiny", POOL, block_size=28, vxlan="Always" if vxlan else "Never")
    via_node2 = "via 198.18.0.12"
    tunnel_borrowed = {}
    if vxlan:
        v2 = borrow_vtep(c)
        via_node2 = f"via {v2} dev vxlan.tabby"
        tunnel_borrowed = {"vxlan-tunnel-addr-node2": "node2"}
    else:
        for i, name in enumerate(["node1", "node2", "node3"], 1):
            c.add_node(name, i)
        c.wait_ready(60)

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
    check(spec.get("borrowed") == {"default/pb": "node2"} | tunnel_borrowed,
          f"{b1}'s borrowed record: {spec.get('borrowed')}")
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
    want_borrowed = {"default/pb": "node2"} | tunnel_borrowed | \
        {f"default/{p.name}": "node2" for p in results if p.node.name == "node2"}
    check(spec.get("borrowed") == want_borrowed, f"{b1}'s borrowed record: {spec.get('borrowed')}")
    c.ping_all(timeout=30)
    step(f"  six concurrent ADDs: {sorted(ips)}; all recorded")

    step("4. CNI DEL of node2's pod frees the borrowed address in node1's block")
    for p in [p for p in results if p.node.name == "node2"]:
        c.del_pod(p)
    c.del_pod(pb)
    spec = affinity(c, b1)["spec"]
    check("default/pb" not in (spec.get("allocations") or {}), f"{b1}'s allocations: {spec.get('allocations')}")
    check((spec.get("borrowed") or {}) == tunnel_borrowed, f"{b1}'s borrowed record: {spec.get('borrowed')}")
    check(spec["node"] == "node1", f"block {b1} now belongs to {spec['node']}")
    for n in ("node1", "node3"):
        wait_until(lambda n=n: host_route(c.agents[n], pb.ip) == "", 20, f"{n} drops the /32 of {pb.ip}")
    # Deleting pods is routine: the agent whose veths went must not warn of routes it
    # could not write ("No such device" while the endpoint was still there).
    with open(c.agents["node2"].log) as f:
        enodev = [l.strip() for l in f if "No such device" in l]
    check(not enodev, f"node2's agent warned while its pods were deleted: {enodev}")
    step(f"  {pb.ip} free again; the /32 is gone from node1 and node3; no warning on node2")

    step("5. strictAffinity true: node2's ADD fails with a clear error, nothing recorded")
    c.put(ipam_config(kind, True))
    # node1's block has free addresses again: without strictAffinity node2 would borrow.
    rc, msg = c.failed_add("node2", "pd")
    check(rc != 0, "CNI ADD on node2 succeeded under strictAffinity true")
    check("spec.strictAffinity is true" in msg, f"the CNI error: {msg}")
    check("default/pd" not in c.allocations(), f"an address was recorded for pd: {c.allocations().get('default/pd')}")
    step(f"  CNI ADD refused: {msg}")
    if vxlan:
        # A new node has no block to claim and may not borrow its VTEP: a problem says why.
        c.add_node("node4", 4, extra=GC)
        c.agents["node4"].wait_ready(60)

        def strict_problem():
            return [p for p in (c.agents["node4"].status() or {}).get("problems", [])
                    if "no VXLAN tunnel address" in p and "spec.strictAffinity is true" in p]
        wait_until(strict_problem, 20, "tabby status on node4 names strictAffinity as why it has no VTEP")
        check(vtep(c.nodes["node4"]) is None, f"node4 has a VTEP {vtep(c.nodes['node4'])} under strictAffinity true")
        check("vxlan-tunnel-addr-node4" not in c.allocations(), "a tunnel address was recorded for node4")
        step(f"  node4 has no VTEP; tabby status: {strict_problem()[0]}")
    c.put(ipam_config(kind, False))
    pe = c.add_pod("node2", "default", "pe")
    check(in_net(pe.ip, b1) or in_net(pe.ip, b3), f"pe got {pe.ip}")
    step(f"  strictAffinity false again: pe borrows {pe.ip}")
    if vxlan:
        wait_until(lambda: vtep(c.nodes["node4"]), 30, "node4 borrows a VTEP once strictAffinity is false")
        v4 = vtep(c.nodes["node4"])
        check(c.allocations().get("vxlan-tunnel-addr-node4") == v4, f"node4's VTEP {v4}: {c.allocations()}")
        wait_until(lambda: c.nodes["node1"].run(["ping", "-c", "1", "-W", "1", v4], check_rc=False).returncode == 0,
                   20, f"node1 pings node4's VTEP {v4}")
        step(f"  node4 borrowed its VTEP {v4}; node1 reaches it")
        tunnel_lifecycle(c, v2, v4)


def ipam_check(c):
    """`tabby ipam check -o json` on node1: its leaks."""
    p = sh(c.nodes["node1"].cmd([c.bin, "ipam", "check", "-o", "json", "--config", c.agents["node1"].conf]))
    return json.loads(p.stdout)["leaks"]


def tunnel_lifecycle(c, v2, v4):
    """Steps 6 and 7 (VXLAN): a gone node's borrowed VTEP is a leak; a live node's is
    not, and is released once the node has a block of its own."""
    step("6. borrowed VTEPs of live nodes are no leak; node4 deleted: its one is, and `tabby ipam check` names it")
    leaks = ipam_check(c)
    check(not [l for l in leaks if "tunnel-addr" in l["handle"]], f"tabby ipam check: {leaks}")
    c.remove_node("node4")
    wait_until(lambda: [l for l in ipam_check(c) if l["handle"] == "vxlan-tunnel-addr-node4"], 20,
               "tabby ipam check lists node4's tunnel allocation")
    leak = next(l for l in ipam_check(c) if l["handle"] == "vxlan-tunnel-addr-node4")
    check(leak["address"] == v4 and leak["reason"] == "node node4 no longer exists", f"leak: {leak}")
    check(not [l for l in ipam_check(c) if l["handle"] == "vxlan-tunnel-addr-node2"], "node2's VTEP listed as a leak")
    step(f"  tabby ipam check: {leak['address']} {leak['handle']}: {leak['reason']}")
    wait_until(lambda: "vxlan-tunnel-addr-node4" not in c.allocations(), 20,
               "the IPAM collector releases node4's tunnel address (grace period 3 s)")
    check(c.allocations().get("vxlan-tunnel-addr-node2") == v2, f"node2's VTEP allocation went too: {c.allocations()}")
    step(f"  the collector released {v4}; node2's {v2} stays")

    step("7. node2 gets a block of its own: its VTEP moves there and the borrowed one is released")
    # A second VXLAN pool: node2 can claim a block of its own now.
    c.pool("more", "198.19.1.0/26", block_size=28, vxlan="Always")
    wait_until(lambda: c.blocks_of("node2"), 30, "node2 claims a block of the new pool")
    own = block_of(c, "node2")
    first = own.split("/")[0]
    wait_until(lambda: vtep(c.nodes["node2"]) == first, 30, f"node2's VTEP moves to {first}, its block's first address")
    wait_until(lambda: "vxlan-tunnel-addr-node2" not in c.allocations(), 30,
               f"node2's agent releases its borrowed VTEP {v2}")
    check(not (affinity(c, block_of(c, "node1"))["spec"].get("borrowed") or {}).get("vxlan-tunnel-addr-node2"),
          "node1's block still records node2's tunnel address as borrowed")
    addrs = json.loads(c.nodes["node2"].run(["ip", "-j", "-4", "addr", "show", "dev", "vxlan.tabby"]).stdout)
    check([a["local"] for i in addrs for a in i.get("addr_info", [])] == [first],
          f"node2's vxlan.tabby keeps a stale address: {addrs}")
    wait_until(lambda: c.nodes["node1"].run(["ping", "-c", "1", "-W", "1", first], check_rc=False).returncode == 0,
               20, f"node1 pings node2's new VTEP {first}")
    wait_until(lambda: host_route(c.agents["node1"], v2) == "", 20, f"node1 drops the /32 of {v2}")
    c.ping_all(timeout=30)  # pe (borrowed) via node2's new VTEP
    step(f"  node2's VTEP is now {first} (block {own}); {v2} released; the pods still reach each other")


def main(store, vxlan=False):
    label = store if isinstance(store, str) else "k8s"
    name = "agent_ipam_borrow" + ("" if label == "file" else "_" + label) + ("_vxlan" if vxlan else "")
    run_test(name, lambda lab: body(lab, store, vxlan))
