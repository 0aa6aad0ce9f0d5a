#!/usr/bin/env bash
# policy_bench.sh — the policy benchmark (compiler and nft executor at cluster scale). Prints figures, asserts nothing.
#   bash bench/policy_bench.sh [--quick]
# 1. tabby-policy-bench in a throwaway netns: 1,000 policies, 10,000 endpoints
#    (500 local): cold programming, p50/p99 of one pod add / policy change as
#    deltas vs the naive full regenerate+reload, ruleset size; then the same
#    with the policies in 10 Calico tiers (--tiers 10), both printed side by side.
# 2. Per-packet cost: two local "pods" (netns + veth + /32 routes into a node
#    netns), TCP request/response rate client -> server with 0 and with 1,000
#    policies programmed, and with the 1,000 in 10 tiers that the flow crosses
#    by Pass (rr: one connection, like netperf TCP_RR; crr: a new
#    connection per transaction, every SYN walks the policy chains). The
#    configurations alternate (0 1000 t10, t10 1000 0, ...: drift of the
#    shared machine hits both alike), client and server pinned to one core
#    (see PIN below); the table shows the median and the spread (min-max) of
#    the rounds and of the round-by-round ratios. A fourth configuration, the
#    1,000 policies without rule counters (--no-rule-counters), and a first
#    programming run without them, show what the per-rule counters cost.
# Everything runs in namespaces named pb<pid>-*, deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${TABBY_BUILD:-build}
BENCH=$BUILD/bench/tabby-policy-bench
RR=$BUILD/bench/tabby-bench-rr
[ -x "$BENCH" ] && [ -x "$RR" ] || { echo "build first: bash scripts/build.sh release"; exit 1; }
ITERS=200; NAIVE=10; SECS=3; ROUNDS=8
if [ "${1:-}" = "--quick" ]; then ITERS=50; NAIVE=3; SECS=1; ROUNDS=2; fi
# Client and server pinned to the same core (PIN=same, default): a wake-up
# across cores costs ~250 us on these VMs and comes and goes with the
# scheduler's placement (rates swung 4k-67k/s between rounds); on one core the
# hand-off is the same every round. PIN=split: one core each; PIN=none.
PIN_S=(); PIN_C=()
if command -v taskset >/dev/null; then
  last=$(($(nproc) - 1))
  case "${PIN:-same}" in
    same) PIN_S=(taskset -c "$last"); PIN_C=(taskset -c "$last") ;;
    split) [ "$last" -ge 1 ] && { PIN_S=(taskset -c 0); PIN_C=(taskset -c 1); } ;;
  esac
fi
P=pb$$-
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for n in node client server prog; do ip netns del "$P$n" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== programming cost (machine load before: $(cut -d' ' -f1-3 /proc/loadavg))"
ip netns add "${P}prog"
# The same cluster twice, in the same run: every policy in the default tier, then
# the 1,000 policies spread over 10 Calico tiers (100 each; bench/policy_bench.cpp).
# Rule counters: first the 1-tier cluster with its policy rules compiled without
# their counter (what `tabby policy` and `tabby policy trace` read), then as
# tabby runs it, with them (the "before/after" of the counters, same run).
OUTNC=$(ip netns exec "${P}prog" "$BENCH" --iters "$ITERS" --naive-iters "$NAIVE" --no-rule-counters)
echo "$OUTNC"
ip netns del "${P}prog"; ip netns add "${P}prog"
OUT1=$(ip netns exec "${P}prog" "$BENCH" --iters "$ITERS" --naive-iters "$NAIVE")
echo "$OUT1"
ip netns del "${P}prog"; ip netns add "${P}prog"
OUT10=$(ip netns exec "${P}prog" "$BENCH" --iters "$ITERS" --naive-iters "$NAIVE" --tiers 10)
echo "$OUT10"
echo "  machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$(echo "$OUT1" | grep '^BENCH')" "$(echo "$OUT10" | grep '^BENCH')" "$(echo "$OUTNC" | grep '^BENCH')" <<'PY'
import sys
def kv(line):
    return dict(x.split("=", 1) for x in line.split()[1:])
a, b = kv(sys.argv[1]), kv(sys.argv[2])
print("  tiers: 1 tier vs 10 tiers x 100 policies, 10,000 endpoints (same run)")
print(f"  {'':<34} {'1 tier':>10} {'10 tiers':>10} {'ratio':>7}")
for key, name in [("policy_cold_ms", "cold program (ms)"), ("policy_change_p50_ms", "policy change p50 (ms)"),
                  ("policy_change_p99_ms", "policy change p99 (ms)"), ("policy_pod_add_p50_ms", "pod add p50 (ms)"),
                  ("policy_pod_add_p99_ms", "pod add p99 (ms)"), ("ruleset_chains", "chains"),
                  ("ruleset_rules", "rules")]:
    x, y = float(a[key]), float(b[key])
    print(f"  {name:<34} {x:>10.3f} {y:>10.3f} {y / x if x else 0:>7.2f}")
print(f"BENCH tiers10_cold_ms={b['policy_cold_ms']} tiers10_change_p99_ms={b['policy_change_p99_ms']} "
      f"tiers1_cold_ms={a['policy_cold_ms']} tiers1_change_p99_ms={a['policy_change_p99_ms']}")
