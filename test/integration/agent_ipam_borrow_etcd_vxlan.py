#!/usr/bin/env python3
"""agent_ipam_borrow_etcd_vxlan.py — agent_ipam_borrow_vxlan.py on the etcd datastore: the
borrowed VTEP address is written by compare-and-swap on etcd's mod_revision."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_borrow import main  # noqa: E402

main("etcd", vxlan=True)
