#!/usr/bin/env python3
"""guest_tcp_ao.py — the qemu guest's one run for the TCP-AO tests, on the kernel that
test/vm/build_tcp_ao_kernel.sh built with CONFIG_TCP_AO: prints GUEST-BOOTED with the
guest's uptime (the boot time), then runs bgp_tcp_ao (rollover, wrong key, forged
segments) and bgp_tcp_ao_fail_closed inside the VM, each printing
"GUEST-RESULT NAME rc=N". Usage: guest_tcp_ao.py STAGE_ROOT (STAGE_ROOT holds
test/integration/ and build/felix/tabby, staged by bgp_tcp_ao.py on the host)."""
import os
import subprocess
import sys

root = sys.argv[1]
with open("/proc/uptime") as f:
    up = f.read().split()[0]
print(f"\nGUEST-BOOTED uptime={up}s kernel={os.uname().release}", flush=True)
env = dict(os.environ, TABBY_BIN=os.path.join(root, "build", "felix", "tabby"), TABBY_ROOT=root,
           TABBY_BUILD=os.path.join(root, "build"), PYTHONPATH=os.path.join(root, "test", "integration"),
           TABBY_TCP_AO_GUEST="1", PYTHONDONTWRITEBYTECODE="1")
bad = 0
for name in ("bgp_tcp_ao.py", "bgp_tcp_ao_fail_closed.py"):
    try:
        rc = subprocess.run([sys.executable, os.path.join(root, "test", "integration", name)], env=env,
                            timeout=400).returncode
    except subprocess.TimeoutExpired:
        print(f"FAIL {name}: no result within 400s in the VM", flush=True)
        rc = -1
    print(f"GUEST-RESULT {name} rc={rc}", flush=True)
    bad += rc != 0
sys.exit(1 if bad else 0)