n = kv(sys.argv[3])
print("  rule counters: 1 tier without vs with a counter on every policy rule (same run)")
print(f"  {'':<34} {'without':>10} {'with':>10} {'ratio':>7}")
for key, name in [("policy_cold_ms", "cold program (ms)"), ("policy_change_p50_ms", "policy change p50 (ms)"),
                  ("policy_change_p99_ms", "policy change p99 (ms)"), ("policy_pod_add_p99_ms", "pod add p99 (ms)"),
                  ("full_script_bytes", "full script (bytes)")]:
    x, y = float(n[key]), float(a[key])
    print(f"  {name:<34} {x:>10.3f} {y:>10.3f} {y / x if x else 0:>7.2f}")
print(f"BENCH counters_off_cold_ms={n['policy_cold_ms']} counters_on_cold_ms={a['policy_cold_ms']} "
      f"counters_off_change_p99_ms={n['policy_change_p99_ms']} counters_on_change_p99_ms={a['policy_change_p99_ms']}")
PY

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
ip netns exec "${P}server" "${PIN_S[@]}" "$RR" server 5001 > /dev/null &
PIDS+=($!)
sleep 0.3
run_rr() {  # prints rr crr
  local rr crr
  rr=$(ip netns exec "${P}client" "${PIN_C[@]}" "$RR" rr 198.19.250.2 5001 "$SECS")
  crr=$(ip netns exec "${P}client" "${PIN_C[@]}" "$RR" crr 198.19.250.2 5001 "$SECS")
  echo "$rr $crr"
}
# Three configurations: no policy, 1,000 policies in the default tier, and the
# same 1,000 in 10 tiers (the flow passes through every tier: see --program).
declare -A RRS CRRS
# A fourth: the 1,000 in the default tier without rule counters (1000nc).
CONFS="0 1000 1000t10 1000nc"
for n in $CONFS; do RRS[$n]=""; CRRS[$n]=""; done
for round in $(seq "$ROUNDS"); do
  order="$CONFS"; [ $((round % 2)) -eq 0 ] && order="1000nc 1000t10 1000 0"
  for n in $order; do
    tiers=(); [ "$n" = 1000t10 ] && tiers=(--tiers 10)
    [ "$n" = 1000nc ] && tiers=(--no-rule-counters)
    count=${n%t10}; count=${count%nc}
    ip netns exec "$N" "$BENCH" --program "$count" "${tiers[@]}" \
      --client caliclient,198.19.250.1 --server caliserver,198.19.250.2 | sed 's/^/  /'
    sleep 1  # let the kernel's deferred release of the replaced table finish
    read -r rr crr < <(run_rr)
    echo "  round $round, $n policies: rr $rr/s, crr $crr/s"
    RRS[$n]+="$rr "; CRRS[$n]+="$crr "
  done
done
python3 - "${RRS[0]}" "${RRS[1000]}" "${CRRS[0]}" "${CRRS[1000]}" "${RRS[1000t10]}" "${CRRS[1000t10]}" \
  "${RRS[1000nc]}" "${CRRS[1000nc]}" <<'PY'
import statistics, sys
r0, r1, c0, c1, r10, c10, rnc, cnc = ([int(x) for x in a.split()] for a in sys.argv[1:9])
def row(name, a, b):
    ma, mb = statistics.median(a), statistics.median(b)
    # Paired ratios (round by round) show whether the difference exceeds the noise.
    ratios = sorted(y / x for x, y in zip(a, b))
    print(f"  {name:<26} {ma:>10.0f} {min(a):>7}-{max(a):<7} {mb:>10.0f} {min(b):>7}-{max(b):<7} "
          f"{mb / ma:>6.3f} {statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})")
    return ma, mb
print(f"  {'median of %d rounds' % len(r0):<26} {'0 policies':>10} {'(min-max)':^15} {'1000':>10} {'(min-max)':^15} "
      f"{'ratio':>6} paired: median (range)")
a, b = row("TCP_RR (transactions/s)", r0, r1)
c, d = row("TCP_CRR (connections/s)", c0, c1)
print(f"  {'':<26} {'0 policies':>10} {'':^15} {'10 tiers':>10}")
_, b10 = row("TCP_RR, 10 tiers x 100", r0, r10)
_, d10 = row("TCP_CRR, 10 tiers x 100", c0, c10)
print(f"  {'':<26} {'no counters':>10} {'':^15} {'counters':>10}")
rn, _ = row("TCP_RR, 1000: counters", rnc, r1)
cn, _ = row("TCP_CRR, 1000: counters", cnc, c1)
print(f"BENCH policy_rr_1000_nocounters={rn:.0f} policy_crr_1000_nocounters={cn:.0f} "
      f"policy_rr_counters_ratio={b / rn:.3f} policy_crr_counters_ratio={d / cn:.3f}")
print(f"BENCH policy_rr_0={a:.0f} policy_rr_1000={b:.0f} policy_crr_0={c:.0f} policy_crr_1000={d:.0f} "
      f"policy_rr_ratio={b / a:.3f} policy_crr_ratio={d / c:.3f} policy_rr_tiers10={b10:.0f} "
      f"policy_crr_tiers10={d10:.0f} policy_rr_tiers10_ratio={b10 / a:.3f} policy_crr_tiers10_ratio={d10 / c:.3f} "
      f"rounds={len(r0)}")
PY
