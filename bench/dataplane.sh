#!/bin/bash
# dataplane.sh — route-programming benchmark (prints figures; never asserts on time).
# For each N (default "10000 100000"; BENCH_SIZES="10000 100000 1000000" for 1M) and
# ECMP width (1 and 4), in a fresh network namespace each: install then remove N /32
# routes with
#   tabby    tabby's Linux dataplane (build/bench/tabby-dp-bench), plus the 1-route delta
#   floor    a minimal batched raw-netlink writer (build/bench/tabby-nl-floor)
#   ip       `ip -batch` of the same routes
#   bird     BIRD 2 exporting the same static routes to the kernel (time from enabling
#            the static protocol until the kernel protocol has exported N; removal: disable)
# and prints wall times, routes/s and tabby's ratios. Machine-readable lines start "BENCH ".
# Usage: bash bench/dataplane.sh   (needs build/ from scripts/build.sh release; root)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${TABBY_BUILD:-$ROOT/build}
SIZES=${BENCH_SIZES:-"10000 100000"}
P=tbb$$
W=$(mktemp -d /tmp/$P.XXXX)
NS=""
BIRDPID=""
cleanup() {
  [ -n "$BIRDPID" ] && kill $BIRDPID 2>/dev/null && wait $BIRDPID 2>/dev/null
  [ -n "$NS" ] && ip netns del $NS 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

fresh_ns() {
  [ -n "$NS" ] && ip netns del $NS
  NS=${P}-$1
  ip netns add $NS
  ip -n $NS link set lo up
  ip -n $NS link add dummy0 type veth peer name dpeer
  ip -n $NS addr add 192.0.2.1/24 dev dummy0
  ip -n $NS link set dpeer up; ip -n $NS link set dummy0 up
}
now() { date +%s.%N; }
count_routes() { ip -n $NS -o route show proto "$1" | wc -l; }

gen_ip_batch() {  # N ECMP -> add file, del file
  python3 - "$1" "$2" "$W/add.batch" "$W/del.batch" <<'PY'
import sys
n, k, fa, fd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def ip(i): v = 0x0A000000 + i; return f"{v>>24}.{(v>>16)&255}.{(v>>8)&255}.{v&255}"
hops = " ".join(f"nexthop via 192.0.2.{2+j} dev dummy0" for j in range(k)) if k > 1 else "via 192.0.2.2 dev dummy0"
with open(fa, "w") as a, open(fd, "w") as d:
    for i in range(n):
        a.write(f"route add {ip(i)}/32 proto 46 {hops}\n")
        d.write(f"route del {ip(i)}/32 proto 46\n")
PY
}

gen_bird() {  # N ECMP -> bird.conf
  python3 - "$1" "$2" "$W/bird.conf" <<'PY'
import sys
n, k, f = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def ip(i): v = 0x0A000000 + i; return f"{v>>24}.{(v>>16)&255}.{(v>>8)&255}.{v&255}"
hops = " ".join(f"via 192.0.2.{2+j}" for j in range(k))
with open(f, "w") as o:
    o.write("router id 192.0.2.1;\nprotocol device { scan time 3600; }\n")
    o.write("protocol kernel kern1 { scan time 3600; learn off; merge paths on; ipv4 { export all; import none; }; }\n")
    o.write("protocol static st1 { disabled yes; ipv4; \n")
    for i in range(n):
        o.write(f"  route {ip(i)}/32 {hops};\n")
    o.write("}\n")
PY
}

bird_exported() {
  birdc -s $W/bird.ctl show protocols all kern1 2>/dev/null | awk '/Routes:/{for(i=1;i<NF;i++) if($(i+1)~/^exported/) print $i}' | head -1
}

declare -A R
printf "%-8s %-5s %-7s %10s %12s %10s %12s\n" "routes" "ecmp" "tool" "install_s" "install_r/s" "remove_s" "remove_r/s"
for n in $SIZES; do
  for k in 1 4; do
    # tabby
    fresh_ns t
    out=$(ip netns exec $NS "$B/bench/tabby-dp-bench" $n $k dummy0)
    ti=$(sed 's/.*install_s=\([^ ]*\).*/\1/' <<<"$out"); tr=$(sed 's/.*remove_s=\([^ ]*\).*/\1/' <<<"$out")
    dmed=$(sed 's/.*delta_median_ms=\([^ ]*\).*/\1/' <<<"$out"); dp99=$(sed 's/.*delta_p99_ms=\([^ ]*\).*/\1/' <<<"$out")
    dfull=$(sed 's/.*fullset_delta_ms=\([^ ]*\).*/\1/' <<<"$out")
    R[tabby_i]=$ti; R[tabby_r]=$tr
    # floor
    fresh_ns f
    out=$(ip netns exec $NS "$B/bench/tabby-nl-floor" $n $k dummy0)
    R[floor_i]=$(sed 's/.*install_s=\([^ ]*\).*/\1/' <<<"$out"); R[floor_r]=$(sed 's/.*remove_s=\([^ ]*\).*/\1/' <<<"$out")
    # ip -batch
    fresh_ns i
    gen_ip_batch $n $k
    t0=$(now); ip -n $NS -batch $W/add.batch; t1=$(now)
    got=$(count_routes 46); [ "$got" -eq "$n" ] || echo "warning: ip -batch installed $got of $n"
    ip -n $NS -batch $W/del.batch; t2=$(now)
    R[ip_i]=$(echo "$t1 - $t0" | bc -l); R[ip_r]=$(echo "$t2 - $t1" | bc -l)
    # BIRD 2
    fresh_ns b
    gen_bird $n $k
    ip netns exec $NS bird -f -c $W/bird.conf -s $W/bird.ctl -P $W/bird.pid & BIRDPID=$!
    for _ in $(seq 600); do birdc -s $W/bird.ctl show status >/dev/null 2>&1 && break; sleep 0.1; done
    t0=$(now); birdc -s $W/bird.ctl enable st1 >/dev/null
    while [ "$(bird_exported)" != "$n" ]; do sleep 0.02; done; t1=$(now)
    got=$(count_routes bird); [ "$got" -eq "$n" ] || echo "warning: bird installed $got of $n"
    birdc -s $W/bird.ctl disable st1 >/dev/null
    while [ "$(bird_exported)" != "0" ]; do sleep 0.02; done
    while [ "$(count_routes bird)" -ne 0 ]; do sleep 0.05; done; t2=$(now)
    R[bird_i]=$(echo "$t1 - $t0" | bc -l); R[bird_r]=$(echo "$t2 - $t1" | bc -l)
    kill $BIRDPID; wait $BIRDPID 2>/dev/null || true; BIRDPID=""
    for tool in tabby floor ip bird; do
      i=${R[${tool}_i]}; r=${R[${tool}_r]}
      printf "%-8s %-5s %-7s %10.3f %12.0f %10.3f %12.0f\n" $n $k $tool $i $(echo "$n / $i" | bc -l) $r $(echo "$n / $r" | bc -l)
      echo "BENCH dataplane routes=$n ecmp=$k tool=$tool install_s=$i remove_s=$r"
    done
    for tool in floor ip bird; do
      printf "  tabby/%s install ratio %.2fx (time), remove %.2fx\n" $tool $(echo "${R[tabby_i]} / ${R[${tool}_i]}" | bc -l) $(echo "${R[tabby_r]} / ${R[${tool}_r]}" | bc -l)
    done
    printf "  tabby 1-route delta with %s routes installed: median %s ms, p99 %s ms (full-set replace of %s routes with 1 changed: %s ms)\n" $n $dmed $dp99 $n $dfull
    echo "BENCH dataplane-delta routes=$n ecmp=$k median_ms=$dmed p99_ms=$dp99 fullset_ms=$dfull"
  done
done
