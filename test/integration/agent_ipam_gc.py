#!/usr/bin/env python3
"""agent_ipam_gc.py — the leader-elected IPAM garbage collector of _agent_ipam_gc.py on the file datastore."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_gc import main  # noqa: E402

main("file")
