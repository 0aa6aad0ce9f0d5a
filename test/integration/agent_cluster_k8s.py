#!/usr/bin/env python3
"""agent_cluster_k8s.py — `tabby agent` and the tabby CNI plugin end to end on the
kubernetes datastore. No real API server can be installed here: the server is the
RECORDED-PROTOCOL stand-in _k8s_server.py (HTTPS with a CA made by openssl now,
Bearer token, paged lists, watch streams with bookmarks, POST/PUT/DELETE with the
API server's optimistic concurrency), listening at 198.18.0.250:6443 in its own
namespace on the cluster bridge, where every node (and the CNI plugin run in it)
reaches it.

The cluster is seeded the way a Calico cluster on Kubernetes holds it: a core v1
Namespace and core v1 Nodes as the kubelet registers them (node1 carries Calico's
projectcalico.org/IPv4Address annotation; node2 and node3 do not), Calico's
crd.projectcalico.org/v1 IPPool and BGPConfiguration, core v1 Pods. Then:
1. three agents: node2/node3 register a Calico Node (POST of the CRD), the BGP mesh
   comes up (2 peers each);
2. 2 pods per node through the CNI plugin: each node claims a block (POST of a
   tabby.dev/v1 BlockAffinity), the second pod's address is a replace of the
   block (GET, then PUT with its resourceVersion: never refused with 422/409
   left unresolved), a WorkloadEndpoint per pod; every node routes the other
   nodes' blocks; every pod pings every other pod;
3. the IPPool CRD is modified (vxlanMode Always; a watch MODIFIED event): routes
   move to vxlan.tabby, pings pass;
   (policy is enforced on every node) a crd.projectcalico.org/v1 Tier (order 100)
   holding an ICMP deny on the web pods, beside a default-tier policy allowing the
   same ICMP: ping is denied (the Tier's order, read from the API, puts it first);
   a v1 Service and a discovery.k8s.io/v1 EndpointSlice listing web-1-1 with a
   policy denying ICMP from `source.services`: web-1-1 cannot ping, web-1-2 can;
   all removed, pings pass;
   a HostEndpoint on node2's eth0, a GlobalNetworkSet holding node1's address and a
   host policy denying ICMP from it: node1 cannot ping node2's host address,
   node3 can, BGP stays up (failsafe), pods still ping; the HostEndpoint deleted,
   node1 pings node2 again;
4. a pod is deleted (CNI DEL): its WorkloadEndpoint is deleted on the server, its
   address leaves the block's allocations, its /32 goes; pings pass;
5. node3 is removed (agent stopped, Node CRD, core Node and block claims deleted):
   node1 and node2 drop its routes and session; pings pass;
6. the API server refused no write as malformed (no 400/422/500), and the CNI
   plugin's one-shot lists opened no watches (only the agents' own, one per resource).
"""
import ipaddress
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _k8s_server import Server, State, make_cert  # noqa: E402
from tabbytest.cluster import ETCD_IP, qualified_kind  # noqa: E402
from tabbytest.core import check, fail, run_test, step, wait_until  # noqa: E402

API_IP = ETCD_IP  # the cluster's one store address on the bridge (198.18.0.250)
API_PORT = 6443
TOKEN = "tabby-e2e-token"

