#!/usr/bin/env bash
# Restarting a tabby agent loses no packet: two nodes (iBGP, dataplane on), a
# pod on each, a 100/s ping across them; node2's agent is killed (SIGKILL, then
# a clean SIGTERM) and restarted while the ping runs. Kernel routes stay while
# the agent is down, the peer keeps its routes by graceful restart (RFC 4724),
# and the restarted agent adopts its routes. Checks: zero loss, and the kernel
# routes after the restart equal those before.
set -uo pipefail
TABBY=${TABBY_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build/felix/tabby}
[ -x "$TABBY" ] || { echo "FAIL: tabby binary $TABBY missing (build first)"; exit 1; }
P="tr$$-"; WORK=$(mktemp -d /tmp/tabby-restart.XXXXXX); PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P"); do ip netns del "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
die() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }

ip netns add "${P}n1"; ip netns add "${P}n2"
ip link add eth0 netns "${P}n1" type veth peer name eth0 netns "${P}n2"
for n in 1 2; do
  ns="${P}n$n"
  ip -n "$ns" link set lo up; ip -n "$ns" addr add "198.18.0.1$n/24" dev eth0; ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via 198.18.0.254 dev eth0
  pod="${P}p$n"; ip netns add "$pod"
  ip link add "calipod$n" netns "$ns" type veth peer name eth0 netns "$pod"
  ip -n "$pod" link set lo up; ip -n "$pod" addr add "198.19.0.$(( (n-1)*64 + 2 ))/32" dev eth0; ip -n "$pod" link set eth0 up
  ip -n "$pod" route add 169.254.1.1 dev eth0 scope link; ip -n "$pod" route add default via 169.254.1.1 dev eth0
  ip -n "$ns" link set "calipod$n" up
  ip netns exec "$ns" sysctl -qw "net.ipv4.conf.calipod$n.proxy_arp=1" "net.ipv4.neigh.calipod$n.proxy_delay=0" \
    net.ipv4.ip_forward=1
  ip -n "$ns" route add "198.19.0.$(( (n-1)*64 + 2 ))/32" dev "calipod$n" scope link
  other=$((3 - n))
  cat > "$WORK/n$n.yaml" <<YAML
nodeName: node$n
routerID: 198.18.0.1$n
apiSocket: $WORK/n$n.sock
dataplane: {enabled: true}
gracefulRestart: {enabled: true, restartTime: 30}
peers: [{peerIP: 198.18.0.1$other, asNumber: 64512, holdTime: 9, connectRetryTime: 1}]
announce: [{prefix: 198.19.0.$(( (n-1)*64 ))/26}]
YAML
done
start() { ip netns exec "${P}n$1" "$TABBY" agent --config "$WORK/n$1.yaml" >> "$WORK/n$1.log" 2>&1 & PIDS+=($!); eval "PID$1=$!"; }
start 1; start 2
routes() { ip -n "${P}n2" route show proto 44 | sort; }
# Both directions need both nodes' routes (own blackhole + the other's block).
both_ready() { [ "$(routes | wc -l)" -ge 2 ] && [ "$(ip -n "${P}n1" route show proto 44 | wc -l)" -ge 2 ]; }
for i in $(seq 1 100); do
  both_ready && break; sleep 0.2
done
both_ready || die "the nodes never got their routes: node1: $(ip -n "${P}n1" route show proto 44) node2: $(routes)"
ip netns exec "${P}p1" ping -c 3 -W 1 -q 198.19.0.66 >/dev/null || die "pods cannot ping before the restart"
before=$(routes)

for how in KILL TERM; do
  ip netns exec "${P}p1" ping -i 0.01 -c 800 -W 1 -q 198.19.0.66 > "$WORK/ping-$how.txt" 2>&1 &
  pingpid=$!
  sleep 1.5
  kill -s "$how" "$PID2"; wait "$PID2" 2>/dev/null
  sleep 1
  start 2
  # The restarted agent re-establishes and finishes its initial sync.
  for i in $(seq 1 100); do
    grep -q "initial BGP sync complete" <(tail -n 5 "$WORK/n2.log") && break; sleep 0.1
  done
  wait "$pingpid"
  stats=$(grep "packets transmitted" "$WORK/ping-$how.txt")
  echo "SIG$how restart: $stats"
  tx=$(echo "$stats" | awk '{print $1}'); rx=$(echo "$stats" | awk '{print $4}')
  [ "$tx" = 800 ] && [ "$rx" = 800 ] || die "packets lost across a SIG$how restart: $stats"
  after=$(routes)
  [ "$before" = "$after" ] || die "kernel routes changed across the SIG$how restart: before [$before] after [$after]"
  grep -q "starting as a restarting BGP speaker" "$WORK/n2.log" || die "the restarted agent did not come up as a restarting speaker"
done
echo "PASS: no loss across SIGKILL and SIGTERM restarts; kernel routes unchanged"
