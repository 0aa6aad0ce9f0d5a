#!/bin/bash
# dataplane_callgrind.sh — user-space instructions per route of tabby's dataplane and of
# the batched raw-netlink floor (valgrind callgrind: repeatable on a loaded machine,
# where wall times are not). Each timed phase of tabby-dp-bench / tabby-nl-floor is
# collected and dumped on its own (client requests in the benches), in a fresh netns.
# Prints figures only. Usage: bash bench/dataplane_callgrind.sh [ROUTES] [ECMP]
#   (default 100000 1; needs build/ and valgrind; root)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${TABBY_BUILD:-$ROOT/build}
N=${1:-100000}
K=${2:-1}
P=tbg$$
W=$(mktemp -d /tmp/$P.XXXX)
trap 'ip netns del $P 2>/dev/null || true; rm -rf "$W"' EXIT
command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }

profile() {  # tag binary args...
  local tag=$1; shift
  ip netns del $P 2>/dev/null || true
  ip netns add $P
  ip -n $P link set lo up
  ip -n $P link add dummy0 type veth peer name dpeer
  ip -n $P addr add 192.0.2.1/24 dev dummy0
  ip -n $P link set dpeer up; ip -n $P link set dummy0 up
  ip netns exec $P valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=$W/$tag.%p "$@" >/dev/null 2>&1
  for f in $W/$tag.*.*; do
    local phase total
    phase=$(sed -n 's/.*Trigger: Client Request: //p' $f | head -1)
    [ -n "$phase" ] || continue
    total=$(awk '/^totals:/ {print $2; exit}' $f)
    case $phase in
      delta) printf "%-6s %-8s %14s instr  %8d per delta (200 one-route deltas)\n" $tag $phase $total $((total / 200)) ;;
      *) printf "%-6s %-8s %14s instr  %8d per route\n" $tag $phase $total $((total / N)) ;;
    esac
    echo "BENCH dataplane-instr routes=$N ecmp=$K tool=$tag phase=$phase instr=$total"
  done
}

echo "routes=$N ecmp=$K"
profile tabby "$B/bench/tabby-dp-bench" $N $K dummy0
profile floor "$B/bench/tabby-nl-floor" $N $K dummy0