# Every resource tabby's kubernetes datastore lists and watches by default
# (felix/datastore/wire.cpp default_k8s_resources), as a cluster with Calico's
# and tabby's CRDs installed serves them: path → (apiVersion, kind, namespaced).
RESOURCES = {
    "/api/v1/nodes": ("v1", "Node", False),
    "/api/v1/pods": ("v1", "Pod", True),
    "/api/v1/namespaces": ("v1", "Namespace", False),
    "/api/v1/serviceaccounts": ("v1", "ServiceAccount", True),
    "/api/v1/services": ("v1", "Service", True),
    "/apis/discovery.k8s.io/v1/endpointslices": ("discovery.k8s.io/v1", "EndpointSlice", True),
    "/apis/networking.k8s.io/v1/networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy", True),
    "/apis/crd.projectcalico.org/v1/bgpconfigurations": ("crd.projectcalico.org/v1", "BGPConfiguration", False),
    "/apis/crd.projectcalico.org/v1/bgppeers": ("crd.projectcalico.org/v1", "BGPPeer", False),
    "/apis/crd.projectcalico.org/v1/bgpfilters": ("crd.projectcalico.org/v1", "BGPFilter", False),
    "/apis/crd.projectcalico.org/v1/ippools": ("crd.projectcalico.org/v1", "IPPool", False),
    "/apis/crd.projectcalico.org/v1/ipamconfigs": ("crd.projectcalico.org/v1", "IPAMConfig", False),
    "/apis/crd.projectcalico.org/v1/nodes": ("crd.projectcalico.org/v1", "Node", False),
    "/apis/crd.projectcalico.org/v1/networkpolicies": ("crd.projectcalico.org/v1", "NetworkPolicy", True),
    "/apis/crd.projectcalico.org/v1/globalnetworkpolicies": ("crd.projectcalico.org/v1", "GlobalNetworkPolicy", False),
    "/apis/crd.projectcalico.org/v1/tiers": ("crd.projectcalico.org/v1", "Tier", False),
    "/apis/crd.projectcalico.org/v1/networksets": ("crd.projectcalico.org/v1", "NetworkSet", True),
    "/apis/crd.projectcalico.org/v1/globalnetworksets": ("crd.projectcalico.org/v1", "GlobalNetworkSet", False),
    "/apis/crd.projectcalico.org/v1/hostendpoints": ("crd.projectcalico.org/v1", "HostEndpoint", False),
    "/apis/tabby.dev/v1/blockaffinities": ("tabby.dev/v1", "BlockAffinity", False),
    "/apis/tabby.dev/v1/workloadendpoints": ("tabby.dev/v1", "WorkloadEndpoint", True),
    "/apis/tabby.dev/v1/ipamleases": ("tabby.dev/v1", "IPAMLease", False),
}
CORE_NODES = "/api/v1/nodes"
CALICO_NODES = "/apis/crd.projectcalico.org/v1/nodes"
BLOCKS = "/apis/tabby.dev/v1/blockaffinities"
WEPS = "/apis/tabby.dev/v1/workloadendpoints"


