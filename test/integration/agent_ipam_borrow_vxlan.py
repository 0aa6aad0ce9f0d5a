#!/usr/bin/env python3
"""agent_ipam_borrow_vxlan.py — IPAM borrowing of _agent_ipam_borrow.py over VXLAN on the file datastore:
the borrowed address's /32 goes to the borrowing node's VTEP."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_borrow import main  # noqa: E402

main("file", vxlan=True)
