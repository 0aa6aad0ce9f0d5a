#!/usr/bin/env python3
"""agent_ipam_gc_k8s.py — the leader-elected IPAM garbage collector of _agent_ipam_gc.py on
the kubernetes datastore (the API server stand-in of agent_cluster_k8s.py, serving
tabby.dev/v1 ipamleases as the CRD in deploy/kubernetes/tabby.yaml does)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_gc import main  # noqa: E402
from agent_cluster_k8s import K8sStore  # noqa: E402

main(K8sStore)
