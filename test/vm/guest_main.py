#!/usr/bin/env python3
"""guest_main.py — the qemu guest's one run (boot once for every IPIP check): the
dataplane IPIP checks (guest_ipip.py), then the tunnel guard against IPIP
(guest_tunnel_guard.py). Usage: guest_main.py STAGE_ROOT BUILD_DIR; exits non-zero
when either fails (each prints its own PASS/FAIL marker)."""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root, build = sys.argv[1], sys.argv[2]
rc = subprocess.run([sys.executable, os.path.join(here, "guest_ipip.py"), root, build]).returncode
rc2 = subprocess.run([sys.executable, os.path.join(here, "guest_tunnel_guard.py"), root,
                      os.path.join(build, "felix", "tabby")], timeout=600).returncode
sys.exit(1 if rc or rc2 else 0)
