#!/usr/bin/env python3
"""agent_rr_runtime_etcd.py — Calico's route-reflector recipe on a running cluster
(_agent_rr_runtime.py) on the etcd datastore."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_rr_runtime import main  # noqa: E402

main("etcd")
