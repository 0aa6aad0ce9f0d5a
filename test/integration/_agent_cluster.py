"""_agent_cluster.py — the demo's flow as a test, on the datastore named on the
command line (file or etcd), plus what a cluster lives through:

1. three nodes register themselves and form the BGP mesh; 2 pods per node through
   the CNI plugin; every pod pings every other pod (plain routes);
2. the pool switches to VXLAN: routes move to the VXLAN device, pings pass;
3. a 4th node (label zone=b) joins with a second pool (direct routing, nodeSelector
   zone == 'b'): every other node learns its block within seconds, both modes
   coexist, every pod pings every other pod;
4. a pod is deleted: its /32 goes from its node, its WorkloadEndpoint from the store;
5. a node is removed (agent stopped, Node and block claims deleted): every other
   node drops its routes and its BGP session.
"""
import ipaddress
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402


def block_routes(agent, pattern):
    return re.findall(r"^(\S+/26) " + pattern, agent.kernel_routes(), re.M)


def interfaces_as_a_user_reads_them(c):
    """/readyz, /metrics, `tabby ipam` and `tabby endpoints` on node1 agree with the cluster."""
    a = c.agents["node1"]
    status, body = a.http_get("/readyz")
    check(status == 200 and body.strip() == "ok", f"/readyz on a ready node: {status} {body!r}")
    check(a.http_get("/livez")[0] == 200, "/livez")
    status, metrics = a.http_get("/metrics")
    check(status == 200, f"/metrics answered {status}")
    for want in ('tabby_bgp_sessions{state="Established"} 2', "tabby_datastore_in_sync 1", "tabby_dataplane_in_sync 1",
                 "tabby_ipam_addresses_used{pool=\"default-ipv4-ippool\"} 2"):
        check(want in metrics, f"/metrics lacks {want!r}:\n{metrics[:3000]}")
    blocks = (a.api("ipam") or {}).get("blocks", [])
    check(sorted(b["node"] for b in blocks) == ["node1", "node2", "node3"] and all(int(b["used"]) == 2 for b in blocks),
          f"tabby ipam: want one block per node with 2 addresses used, got {blocks}")
    eps = (a.api("endpoints") or {}).get("endpoints", [])
    want = sorted(p.ip for p in c.pods)
    check(sorted(ip for e in eps for ip in e.get("ips", [])) == want, f"tabby endpoints: {eps}, want IPs {want}")
    step("/readyz, /metrics, tabby ipam and tabby endpoints on node1 agree with the cluster")


def body(lab, store):
    c = Cluster(lab, store)
    default_pool = c.pool("default-ipv4-ippool", "198.19.0.0/16")
    for i in (1, 2, 3):
        c.add_node(f"node{i}", i)
    c.wait_ready()
    wait_until(lambda: all(len(a.established_peers()) == 2 for a in c.agents.values()), 30, "full mesh (2 peers each)")
    step("3 agents ready, full mesh up")

    for i in (1, 2, 3):
        for p in (1, 2):
            c.add_pod(f"node{i}", "default", f"web-{i}-{p}", labels={"app": "web"})
    wait_until(lambda: all(len(block_routes(a, r"via 198\.18\.0\.\d+ dev \S+")) == 2 for a in c.agents.values()), 20,
               "each node routes the 2 other nodes' blocks directly")
    c.ping_all()
    interfaces_as_a_user_reads_them(c)

    step("pool -> VXLAN")
    default_pool["spec"]["vxlanMode"] = "Always"
    c.put(default_pool)
    wait_until(lambda: all(len(block_routes(a, r"via \S+ dev vxlan\.tabby onlink")) == 2 for a in c.agents.values()),
               20, "block routes via vxlan.tabby on every node")
    c.ping_all()

    step("a 4th node with a second pool (direct routing, nodeSelector zone == 'b')")
    c.pool("b-pool", "198.20.0.0/16", node_selector="zone == 'b'")
    c.add_node("node4", 4, labels={"zone": "b"})
    c.agents["node4"].wait_ready(40)
    t0 = time.monotonic()
    pod4 = c.add_pod("node4", "default", "web-4-1", labels={"app": "web"})
    check(pod4.ip.startswith("198.20."), f"node4's pod got {pod4.ip}, not an address of b-pool (198.20.0.0/16)")
    block4 = str(ipaddress.ip_network(f"{pod4.ip}/26", strict=False))
    others = [c.agents[n] for n in ("node1", "node2", "node3")]
    wait_until(lambda: all(any(r == block4 for r in block_routes(a, r"via 198\.18\.0\.14 dev eth0"))
                           for a in others), 10, "every node routes node4's b-pool block directly")
    step(f"every node learned node4's block {time.monotonic() - t0:.2f} s after its first pod was attached")
    check(all(len(block_routes(a, r"via \S+ dev vxlan\.tabby onlink")) == 2 for a in others),
          "the VXLAN routes of the default pool stayed in place beside the direct ones")
    wait_until(lambda: len(c.agents["node4"].established_peers()) == 3, 30, "node4 in the mesh")
    c.ping_all()

    step("a pod is deleted")
    gone = next(p for p in c.pods if p.name == "web-1-1")
    c.del_pod(gone)
    wait_until(lambda: f"{gone.ip} dev" not in c.agents["node1"].kernel_routes(), 10, f"/32 of {gone.ip} removed")
    wait_until(lambda: not any('"web-1-1"' in t or "name: web-1-1" in t
                               for t in c.store.objects("WorkloadEndpoint.tabby.dev")), 10, "its WorkloadEndpoint removed")
    c.ping_all()

    step("node3 is removed")
    # node3's block is the one both node1 and node2 route as remote (the intersection;
    # a difference of the two sets would pick node2's own block).
    node3_blocks = set(block_routes(c.agents["node1"], r"via \S+ dev vxlan\.tabby onlink")) & \
        set(block_routes(c.agents["node2"], r"via \S+ dev vxlan\.tabby onlink"))
    check(len(node3_blocks) == 1, f"node3's block not identified: {node3_blocks}")
    c.remove_node("node3")
    remaining = [c.agents[n] for n in ("node1", "node2", "node4")]
    blk = node3_blocks.pop()
    wait_until(lambda: all(blk not in a.kernel_routes() for a in remaining), 15, f"routes to node3's block {blk} removed")
    wait_until(lambda: all("198.18.0.13" not in [p["peerAddress"] for p in a.status().get("peers", [])]
                           for a in remaining), 15, "sessions to node3 removed")
    c.ping_all()


def main(store):
    run_test(f"agent_cluster_{store}", lambda lab: body(lab, store))
