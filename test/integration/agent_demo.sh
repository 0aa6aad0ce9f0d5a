#!/usr/bin/env bash
# The README's demo as a test: three nodes in namespaces running tabby agent on a
# shared file datastore, pods attached through the CNI plugin; every pod must
# ping every other pod with plain routes and again after the pool switches to
# VXLAN (scripts/demo.sh exits non-zero otherwise); then every pod reaches the
# outside host masqueraded to its node's address (natOutgoing). Dual stack: every
# pod has an IPv4 and an IPv6 address and pings every other pod over IPv6 in both rounds.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$(bash scripts/demo.sh 2>&1); rc=$?
echo "$out" | tail -60
if [ $rc -ne 0 ]; then echo "FAIL: demo exited $rc"; exit 1; fi
n=$(echo "$out" | grep -c "30 pings answered, 0 failed")
[ "$n" -eq 2 ] || { echo "FAIL: expected two rounds of 30 answered pings (plain, VXLAN), saw $n"; exit 1; }
n6=$(echo "$out" | grep -c "30 IPv6 pings answered, 0 failed")
[ "$n6" -eq 2 ] || { echo "FAIL: expected two rounds of 30 answered IPv6 pings (dual stack), saw $n6"; exit 1; }
d=$(echo "$out" | grep -cE "^  node[123]  default/web-[123]-[12]  198\.19\.[0-9.]+ +2001:db8:19::[0-9a-f:]+$")
[ "$d" -eq 6 ] || { echo "FAIL: expected 6 pods with an IPv4 and an IPv6 address, saw $d"; exit 1; }
echo "$out" | grep -q "6 pods reach the outside host masqueraded, 0 failed" ||
  { echo "FAIL: not every pod reached the outside host (natOutgoing)"; exit 1; }
m=$(echo "$out" | grep -cE "outside host: from pod 198\.19\.[0-9.]+ +seen as 198\.18\.0\.1[123]$")
[ "$m" -eq 6 ] || { echo "FAIL: expected the outside host to see 6 pods as their nodes' addresses, saw $m"; exit 1; }
echo "PASS"
