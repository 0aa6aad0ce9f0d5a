#!/usr/bin/env bash
# agent_churn.sh — the agent under pod churn, end to end (prints figures; never asserts on time).
# `tabby agent` on a file datastore of 500 nodes and 20,000 pods (200 on this node), in a
# throwaway network namespace per run (one with nftables policy off, one with it on):
#   cold start   agent start -> every expected route in the kernel (local /32s, the
#                local blocks' blackholes, one route per remote block; seen by a
#                netlink monitor) and -> `tabby status` ready + datastoreInSync
#   churn        N times: create a local pod's interface, write its WorkloadEndpoint
#                into DIR/tabby-state/ (temp file + rename, as the CNI plugin does),
#                time rename -> RTM_NEWROUTE of its /32; unlink it, time -> RTM_DELROUTE
#   memory       the agent's VmRSS / VmHWM after the cold start and after the churn
#   --dual-stack the same cluster also with an IPv6 pool (every pod an IPv4 and an IPv6
#                address, /122 IPv6 blocks): each run is done twice in one invocation,
#                IPv4-only then dual stack, and the table puts them side by side
# The datastore (bench/agent_churn.py gen) and the monitor (agent_churn.py run) are in
# the Python helper. Namespaces are named ac<pid>-*, deleted on exit.
#
# Usage: bash bench/agent_churn.sh [--churn N] [--policy off|on|both] [--layout state|manifests]
#                                   [--nodes N --pods N --local N] [--policies N] [--mesh] [--dual-stack]
#                                   [--stacks "v4 dual"]   (with --dual-stack: run only these)
#        env TABBY_BIN (default build/felix/tabby), AGENT_WRAP (e.g. "heaptrack -o /tmp/x")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TABBY=${TABBY_BIN:-$ROOT/build/felix/tabby}
[ -x "$TABBY" ] || { echo "build first: bash scripts/build.sh release (no $TABBY)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
CHURN=200 POLICY=both LAYOUT=state NODES=500 PODS=20000 LOCAL=200 POLICIES=0 MESH="" DUAL="" ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --churn) CHURN=$2; shift ;;
    --policy) POLICY=$2; shift ;;
    --layout) LAYOUT=$2; shift ;;
    --nodes) NODES=$2; shift ;;
    --pods) PODS=$2; shift ;;
    --local) LOCAL=$2; shift ;;
    --policies) POLICIES=$2; shift ;;
    --mesh) MESH=--mesh ;;
    --dual-stack) DUAL=1 ;;
    --stacks) ONLY=$2; shift ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
  shift
done
P=ac$$
W=$(mktemp -d /tmp/$P.XXXX)
NS="" EXT=""
cleanup() {
  [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null
  [ -n "$EXT" ] && ip netns del "$EXT" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

# The node namespace: underlay eth0 198.18.0.11/16 (all 500 nodes on-link) with a
# default route, and the host ends (cali...) of the local pods' veths; the other ends
# (and the underlay's peer, 198.18.0.1) are in the ext namespace.
fresh_ns() {  # $1 label, $2 the datastore's directory (its ifaces.batch)
  [ -n "$NS" ] && ip netns del "$NS"
  [ -n "$EXT" ] && ip netns del "$EXT"
  NS=$P-$1 EXT=$P-$1-ext
  ip netns add "$NS"
  ip netns add "$EXT"
  ip -n "$NS" link set lo up
  ip -n "$NS" link add eth0 type veth peer name up0 netns "$EXT"
  ip -n "$NS" addr add 198.18.0.11/16 dev eth0
  ip -n "$NS" addr add 2001:db8:18::b/64 dev eth0 nodad  # the dual-stack nodes' IPv6 subnet
  ip -n "$EXT" addr add 198.18.0.1/16 dev up0
  ip -n "$EXT" link set up0 up
  ip -n "$NS" link set eth0 up
  ip -n "$NS" route add default via 198.18.0.1 dev eth0
  sed "s/EXTNS/$EXT/" "$2/ifaces.batch" | ip -n "$NS" -batch -
  ip -n "$EXT" -batch "$2/ext.batch"
}

STACKS="v4"
[ -n "$DUAL" ] && STACKS="v4 dual"
[ -n "$DUAL" ] && [ -n "$ONLY" ] && STACKS=$ONLY
for stack in $STACKS; do
  t0=$(date +%s.%N)
  mkdir -p "$W/$stack"
  python3 "$ROOT/bench/agent_churn.py" gen "$W/$stack/ds" --nodes "$NODES" --pods "$PODS" --local "$LOCAL" \
    --policies "$POLICIES" --layout "$LAYOUT" $MESH ${DUAL:+$([ "$stack" = dual ] && echo --dual-stack)}
  objs=$(find "$W/$stack/ds" -name '*.yaml' | wc -l)
  printf "datastore %s: %s nodes, %s pods (%s local), %s policies, layout %s (%s files, %s MB), mesh %s; generated in %.1f s\n" \
    "$stack" "$NODES" "$PODS" "$LOCAL" "$POLICIES" "$LAYOUT" "$objs" "$(du -sm "$W/$stack/ds" | cut -f1)" \
    "${MESH:+on}${MESH:-off}" "$(echo "$(date +%s.%N) - $t0" | bc -l)"
done

case "$POLICY" in
  both) runs="false true" ;;
  on) runs="true" ;;
  off) runs="false" ;;
  *) echo "--policy off|on|both"; exit 2 ;;
