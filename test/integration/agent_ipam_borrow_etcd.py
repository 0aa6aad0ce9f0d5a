#!/usr/bin/env python3
"""agent_ipam_borrow_etcd.py — IPAM borrowing (strictAffinity false) of _agent_ipam_borrow.py on the etcd datastore."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_ipam_borrow import main  # noqa: E402


main("etcd")
