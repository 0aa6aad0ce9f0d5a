"""_agent_rr_runtime.py — Calico's route-reflector recipe applied to a RUNNING
cluster, on the datastore named by the caller (etcd or file): no agent restart.

1. four agents start with the default node-to-node mesh and register their own
   Node resources; a pod on each node; every pod pings every other pod;
2. the operator makes node1 a reflector as Calico documents it: label
   route-reflector=true and spec.bgp.routeReflectorClusterID on its (registered)
   Node, one BGPPeer (nodeSelector all(), peerSelector route-reflector == 'true'),
   then the mesh off (BGPConfiguration nodeToNodeMeshEnabled: false). Within
   seconds: node1 has its 3 clients Established (marked as clients), each client
   has exactly node1, every client's Loc-RIB holds the other clients' blocks
   reflected with CLUSTER_LIST = the cluster ID; pods ping; no problem listed,
   /readyz 200; the agents' processes are the same ones;
3. the role is removed again (label and cluster ID gone, BGPPeer deleted, mesh
   on): back to a full mesh of 3 sessions per node with plain (unreflected)
   routes; pods ping.
"""
import ipaddress
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabbytest.cluster import Cluster  # noqa: E402
from tabbytest.core import check, run_test, step, wait_until  # noqa: E402

CLUSTER_ID = "244.0.0.1"
NODES = {"node1": 1, "node2": 2, "node3": 3, "node4": 4}
IP = {n: f"198.18.0.{10 + i}" for n, i in NODES.items()}


def load(text):
    if text.lstrip().startswith("{"):
        return json.loads(text)
    import yaml  # noqa: PLC0415
    return yaml.safe_load(text)


