#!/bin/bash
# dataplane.sh — route-programming benchmark (prints figures; never asserts on time).
# For each N (default "10000 100000"; BENCH_SIZES="10000 100000 1000000" for 1M) and
# ECMP width (1 and 4), in a fresh network namespace each: install then remove N /32
# routes with
#   tabby    tabby's Linux dataplane (build/bench/tabby-dp-bench, watching route/link
#            events as the agent does), plus the 1-route delta and full-set replaces
#   floor    a minimal batched raw-netlink writer (build/bench/tabby-nl-floor)
#   ip       `ip -batch` of the same routes
#   bird     BIRD 2 exporting the same static routes to the kernel (time from enabling
#            the static protocol until the kernel protocol has exported N; removal: disable)
#   base     (only with BENCH_BASELINE=/path/to/an-older/tabby-dp-bench) that build, run
#            exactly as tabby's (watching events), for before/after figures in the
#            same run; BENCH_BASELINE_ARGS adds arguments (e.g. "noevents")
# Each tool runs BENCH_REPEAT times (default 3, alternating tools) and the median is
# printed, with wall times, routes/s and tabby's ratios. Machine-readable lines start
# "BENCH ". Instruction counts per route: bench/dataplane_callgrind.sh.
# Usage: bash bench/dataplane.sh   (needs build/ from scripts/build.sh release; root)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${TABBY_BUILD:-$ROOT/build}
SIZES=${BENCH_SIZES:-"10000 100000"}
REPEAT=${BENCH_REPEAT:-3}
BASELINE=${BENCH_BASELINE:-}
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
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

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

declare -A R   # R[tool_i], R[tool_r]: space-separated samples; R[tabby_<delta field>] likewise
run_tabby() {  # tool binary args...
  local tool=$1 bin=$2; shift 2
  fresh_ns t
  local out
  out=$(ip netns exec $NS "$bin" $n $k dummy0 "$@")
  R[${tool}_i]+=" $(field install_s "$out")"; R[${tool}_r]+=" $(field remove_s "$out")"
  for f in delta_median_ms delta_p99_ms fullset_delta_ms sameset_ms; do R[${tool}_$f]+=" $(field $f "$out")"; done
}
run_floor() {
  fresh_ns f
  local out
  out=$(ip netns exec $NS "$B/bench/tabby-nl-floor" $n $k dummy0)
  R[floor_i]+=" $(field install_s "$out")"; R[floor_r]+=" $(field remove_s "$out")"
}
run_ip() {
  fresh_ns i
  local t0 t1 t2 got
  t0=$(now); ip -n $NS -batch $W/add.batch; t1=$(now)
  got=$(count_routes 46); [ "$got" -eq "$n" ] || echo "warning: ip -batch installed $got of $n"
  ip -n $NS -batch $W/del.batch; t2=$(now)
  R[ip_i]+=" $(echo "$t1 - $t0" | bc -l)"; R[ip_r]+=" $(echo "$t2 - $t1" | bc -l)"
}
run_bird() {
  fresh_ns b
  rm -f $W/bird.ctl
  ip netns exec $NS bird -f -c $W/bird.conf -s $W/bird.ctl -P $W/bird.pid & BIRDPID=$!
  for _ in $(seq 600); do birdc -s $W/bird.ctl show status >/dev/null 2>&1 && break; sleep 0.1; done
  local t0 t1 t2 got
  t0=$(now); birdc -s $W/bird.ctl enable st1 >/dev/null
  while [ "$(bird_exported)" != "$n" ]; do sleep 0.02; done; t1=$(now)
  got=$(count_routes bird); [ "$got" -eq "$n" ] || echo "warning: bird installed $got of $n"
  birdc -s $W/bird.ctl disable st1 >/dev/null
  while [ "$(bird_exported)" != "0" ]; do sleep 0.02; done
  while [ "$(count_routes bird)" -ne 0 ]; do sleep 0.05; done; t2=$(now)
  R[bird_i]+=" $(echo "$t1 - $t0" | bc -l)"; R[bird_r]+=" $(echo "$t2 - $t1" | bc -l)"
  kill $BIRDPID; wait $BIRDPID 2>/dev/null || true; BIRDPID=""
}

tools="tabby floor ip bird"
[ -n "$BASELINE" ] && tools="tabby base floor ip bird"
echo "machine load (1/5/15 min): $(cut -d" " -f1-3 /proc/loadavg), $(nproc) cores; median of $REPEAT runs per tool"
printf "%-8s %-5s %-7s %10s %12s %10s %12s\n" "routes" "ecmp" "tool" "install_s" "install_r/s" "remove_s" "remove_r/s"
for n in $SIZES; do
  for k in 1 4; do
    R=()
    gen_ip_batch $n $k
    gen_bird $n $k
    for _ in $(seq $REPEAT); do
      run_tabby tabby "$B/bench/tabby-dp-bench"
      [ -n "$BASELINE" ] && run_tabby base "$BASELINE" ${BENCH_BASELINE_ARGS:-}
      run_floor
      run_ip
      run_bird
    done
    declare -A M
    for tool in $tools; do
      M[${tool}_i]=$(median <<<"${R[${tool}_i]}"); M[${tool}_r]=$(median <<<"${R[${tool}_r]}")
      i=${M[${tool}_i]}; r=${M[${tool}_r]}
      printf "%-8s %-5s %-7s %10.3f %12.0f %10.3f %12.0f\n" $n $k $tool $i $(echo "$n / $i" | bc -l) $r $(echo "$n / $r" | bc -l)
      echo "BENCH dataplane routes=$n ecmp=$k tool=$tool install_s=$i remove_s=$r samples_install=\"${R[${tool}_i]# }\" samples_remove=\"${R[${tool}_r]# }\""
    done
    for tool in ${tools#tabby }; do
      printf "  tabby/%s install ratio %.2fx (time), remove %.2fx\n" $tool $(echo "${M[tabby_i]} / ${M[${tool}_i]}" | bc -l) $(echo "${M[tabby_r]} / ${M[${tool}_r]}" | bc -l)
    done
    for tool in tabby ${BASELINE:+base}; do
      dmed=$(median <<<"${R[${tool}_delta_median_ms]}"); dp99=$(median <<<"${R[${tool}_delta_p99_ms]}")
      dfull=$(median <<<"${R[${tool}_fullset_delta_ms]}"); dsame=$(median <<<"${R[${tool}_sameset_ms]:-}")
      printf "  %s 1-route delta with %s routes installed: median %s ms, p99 %s ms; set_routes of all %s with 1 changed: %s ms, unchanged: %s ms\n" \
        $tool $n $dmed $dp99 $n $dfull "${dsame:-n/a}"
      echo "BENCH dataplane-delta routes=$n ecmp=$k tool=$tool median_ms=$dmed p99_ms=$dp99 fullset_ms=$dfull sameset_ms=${dsame:-n/a}"
    done
  done
done
echo "machine load at the end (1/5/15 min): $(cut -d" " -f1-3 /proc/loadavg)"
