#!/usr/bin/env bash
# The README's demo as a test: three nodes in namespaces, tabby agents in a
# full iBGP mesh with the kernel dataplane on; every pod must ping every other
# pod (scripts/demo.sh exits non-zero otherwise).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$(bash scripts/demo.sh 2>&1); rc=$?
echo "$out" | tail -40
if [ $rc -ne 0 ]; then echo "FAIL: demo exited $rc"; exit 1; fi
echo "$out" | grep -q "30 pings answered, 0 failed" || { echo "FAIL: not every pod answered"; exit 1; }
echo "PASS"