class K8sStore:
    """The stand-in API server in its own namespace on the bridge, as a Cluster store."""
    kind = "kubernetes"

    def __init__(self, lab, sw, resources=None):
        # resources: the collections served (path -> (apiVersion, kind, namespaced));
        # default this test's RESOURCES.
        resources = resources or RESOURCES
        self.path_of = {qualified_kind(api, kind): p for p, (api, kind, _) in resources.items()}
        self.node = lab.node("apisrv")
        lab.join(sw, self.node, f"{API_IP}/24")
        d = os.path.join(lab.tmp, "k8s")
        os.makedirs(d)
        try:
            self.ca, key = make_cert(d, "apiserver", API_IP)
        except RuntimeError as e:
            fail(str(e))
        self.token_file = os.path.join(d, "token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.state = State(resources, TOKEN)
        self.server = Server(self.state, self.ca, key, port=API_PORT, host=API_IP, netns=self.node.ns)
        self.server.start()
        self.label = "k8s-apiserver"
        lab.track(self)  # stopped with the lab, before its namespace goes

    def stop(self):
        self.server.stop()

    def log_files(self):
        return []

    def config(self):
        return {"type": "kubernetes", "server": f"https://{API_IP}:{API_PORT}", "tokenFile": self.token_file,
                "caFile": self.ca}

    def _path(self, obj):
        api, kind = obj["apiVersion"], obj["kind"]
        p = self.path_of.get(qualified_kind(api, kind))
        if not p:
            fail(f"the stand-in serves no {api} {kind}")
        return p

    def put(self, obj):
        """As `kubectl apply` of a manifest: a Calico v3 manifest goes in as its
        crd.projectcalico.org/v1 object (State.put sets the apiVersion)."""
        path = self._path(obj)
        obj = {k: v for k, v in json.loads(json.dumps(obj)).items() if k not in ("apiVersion", "kind")}
        self.state.put(path, obj)

    def delete(self, obj_id):
        k, ns, name = obj_id
        if self.state.delete(self.path_of[k], ns, name) is None:
            fail(f"no {obj_id} on the API server")

    def objects(self, kind):
        with self.state.cond:
            return [json.dumps(o) for o in self.state.objects[self.path_of[kind]].values()]

    def get(self, kind, ns, name):
        return self.state.get(self.path_of[kind], ns, name)


def block_routes(agent, pattern):
    return re.findall(r"^(\S+/26) " + pattern, agent.kernel_routes(), re.M)


def body(lab):
    from tabbytest.cluster import Cluster  # noqa: PLC0415
    c = Cluster(lab, K8sStore)
    st = c.store.state
    st.put("/api/v1/namespaces", {"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}},
                                  "spec": {"finalizers": ["kubernetes"]}})
    for i in (1, 2, 3):
        meta = {"name": f"node{i}", "labels": {"kubernetes.io/hostname": f"node{i}", "kubernetes.io/os": "linux"}}
        if i == 1:  # as calico-node leaves it on a Kubernetes node
            meta["annotations"] = {"projectcalico.org/IPv4Address": "198.18.0.11/24"}
        st.put(CORE_NODES, {"metadata": meta, "spec": {"podCIDR": f"10.244.{i}.0/24"},
                            "status": {"addresses": [{"type": "InternalIP", "address": f"198.18.0.{10 + i}"}]}})
    st.put("/apis/crd.projectcalico.org/v1/bgpconfigurations",
           {"metadata": {"name": "default"}, "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": True,
                                                      "logSeverityScreen": "Info"}})
    default_pool = c.pool("default-ipv4-ippool", "198.19.0.0/16")

    for i in (1, 2, 3):  # policy enforced: a Tier must arrive from the API server (step below)
        c.add_node(f"node{i}", i, extra={"dataplane": {"enabled": True, "policy": True}})
    c.wait_ready()
    wait_until(lambda: all(len(a.established_peers()) == 2 for a in c.agents.values()), 30, "full mesh (2 peers each)")
    regs = sorted(n for _, n in st.objects[CALICO_NODES])
    check(regs == ["node2", "node3"], f"node2 and node3 register Calico Nodes (node1 has the annotation): {regs}")
    for n in ("node2", "node3"):
        spec = st.get(CALICO_NODES, "", n)["spec"]
        check(spec.get("bgp", {}).get("ipv4Address") == f"198.18.0.{10 + int(n[-1])}/24", f"{n}'s Calico Node: {spec}")
    step("3 agents ready on the kubernetes datastore, node2/node3 registered, full mesh up")

    for i in (1, 2, 3):
        for p in (1, 2):
            c.add_pod(f"node{i}", "default", f"web-{i}-{p}", labels={"app": "web"})
    blocks = {k[1]: b for k, b in st.objects[BLOCKS].items()}
    check(len(blocks) == 3 and sorted(b["spec"]["node"] for b in blocks.values()) == ["node1", "node2", "node3"],
          f"one claimed block per node on the server: {list(blocks.values())}")
    check(all(len(b["spec"].get("allocations", {})) == 2 for b in blocks.values()),
          f"each block holds its node's 2 pods: {[b['spec'] for b in blocks.values()]}")
    for pod in c.pods:
        w = st.get(WEPS, "default", pod.name)
        check(w and w["spec"].get("node") == pod.node.name and pod.ip in json.dumps(w["spec"]),
              f"WorkloadEndpoint of {pod}: {w}")
    block_puts = st.writes("PUT", BLOCKS)
    check(len(block_puts) >= 3 and all(b["metadata"].get("resourceVersion") for b in block_puts),
          f"each node's second address is a PUT of its block with the stored resourceVersion: {block_puts}")
    wait_until(lambda: all(len(block_routes(a, r"via 198\.18\.0\.\d+ dev \S+")) == 2 for a in c.agents.values()), 20,
               "each node routes the 2 other nodes' blocks directly")
    c.ping_all()

    step("IPPool CRD modified: vxlanMode Always")
    default_pool["spec"]["vxlanMode"] = "Always"
    c.put(default_pool)
    wait_until(lambda: all(len(block_routes(a, r"via \S+ dev vxlan\.tabby onlink")) == 2 for a in c.agents.values()),
               20, "block routes via vxlan.tabby on every node")
    c.ping_all()

    step("a Tier and a policy in it arrive from the API server")
    tier = {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "security"},
            "spec": {"order": 100}}
    gnp = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
           "metadata": {"name": "security.deny-web-icmp"},
           "spec": {"tier": "security", "order": 10, "selector": "app == 'web'", "types": ["Ingress"],
                    "ingress": [{"action": "Deny", "protocol": "ICMP"}]}}
    # A default-tier policy allows the same ICMP: only the Tier object's order
    # (100, before the default tier's 1,000,000) puts the deny first; a tier
    # with no Tier object evaluates after the default tier, and ping would pass.
    allow = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
             "metadata": {"name": "allow-web-icmp"},
             "spec": {"order": 10, "selector": "app == 'web'", "types": ["Ingress"],
                      "ingress": [{"action": "Allow", "protocol": "ICMP"}]}}
    c.put(allow)
    c.put(tier)
    c.put(gnp)
    a, b = c.pods[0], c.pods[3]  # node1 -> node2

    def tiers_on(agent):
        out = agent.api("policy") or {}
        return {p.get("tier") for e in out.get("endpoints", []) for p in e.get("policies", [])}
    wait_until(lambda: all("security" in tiers_on(ag) for ag in c.agents.values()), 20,
               "every agent shows the security tier's policy on its pods (tabby policy)")
    wait_until(lambda: not c.ping(a, b.ip, count=1), 10,
               f"{a} -> {b}: ICMP denied by the security tier (order 100) before the default tier's allow")
    c.delete(gnp)
    c.delete(tier)
    c.delete(allow)
    c.ping_all()

    step("a Service's EndpointSlice and a policy's services: match arrive from the API server")
    src = c.pods[0]  # web-1-1: the service's one endpoint
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.80", "ports": [{"name": "http", "port": 80}]}}
    es = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
          "addressType": "IPv4", "endpoints": [{"addresses": [src.ip]}], "ports": [{"name": "http", "port": 80}]}
    deny_svc = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "deny-icmp-from-web-svc"},
                "spec": {"order": 10, "selector": "app == 'web'", "types": ["Ingress"],
                         "ingress": [{"action": "Deny", "protocol": "ICMP",
                                      "source": {"services": {"name": "web", "namespace": "default"}}},
                                     {"action": "Allow"}]}}
    for obj in (svc, es, deny_svc):
        c.put(obj)
    other = c.pods[1]  # web-1-2: not an endpoint of the service
    wait_until(lambda: not c.ping(src, b.ip, count=1), 10, f"{src} -> {b}: denied (source is service web's endpoint)")
    check(c.ping(other, b.ip, count=2), f"{other} -> {b}: allowed (not an endpoint of service web)")
    for obj in (deny_svc, es, svc):
        c.delete(obj)
    c.ping_all()

    step("a HostEndpoint, a GlobalNetworkSet and a host policy arrive from the API server")
    # node2's fabric interface becomes a host endpoint; a GlobalNetworkSet names
    # node1's address; the host policy denies ICMP from that set into node2 and
    # allows the rest (BGP and the API server stay failsafe anyway).
    hep = {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
           "metadata": {"name": "node2-eth0", "labels": {"role": "node"}},
           "spec": {"node": "node2", "interfaceName": "eth0", "expectedIPs": ["198.18.0.12"]}}
    gns = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
           "metadata": {"name": "node1-addr", "labels": {"peer": "node1"}}, "spec": {"nets": ["198.18.0.11/32"]}}
    host_pol = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "node-deny-icmp-from-node1"},
                "spec": {"order": 10, "selector": "role == 'node'", "types": ["Ingress", "Egress"],
                         "ingress": [{"action": "Deny", "protocol": "ICMP", "source": {"selector": "peer == 'node1'"}},
                                     {"action": "Allow"}],
                         "egress": [{"action": "Allow"}]}}
    n1, n2, n3 = c.nodes["node1"], c.nodes["node2"], c.nodes["node3"]

    def node_ping(src, dst):
        return src.run(["ping", "-c", "1", "-W", "1", "-q", dst], check_rc=False).returncode == 0
    check(node_ping(n1, "198.18.0.12"), "before: node1 pings node2's host address")
    for obj in (gns, host_pol, hep):
        c.put(obj)
    wait_until(lambda: not node_ping(n1, "198.18.0.12"), 15,
               "node1 -> node2 host: ICMP denied by the host policy on node2's HostEndpoint (read from the API server)")
    check(node_ping(n3, "198.18.0.12"), "node3 -> node2 host: allowed (not in the GlobalNetworkSet)")
    check(node_ping(n2, "198.18.0.11"), "node2 -> node1: allowed (egress Allow; the ICMP reply is conntrack'd)")
    check(len(c.agents["node2"].established_peers()) == 2, "node2 keeps its BGP sessions (failsafe 179)")
    c.ping_all()
    c.delete(hep)
    wait_until(lambda: node_ping(n1, "198.18.0.12"), 15, "HostEndpoint deleted: node1 pings node2's host again")
    for obj in (host_pol, gns):
        c.delete(obj)

    step("a pod is deleted (CNI DEL)")
    gone = next(p for p in c.pods if p.name == "web-1-1")
    c.del_pod(gone)
    check(st.get(WEPS, "default", "web-1-1") is None, "its WorkloadEndpoint deleted on the API server")
    b1 = next(b for b in st.objects[BLOCKS].values() if b["spec"]["node"] == "node1")
    check(gone.ip not in b1["spec"].get("allocations", {}).values() and len(b1["spec"].get("allocations", {})) == 1,
          f"{gone.ip} released from node1's block: {b1['spec']}")
    wait_until(lambda: f"{gone.ip} dev" not in c.agents["node1"].kernel_routes(), 10, f"/32 of {gone.ip} removed")
    c.ping_all()

    step("node3 is removed")
    node3_block = next(b["spec"]["cidr"] for b in st.objects[BLOCKS].values() if b["spec"]["node"] == "node3")
    c.remove_node("node3")  # stops the agent, deletes the Calico Node and node3's BlockAffinities
    st.delete(CORE_NODES, "", "node3")
    remaining = [c.agents[n] for n in ("node1", "node2")]
    check(str(ipaddress.ip_network(node3_block)) == node3_block, f"block cidr {node3_block}")
    wait_until(lambda: all(node3_block not in a.kernel_routes() for a in remaining), 15,
               f"routes to node3's block {node3_block} removed")
    wait_until(lambda: all("198.18.0.13" not in [p["peerAddress"] for p in a.status().get("peers", [])]
                           for a in remaining), 15, "sessions to node3 removed")
    c.ping_all()

    with st.cond:
        bad = [r for r in st.responses if r[2] in (400, 422, 500)]
        conflicts = [r for r in st.responses if r[2] == 409 and r[0] == "PUT"]
    check(not bad, f"the API server refused writes as malformed: {bad}")
    # Each of the 3 agents watches each resource once (the stand-in never ends a
    # stream here); the CNI plugin lists per command and stops at the Snapshot,
    # before any watch (it would leave up to 11 abandoned watch requests per
    # command otherwise).
    with st.cond:
        watches = sum(1 for m, _, q in st.requests if m == "GET" and "watch" in q)
    check(watches == 3 * len(RESOURCES),
          f"{watches} watch requests, not the agents' own {3 * len(RESOURCES)} (none of their streams ends here: "
          "did the CNI plugin's one-shot lists open watches?)")
    step(f"API server: {len(st.requests)} requests ({watches} watches), {len(conflicts)} PUT conflicts (retried), "
         f"{len(st.writes('POST', '/'))} creates, {len(st.writes('PUT', '/'))} replaces")


if __name__ == "__main__":  # cni_podman.py imports K8sStore
    run_test("agent_cluster_k8s", body)
