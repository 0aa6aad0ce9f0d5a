#!/usr/bin/env python3
"""agent_route_reflectors.py — route reflection from cluster resources, as a Calico
user sets it up: the mesh off (BGPConfiguration nodeToNodeMeshEnabled: false), two
reflector nodes (label route-reflector=true, the same routeReflectorClusterID) and
four clients, one BGPPeer (nodeSelector all(), peerSelector route-reflector ==
'true'). Checks: every client has sessions with both reflectors and with no other
client; the reflectors peer with each other (as non-clients: same cluster ID) and
with every client; each client's Loc-RIB holds every other node's block, reflected
(ORIGINATOR_ID = the originating node, CLUSTER_LIST = the cluster ID, next hop
unchanged); a pod on every node reaches every other pod."""
import ipaddress
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402

CLUSTER_ID = "244.0.0.1"


def body(lab):
    c = Cluster(lab)
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512}})
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "peer-with-route-reflectors"},
           "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}})
    c.pool("default-ipv4-ippool", "198.19.0.0/16")
    rrs = {"rr1": 1, "rr2": 2}
    clients = {"c1": 3, "c2": 4, "c3": 5, "c4": 6}
    for name, idx in rrs.items():
        c.add_node(name, idx, labels={"route-reflector": "true"}, rr_cluster_id=CLUSTER_ID)
    for name, idx in clients.items():
        c.add_node(name, idx, labels={"role": "worker"})
    ip = {n: f"198.18.0.{10 + i}" for n, i in {**rrs, **clients}.items()}
    c.wait_ready()

    rr_ips = sorted(ip[n] for n in rrs)
    for n in clients:
        wait_until(lambda n=n: c.agents[n].established_peers() == rr_ips, 30, f"{n}: sessions with both reflectors")
        peers = [p["peerAddress"] for p in c.agents[n].status()["peers"]]
        check(sorted(peers) == rr_ips, f"{n} has sessions other than the reflectors: {peers}")
    for n in rrs:
        want = sorted(v for k, v in ip.items() if k != n)
        wait_until(lambda n=n, want=want: c.agents[n].established_peers() == want, 30,
                   f"{n}: sessions with the other reflector and all 4 clients")
        types = {p["peerAddress"]: p["peerType"] for p in c.agents[n].status()["peers"]}
        other = next(ip[r] for r in rrs if r != n)
        check("client" not in types[other].lower(), f"{n} treats the other reflector as a client: {types[other]}")
        check(all("client" in types[ip[k]].lower() for k in clients), f"{n}: clients not marked as RR clients: {types}")
    step("topology: 4 clients x 2 reflectors, reflectors peered as non-clients, no client-client session")

    pods = {n: c.add_pod(n, "default", f"pod-{n}", labels={"app": "x"}) for n in list(rrs) + list(clients)}
    block = {n: str(ipaddress.ip_network(f"{p.ip}/26", strict=False)) for n, p in pods.items()}

    def reflection_problem(viewer):
        """'' when the viewer's Loc-RIB holds every other block as expected, else why not."""
        routes = {r["prefix"]: r for r in (c.agents[viewer].api("routes") or {}).get("routes", [])}
        for origin, pfx in block.items():
            if origin == viewer:
                continue
            r = routes.get(pfx)
            if not r:
                return f"{pfx} of {origin} missing (have {sorted(routes)})"
            best = [p for p in r["paths"] if p.get("best")]
            if not best or best[0].get("nextHop") != ip[origin]:
                return f"{pfx} of {origin}: best path {best} does not keep the next hop {ip[origin]}"
            # Paths through a reflector other than the originator carry ORIGINATOR_ID and
            # CLUSTER_LIST (RFC 4456 §8).
            for p in r["paths"]:
                if p.get("peerAddress") != ip[origin] and not (
                        p.get("originatorId") == ip[origin] and CLUSTER_ID in p.get("clusterList", [])):
                    return f"{pfx} of {origin}: reflected path without ORIGINATOR_ID/CLUSTER_LIST: {p}"
        return ""

    for n in clients:
        why = []
        try:
            wait_until(lambda n=n: not why.append(reflection_problem(n)) and why[-1] == "", 30,
                       f"{n}: every other node's block reflected to it")
        except Exception:
            print(f"last problem on {n}: {why[-1] if why else '?'}")
            raise
    step("every client's Loc-RIB holds the 5 other blocks, reflected with ORIGINATOR_ID and CLUSTER_LIST")
    c.ping_all()


run_test("agent_route_reflectors", body)
