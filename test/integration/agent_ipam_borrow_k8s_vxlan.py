#!/usr/bin/env python3
"""agent_ipam_borrow_k8s_vxlan.py — agent_ipam_borrow_vxlan.py on the kubernetes datastore: the
borrowed VTEP address is written by compare-and-swap on the resourceVersion."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_borrow import main  # noqa: E402
from agent_cluster_k8s import K8sStore  # noqa: E402

main(K8sStore, vxlan=True)
