#!/usr/bin/env python3
"""agent_lb_ips_k8s.py — BGPConfiguration serviceLoadBalancerIPs on the kubernetes
datastore (the API server stand-in of agent_cluster_k8s.py: v1 Services and
discovery.k8s.io/v1 EndpointSlices listed and watched): see _agent_lb_ips.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_lb_ips import run  # noqa: E402
import agent_cluster_k8s as ak  # noqa: E402
from tabbytest import run_test  # noqa: E402

run_test("agent_lb_ips_k8s", lambda lab: run(lab, lambda lab_, sw: ak.K8sStore(lab_, sw)))
