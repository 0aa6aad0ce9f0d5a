#!/usr/bin/env python3
"""agent_bgp_secrets_file.py — BGP passwords from Secrets on the file datastore
(Secret manifests beside the others): see _agent_bgp_secrets.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _agent_bgp_secrets import run  # noqa: E402
from tabbytest import run_test  # noqa: E402

run_test("agent_bgp_secrets_file", lambda lab: run(lab, "file"))
