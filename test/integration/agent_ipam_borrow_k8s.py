#!/usr/bin/env python3
"""agent_ipam_borrow_k8s.py — IPAM borrowing (strictAffinity false) of _agent_ipam_borrow.py on the k8s datastore."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_borrow import main  # noqa: E402
from agent_cluster_k8s import K8sStore  # noqa: E402

main(K8sStore)
