#!/usr/bin/env python3
"""deploy_rr_recipe.py — the README's "Run as a route reflector" recipe for the
DaemonSet, on the kubernetes datastore (the API stand-in): node1's core Node gets
the annotation projectcalico.org/RouteReflectorClusterID and the label
route-reflector=true (what `kubectl annotate` / `kubectl label` set), the mesh is
turned off in the BGPConfiguration and one BGPPeer peers every node with the
reflectors. Checks: node2 and node3 each have exactly one session, with node1;
node1 has both; a pod on node2 and one on node3 reach each other through routes
node1 reflected (node2 and node3 never peer)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_cluster_k8s as ak  # noqa: E402
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402


def body(lab):
    c = Cluster(lab, ak.K8sStore)
    st = c.store.state
    st.put("/api/v1/namespaces", {"metadata": {"name": "default"}})
    for i in (1, 2, 3):
        meta = {"name": f"node{i}", "labels": {"kubernetes.io/os": "linux"}}
        if i == 1:  # the recipe
            meta["labels"]["route-reflector"] = "true"
            meta["annotations"] = {"projectcalico.org/RouteReflectorClusterID": "244.0.0.1"}
        st.put(ak.CORE_NODES, {"metadata": meta,
                               "status": {"addresses": [{"type": "InternalIP", "address": f"198.18.0.{10 + i}"}]}})
    st.put("/apis/crd.projectcalico.org/v1/bgpconfigurations",
           {"metadata": {"name": "default"}, "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512}})
    st.put("/apis/crd.projectcalico.org/v1/bgppeers",
           {"metadata": {"name": "peer-with-route-reflectors"},
            "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}})
    c.pool("default-ipv4-ippool", "198.19.0.0/16")
    for i in (1, 2, 3):
        c.add_node(f"node{i}", i)
    c.wait_ready()
    want = {"node1": ["198.18.0.12", "198.18.0.13"], "node2": ["198.18.0.11"], "node3": ["198.18.0.11"]}
    wait_until(lambda: all(c.agents[n].established_peers() == p for n, p in want.items()), 30,
               f"sessions {want}")
    step("node2 and node3 peer only with the annotated, labelled reflector node1")
    pods = [c.add_pod("node2", "default", "a"), c.add_pod("node3", "default", "b")]
    c.ping_all(pods)
    r = c.agents["node2"].api("routes") or {}
    check("244.0.0.1" in str(r), f"node2's route to node3's block carries node1's cluster ID 244.0.0.1: {r}")
    for n, p in want.items():
        check(c.agents[n].established_peers() == p, f"{n}'s sessions stayed {p}")


run_test("deploy_rr_recipe", body)
