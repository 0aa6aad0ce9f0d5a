#!/usr/bin/env python3
"""agent_cluster_file.py — the cluster lifecycle of _agent_cluster.py on the file datastore."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_cluster import main  # noqa: E402

main("file")
