#!/usr/bin/env python3
"""agent_bgp_secrets_k8s.py — BGP passwords from Secrets on the kubernetes datastore
(the API server stand-in _k8s_server.py; the agents list and watch
/api/v1/namespaces/tabby-system/secrets only): see _agent_bgp_secrets.py. Also
checks that no agent asked for Secrets outside that namespace."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_bgp_secrets import run  # noqa: E402
from _k8s_server import Server, State, make_cert  # noqa: E402
from tabbytest import run_test  # noqa: E402
from tabbytest.cluster import ETCD_IP, qualified_kind  # noqa: E402
from tabbytest.core import check, fail, step  # noqa: E402

API_IP, API_PORT, TOKEN = ETCD_IP, 6443, "tabby-secrets-token"
RESOURCES = {
    "/api/v1/nodes": ("v1", "Node", False),
    "/api/v1/pods": ("v1", "Pod", True),
    "/api/v1/namespaces": ("v1", "Namespace", False),
    "/api/v1/secrets": ("v1", "Secret", True),
    "/apis/networking.k8s.io/v1/networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy", True),
    "/apis/crd.projectcalico.org/v1/bgpconfigurations": ("crd.projectcalico.org/v1", "BGPConfiguration", False),
    "/apis/crd.projectcalico.org/v1/bgppeers": ("crd.projectcalico.org/v1", "BGPPeer", False),
    "/apis/crd.projectcalico.org/v1/bgpfilters": ("crd.projectcalico.org/v1", "BGPFilter", False),
    "/apis/crd.projectcalico.org/v1/ippools": ("crd.projectcalico.org/v1", "IPPool", False),
    "/apis/crd.projectcalico.org/v1/nodes": ("crd.projectcalico.org/v1", "Node", False),
    "/apis/crd.projectcalico.org/v1/networkpolicies": ("crd.projectcalico.org/v1", "NetworkPolicy", True),
    "/apis/crd.projectcalico.org/v1/globalnetworkpolicies": ("crd.projectcalico.org/v1", "GlobalNetworkPolicy", False),
    "/apis/tabby.dev/v1/blockaffinities": ("tabby.dev/v1", "BlockAffinity", False),
    "/apis/tabby.dev/v1/workloadendpoints": ("tabby.dev/v1", "WorkloadEndpoint", True),
    "/apis/tabby.dev/v1/ipamleases": ("tabby.dev/v1", "IPAMLease", False),
}
PATH_OF = {qualified_kind(api, kind): p for p, (api, kind, _) in RESOURCES.items()}


class K8sStore:
    """The stand-in API server in its own namespace on the bridge, as a Cluster store."""
    kind = "kubernetes"

    def __init__(self, lab, sw):
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
        self.state = State(RESOURCES, TOKEN)
        self.server = Server(self.state, self.ca, key, port=API_PORT, host=API_IP, netns=self.node.ns)
        self.server.start()
        self.label = "k8s-apiserver"
        lab.track(self)

    def stop(self):
        self.server.stop()

    def log_files(self):
        return []

    def config(self):
        return {"type": "kubernetes", "server": f"https://{API_IP}:{API_PORT}", "tokenFile": self.token_file,
                "caFile": self.ca}

    def put(self, obj):
        path = PATH_OF.get(qualified_kind(obj["apiVersion"], obj["kind"]))
        if not path:
            fail(f"the stand-in serves no {obj['apiVersion']} {obj['kind']}")
        self.state.put(path, {k: v for k, v in json.loads(json.dumps(obj)).items() if k not in ("apiVersion", "kind")})

    def delete(self, obj_id):
        k, ns, name = obj_id
        if self.state.delete(PATH_OF[k], ns, name) is None:
            fail(f"no {obj_id} on the API server")


def body(lab):
    store = {}

    def make(lab_, sw):
        store["s"] = K8sStore(lab_, sw)
        return store["s"]

    run(lab, make)
    st = store["s"].state
    with st.cond:
        secret_reqs = sorted({p for _, p, _ in st.requests if p.endswith("/secrets") or "/secrets/" in p})
    check(secret_reqs == ["/api/v1/namespaces/tabby-system/secrets"],
          f"the agents asked for Secrets outside tabby-system: {secret_reqs}")
    step(f"Secrets read from one namespace only: {secret_reqs}")


run_test("agent_bgp_secrets_k8s", body)