def edit_node(c, name, mutate):
    """Edits the Node resource where it lives, as an operator's edit would: the
    agent registered it (etcd key, or the file datastore's state file)."""
    obj_id = ("Node.projectcalico.org", "", name)
    if c.store.kind == "etcd":
        text = c.store._ctl(["get", c.store.key(obj_id), "--print-value-only"]).stdout
        check(text.strip(), f"Node {name} was not registered by its agent")
        obj = load(text)
        mutate(obj)
        c.put(obj)
        return
    nodes = [load(t) for t in c.store.objects("Node.projectcalico.org")]
    obj = next((o for o in nodes if o["metadata"]["name"] == name), None)
    check(obj is not None, f"Node {name} was not registered by its agent")
    mutate(obj)
    if c.store.kind == "file":
        state = os.path.join(c.store.dir, "tabby-state")
        path = next((os.path.join(state, f) for f in os.listdir(state) if f.startswith("Node.projectcalico.org")
                     and f.endswith("_" + name + ".yaml")), None)
        check(path is not None, f"registered Node file of {name} missing in {state}: {os.listdir(state)}")
        tmp = os.path.join(os.path.dirname(c.store.dir), f".{name}.node.tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.rename(tmp, path)


def peer_types(agent):
    return {p["peerAddress"]: (p.get("state"), p.get("peerType", "")) for p in (agent.status() or {}).get("peers", [])}


def healthy(c, n):
    a = c.agents[n]
    st = a.status() or {}
    check(not st.get("problems"), f"{n}: problems listed: {st.get('problems')}")
    code, body = a.http_get("/readyz")
    check(code == 200, f"{n}: /readyz {code} {body!r}")


def body(lab, store):
    c = Cluster(lab, store)
    c.pool("default-ipv4-ippool", "198.19.0.0/16")
    for n, i in NODES.items():
        c.add_node(n, i)  # no Node resource: the agent registers itself
    c.wait_ready()
    wait_until(lambda: all(len(a.established_peers()) == 3 for a in c.agents.values()), 30, "full mesh (3 peers each)")
    pids = {n: a.pids() for n, a in c.agents.items()}
    pods = {n: c.add_pod(n, "default", f"pod-{n}", labels={"app": "x"}) for n in NODES}
    block = {n: str(ipaddress.ip_network(f"{p.ip}/26", strict=False)) for n, p in pods.items()}
    c.ping_all()
    step("4 agents registered themselves, full mesh, pods ping")

    # ---------------------------------------------------------------- node1 becomes the reflector
    t0 = time.monotonic()

    def make_rr(o):
        o["metadata"].setdefault("labels", {})["route-reflector"] = "true"
        o["spec"].setdefault("bgp", {})["routeReflectorClusterID"] = CLUSTER_ID
    edit_node(c, "node1", make_rr)
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "peer-with-route-reflectors"},
           "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}})
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512}})
    clients = [n for n in NODES if n != "node1"]
    client_ips = sorted(IP[n] for n in clients)

    def rr_ok():
        t = peer_types(c.agents["node1"])
        return sorted(t) == client_ips and all(s == "Established" and "client" in ty.lower() for s, ty in t.values())
    try:
        wait_until(rr_ok, 15, "node1: its 3 clients Established, marked as route-reflector clients")
    finally:
        print(f"node1 peers: {peer_types(c.agents['node1'])}")
    for n in clients:
        wait_until(lambda n=n: c.agents[n].established_peers() == [IP["node1"]]
                   and len(peer_types(c.agents[n])) == 1, 15, f"{n}: exactly one session, with node1")
    step(f"node1 reflects for 3 clients {time.monotonic() - t0:.1f} s after the label and cluster ID")

    def reflected(viewer):
        routes = {r["prefix"]: r for r in (c.agents[viewer].api("routes") or {}).get("routes", [])}
        for origin in clients:
            if origin == viewer:
                continue
            r = routes.get(block[origin])
            if not r:
                return False
            best = [p for p in r["paths"] if p.get("best")]
            if not best or best[0].get("nextHop") != IP[origin] or CLUSTER_ID not in best[0].get("clusterList", []) \
                    or best[0].get("originatorId") != IP[origin]:
                return False
        return True
    for n in clients:
        wait_until(lambda n=n: reflected(n), 15, f"{n}: the other clients' blocks reflected (CLUSTER_LIST {CLUSTER_ID})")
    c.ping_all()
    for n in NODES:
        healthy(c, n)
    for n, a in c.agents.items():
        check(a.pids() == pids[n], f"{n}: the agent was restarted ({pids[n]} -> {a.pids()})")
    step("routes reflected, pods ping, no problem, /readyz 200, no agent restarted")

    # ---------------------------------------------------------------- the role goes again
    t0 = time.monotonic()

    def unmake_rr(o):
        o["metadata"].get("labels", {}).pop("route-reflector", None)
        o["spec"].get("bgp", {}).pop("routeReflectorClusterID", None)
    edit_node(c, "node1", unmake_rr)
    c.delete(("BGPPeer.projectcalico.org", "", "peer-with-route-reflectors"))
    c.put({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
           "spec": {"nodeToNodeMeshEnabled": True, "asNumber": 64512}})

    def mesh_ok():
        for n, a in c.agents.items():
            t = peer_types(a)
            want = sorted(IP[o] for o in NODES if o != n)
            if sorted(t) != want or not all(s == "Established" and "client" not in ty.lower() for s, ty in t.values()):
                return False
        return True
    wait_until(mesh_ok, 20, "full mesh again, nobody a client")

    def plain(viewer):
        routes = {r["prefix"]: r for r in (c.agents[viewer].api("routes") or {}).get("routes", [])}
        for origin in NODES:
            if origin == viewer:
                continue
            r = routes.get(block[origin])
            best = [p for p in (r or {}).get("paths", []) if p.get("best")]
            if not best or best[0].get("nextHop") != IP[origin] or best[0].get("clusterList"):
                return False
        return True
    for n in NODES:
        wait_until(lambda n=n: plain(n), 15, f"{n}: every other block learned directly again")
    step(f"mesh back {time.monotonic() - t0:.1f} s after the role was removed")
    c.ping_all()
    for n in NODES:
        healthy(c, n)
    for n, a in c.agents.items():
        check(a.pids() == pids[n], f"{n}: the agent was restarted")
    step("pods ping, no problem, no agent restarted")


def main(store):
    run_test(f"agent_rr_runtime_{store}", lambda lab: body(lab, store))