esac
RESULTS=()
for stack in $STACKS; do
for pol in $runs; do
  label=policy-$([ "$pol" = true ] && echo on || echo off)
  [ -n "$DUAL" ] && label=$stack-$label
  fresh_ns "$label" "$W/$stack"
  out=$(ip netns exec "$NS" python3 "$ROOT/bench/agent_churn.py" run "$W/$stack/ds" --tabby "$TABBY" --label "$label" --ext "$EXT" \
    --policy "$pol" --churn "$CHURN" ${AGENT_WRAP:+--wrap "$AGENT_WRAP"}) || {
    echo "$label: the run failed"; tail -20 "$W/$stack/agent-$label.log"; exit 1; }
  echo "BENCH agent-churn $out"
  RESULTS+=("$out")
  grep -E "problem|error" "$W/$stack/agent-$label.log" | head -5 || true
done
done

python3 - "${RESULTS[@]}" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
f = lambda v, fmt="%.3f": "-" if v is None else fmt % v
print()
print("%-28s" % "" + "".join("%16s" % r["label"] for r in rows))
def line(name, get, fmt="%.3f"):
    print("%-28s" % name + "".join("%16s" % f(get(r), fmt) for r in rows))
line("cold start: routes (s)", lambda r: r["cold_routes_s"])
line("cold start: ready (s)", lambda r: r["cold_ready_s"])
line("routes expected / kernel", lambda r: f"{r['expected_routes']}/{r['kernel_routes']}", "%s")
line("pod add p50 (ms)", lambda r: r["add"]["p50_ms"])
line("pod add p99 (ms)", lambda r: r["add"]["p99_ms"])
line("pod add max (ms)", lambda r: r["add"]["max_ms"])
line("pod delete p50 (ms)", lambda r: r["del"]["p50_ms"])
line("pod delete p99 (ms)", lambda r: r["del"]["p99_ms"])
line("pod delete max (ms)", lambda r: r["del"]["max_ms"])
line("kernel route msgs per round", lambda r: r.get("route_msgs_per_round"), "%.1f")
line("churn rounds / missed", lambda r: f"{r['churn']}/{r['missed']}", "%s")
line("RSS after cold (MiB)", lambda r: r["after_cold"]["VmRSS"], "%.1f")
line("HWM after cold (MiB)", lambda r: r["after_cold"]["VmHWM"], "%.1f")
line("RSS after churn (MiB)", lambda r: r.get("after_churn", {}).get("VmRSS"), "%.1f")
line("HWM after churn (MiB)", lambda r: r.get("after_churn", {}).get("VmHWM"), "%.1f")
line("load average 1 min (end)", lambda r: r.get("loadavg_1m"), "%.2f")
line("agent CPU cold start (s)", lambda r: r["after_cold"]["cpu_s"], "%.2f")
line("agent CPU per add+delete (ms)", lambda r: (r["after_churn"]["cpu_s"] - r["after_cold"]["cpu_s"]) * 1000 / r["churn"]
     if r.get("churn") else None, "%.2f")
print()
print("targets: pod add/delete p99 < 10 ms; agent RSS < 30 MB.")
print("reference: calico-node users report 116-566 MiB RSS.")
print("load average at the end: %s (latency percentiles on a shared 2-core machine move with it)"
      % open("/proc/loadavg").read().split()[0])
for r in rows:
    if r.get("error"):
        print(f"{r['label']}: {r['error']}")
PY
