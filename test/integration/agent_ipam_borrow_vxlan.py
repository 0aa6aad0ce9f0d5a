#!/usr/bin/env python3
"""agent_ipam_borrow_vxlan.py — IPAM borrowing of _agent_ipam_borrow.py over VXLAN on the file datastore:
node2, with no block left to claim, borrows its VTEP address from node1's block (and
is reachable over VXLAN before its first pod); the borrowed addresses' /32 go to the
borrowing node's VTEP; a node that may not borrow (strictAffinity) says why."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_borrow import main  # noqa: E402

main("file", vxlan=True)
