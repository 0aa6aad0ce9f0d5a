#!/usr/bin/env python3
"""agent_bgp_secrets_k8s.py — BGP passwords from Secrets on the kubernetes datastore
(the API server stand-in _k8s_server.py; the agents list and watch
/api/v1/namespaces/tabby-system/secrets only): see _agent_bgp_secrets.py. Also
checks that no agent asked for Secrets outside that namespace."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_bgp_secrets import run  # noqa: E402
import agent_cluster_k8s as ak  # noqa: E402
from tabbytest import run_test  # noqa: E402
from tabbytest.core import check, step  # noqa: E402

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


def body(lab):
    store = {}

    def make(lab_, sw):
        store["s"] = ak.K8sStore(lab_, sw, RESOURCES)
        return store["s"]

    run(lab, make)
    st = store["s"].state
    with st.cond:
        secret_reqs = sorted({p for _, p, _ in st.requests if p.endswith("/secrets") or "/secrets/" in p})
    check(secret_reqs == ["/api/v1/namespaces/tabby-system/secrets"],
          f"the agents asked for Secrets outside tabby-system: {secret_reqs}")
    step(f"Secrets read from one namespace only: {secret_reqs}")


run_test("agent_bgp_secrets_k8s", body)
