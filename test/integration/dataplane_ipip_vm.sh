#!/bin/bash
# dataplane_ipip_vm — IPIP checks. On this host kernel (no ipip): the driver reports
# "kernel has no ipip support: load module ipip or use vxlanMode" and routes via tunl0
# stay pending. In the qemu guest (test/vm/run-vm.sh, booted once for all IPIP
# checks): IPIP Always and CrossSubnet with three nodes and pods (test/vm/guest_ipip.py),
# then the tunnel guard: two agents with IPIP pods, IPIP from a non-node host is
# dropped and counted (test/vm/guest_tunnel_guard.py).
set -u
ROOT=${TABBY_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${TABBY_BUILD:-$ROOT/build}
DRIVER=$BUILD/test/tools/tabby-dp-driver
[ -x "$DRIVER" ] || { echo "FAIL: $DRIVER missing (scripts/build.sh release)"; exit 1; }
TABBY=${TABBY_BIN:-$BUILD/felix/tabby}
[ -x "$TABBY" ] || { echo "FAIL: $TABBY missing (scripts/build.sh release)"; exit 1; }
P=tb$$i
W=$(mktemp -d /tmp/$P-vm.XXXX)
cleanup() { ip netns del ${P}h 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

# --- host: no ipip support must be reported clearly
ip netns add ${P}h
ip -n ${P}h link add eth0 type veth peer name x0
ip -n ${P}h addr add 198.18.0.1/24 dev eth0; ip -n ${P}h link set eth0 up
cat > $W/host.json <<JSON
{"node":"n1","encapsulation":"IPIP","nodes":[{"name":"n1","ip":"198.18.0.1","blocks":["198.19.0.0/26"],"tunnel_address":"198.19.0.0"},
 {"name":"n2","ip":"198.18.0.2","blocks":["198.19.0.64/26"],"tunnel_address":"198.19.0.64"}]}
JSON
if ip -n ${P}h link show tunl0 >/dev/null 2>&1; then
  echo "note: this host kernel has tunl0: the no-ipip check does not apply here"
else
  out=$(ip netns exec ${P}h "$DRIVER" --config $W/host.json --once --status $W/host.st 2>&1); rc=$?
  echo "$out" | grep -q "kernel has no ipip support: load module ipip or use vxlanMode" ||
    { echo "FAIL: no clear no-ipip error (rc=$rc): $out"; exit 1; }
  grep -q '"routes_pending": 1' $W/host.st || { echo "FAIL: tunl0 route not pending: $(cat $W/host.st)"; exit 1; }
  [ $rc -ne 0 ] || { echo "FAIL: driver --once succeeded without ipip"; exit 1; }
  echo "ok: host without ipip: clear error, tunnel route pending, exit rc=$rc"
fi

# --- guest
for b in qemu-system-x86_64 busybox cpio; do
  command -v $b >/dev/null || { echo "FAIL: cannot run the VM: $b not installed (scripts/install-deps.sh all installs it)"; exit 1; }
done
ls /boot/vmlinuz-* 2>/dev/null | grep -qv cloud || { echo "FAIL: cannot run the VM: no linux-image-amd64 kernel in /boot (scripts/install-deps.sh all installs it)"; exit 1; }
# The guest sees the host's / read-only but gets an empty tmpfs on /tmp, and the
# repository may live under /tmp (CI's fresh clone can): stage what the guest
# runs into the shared work dir, which the guest mounts at the same path.
S=$W/vm/stage
mkdir -p $S/test/integration $S/test/vm $S/build/test/tools $S/build/felix
cp "$ROOT"/test/integration/_dplab.py $S/test/integration/
cp -r "$ROOT"/test/integration/tabbytest $S/test/integration/
cp "$ROOT"/test/vm/guest_ipip.py "$ROOT"/test/vm/guest_tunnel_guard.py "$ROOT"/test/vm/guest_main.py $S/test/vm/
cp "$DRIVER" $S/build/test/tools/
cp "$TABBY" $S/build/felix/tabby
start=$(date +%s)
timeout 900 "$ROOT/test/vm/run-vm.sh" "$W/vm" "$S/test/vm/guest_main.py" "$S" "$S/build" > $W/vm.log 2>&1
echo "VM run took $(( $(date +%s) - start ))s"
grep -E "^(ok:|guest kernel|GUEST-IPIP|GUEST-TUNNEL-GUARD|VMTEST|insmod|\[)" $W/vm.log
if grep -q "GUEST-IPIP PASS" $W/vm.log && grep -q "GUEST-TUNNEL-GUARD PASS" $W/vm.log && grep -q "VMTEST rc=0" $W/vm.log; then
  echo PASS; exit 0
fi
echo "----- guest log tail"; tail -40 $W/vm.log
echo "FAIL: IPIP checks in the VM did not pass"; exit 1
