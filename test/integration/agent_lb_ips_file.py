#!/usr/bin/env python3
"""agent_lb_ips_file.py — BGPConfiguration serviceLoadBalancerIPs on the file
datastore (Service and EndpointSlice manifests beside the others): see _agent_lb_ips.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_lb_ips import run  # noqa: E402
from tabbytest import run_test  # noqa: E402

run_test("agent_lb_ips_file", lambda lab: run(lab, "file"))
