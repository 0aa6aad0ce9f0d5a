#!/usr/bin/env bash
# policy_bench.sh — the policy benchmark (issue 5). Prints figures, asserts nothing.
#   bash bench/policy_bench.sh [--quick]
# 1. tabby-policy-bench in a throwaway netns: 1,000 policies, 10,000 endpoints
#    (500 local): cold programming, p50/p99 of one pod add / policy change as
#    deltas vs the naive full regenerate+reload, ruleset size.
# 2. Per-packet cost: two local "pods" (netns + veth + /32 routes into a node
#    netns), TCP request/response rate client -> server with 0 and with 1,000
#    policies programmed (rr: one connection, like netperf TCP_RR; crr: a new
#    connection per transaction, every SYN walks the policy chains).
# Everything runs in namespaces named pb<pid>-*, deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TABBY_BUILD:-build}
BENCH=$BUILD/bench/tabby-policy-bench
RR=$BUILD/bench/tabby-bench-rr
[ -x "$BENCH" ] && [ -x "$RR" ] || { echo "build first: bash scripts/build.sh release"; exit 1; }
ITERS=200; NAIVE=10; SECS=3; ROUNDS=3
if [ "${1:-}" = "--quick" ]; then ITERS=50; NAIVE=3; SECS=1; ROUNDS=1; fi
P=pb$$-
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for n in node client server prog; do ip netns del "$P$n" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== programming cost"
ip netns add "${P}prog"
ip netns exec "${P}prog" "$BENCH" --iters "$ITERS" --naive-iters "$NAIVE"

echo
echo "== per-packet cost: TCP request/response between two local pods"
N=${P}node
ip netns add "$N"
ip -n "$N" link set lo up
ip netns exec "$N" sysctl -qw net.ipv4.ip_forward=1
i=1
for pod in client server; do
  ns=$P$pod; ip=198.19.250.$i; host=cali$pod
  ip netns add "$ns"
  ip -n "$N" link add "$host" type veth peer name eth0 netns "$ns"
  ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up
  ip -n "$ns" addr add "$ip/32" dev eth0
  ip -n "$ns" route add 169.254.1.1 dev eth0 scope link
  ip -n "$ns" route add default via 169.254.1.1 dev eth0
  ip -n "$N" link set "$host" up
  ip netns exec "$N" sysctl -qw "net.ipv4.conf.$host.proxy_arp=1" "net.ipv4.neigh.$host.proxy_delay=0"
  ip -n "$N" route add "$ip/32" dev "$host"
  # Static neighbours (as the agent's CNI plugin would set up): no ARP in the way.
  hmac=$(ip -n "$N" -br link show "$host" | awk '{print $3}')
  pmac=$(ip -n "$ns" -br link show eth0 | awk '{print $3}')
  ip -n "$ns" neigh replace 169.254.1.1 lladdr "$hmac" dev eth0 nud permanent
  ip -n "$N" neigh replace "$ip" lladdr "$pmac" dev "$host" nud permanent
  i=$((i + 1))
done
ip netns exec "${P}server" "$RR" server 5001 > /dev/null &
PIDS+=($!)
sleep 0.3
run_rr() {  # prints rr crr
  local rr crr
  rr=$(ip netns exec "${P}client" "$RR" rr 198.19.250.2 5001 "$SECS")
  crr=$(ip netns exec "${P}client" "$RR" crr 198.19.250.2 5001 "$SECS")
  echo "$rr $crr"
}
declare -A RRS CRRS
for n in 0 1000; do RRS[$n]=0; CRRS[$n]=0; done
for round in $(seq "$ROUNDS"); do
  for n in 0 1000; do
    ip netns exec "$N" "$BENCH" --program "$n" --client caliclient,198.19.250.1 --server caliserver,198.19.250.2 \
      | sed 's/^/  /'
    read -r rr crr < <(run_rr)
    echo "  round $round, $n policies: rr $rr/s, crr $crr/s"
    RRS[$n]=$((RRS[$n] + rr)); CRRS[$n]=$((CRRS[$n] + crr))
  done
done
r0=$((RRS[0] / ROUNDS)); r1=$((RRS[1000] / ROUNDS)); c0=$((CRRS[0] / ROUNDS)); c1=$((CRRS[1000] / ROUNDS))
printf '  %-28s %12s %12s %8s\n' "" "0 policies" "1000" "ratio"
printf '  %-28s %12d %12d %8s\n' "TCP_RR (transactions/s)" "$r0" "$r1" "$(python3 -c "print(f'{$r1/$r0:.3f}')")"
printf '  %-28s %12d %12d %8s\n' "TCP_CRR (connections/s)" "$c0" "$c1" "$(python3 -c "print(f'{$c1/$c0:.3f}')")"
echo "BENCH policy_rr_0=$r0 policy_rr_1000=$r1 policy_crr_0=$c0 policy_crr_1000=$c1"
