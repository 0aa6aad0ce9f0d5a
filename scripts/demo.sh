#!/usr/bin/env bash
# The demo: a three-node cluster in network namespaces on one bridge. Each node
# runs `tabby agent` on a shared file datastore (a directory of manifests) with the
# node-to-node BGP mesh; each agent registers its Node, the CNI plugin (the same
# tabby binary, called the way a container runtime calls it) attaches 2 pods per
# node with addresses from the node's IPAM blocks — dual stack: an IPv4 pool and an
# IPv6 pool, so every pod gets one address of each family — and every pod pings
# every other pod over both. Then the IPv4 pool is switched to VXLAN and the pings
# run again (the IPv6 pool stays routed directly: VXLAN is IPv4-only). Last, every
# pod reaches an "outside" host (beyond the node bridge, off every pool, with no
# route to the pods): the pool has natOutgoing, so it sees the nodes' addresses.
# Everything lives in namespaces this script creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh build
bash scripts/build.sh release
TABBY=$PWD/build/felix/tabby

P="td$$-"
WORK=$(mktemp -d /tmp/tabby-demo.XXXXXX)
DS=$WORK/datastore
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do ip netns del "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pool6() {  # the IPv6 pool (dual stack): /122 blocks by default, as Calico
  cat > "$DS/pool6.yaml.tmp" <<EOF
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv6-ippool
spec:
  cidr: 2001:db8:19::/64
  natOutgoing: true
EOF
  mv "$DS/pool6.yaml.tmp" "$DS/pool6.yaml"
}
pool() {  # the cluster's IP pool, in the same YAML a Calico user writes
  cat > "$DS/pool.yaml.tmp" <<EOF
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 198.19.0.0/16
  blockSize: 26
  ipipMode: Never
  vxlanMode: $1
  natOutgoing: true
EOF
  mv "$DS/pool.yaml.tmp" "$DS/pool.yaml"
}

mkdir -p "$DS"
say "the datastore ($DS): an IPv4 and an IPv6 IPPool, vxlanMode Never, natOutgoing true"
pool Never
pool6
cat "$DS/pool.yaml" "$DS/pool6.yaml"

say "creating 3 nodes on a bridge (namespaces ${P}*)"
ip netns add "${P}fabric"
ip -n "${P}fabric" link add br0 type bridge
ip -n "${P}fabric" link set br0 up
for n in 1 2 3; do
  ns="${P}node$n"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add eth0 netns "$ns" type veth peer name "n$n" netns "${P}fabric"
  ip -n "${P}fabric" link set "n$n" master br0 up
  ip -n "$ns" addr add "198.18.0.1$n/24" dev eth0
  ip -n "$ns" addr add "2001:db8:18::1$n/64" dev eth0 nodad
  ip -n "$ns" link set eth0 up
  # An upstream default route, as a real node has: proxy ARP answers a pod's
  # ARP for its gateway 169.254.1.1 only when the node has a route to it.
  ip -n "$ns" route add default via 198.18.0.254 dev eth0
done
# The outside host: the nodes' default gateway, on the bridge, off every pool and
# with no route to the pods (only its own subnet).
ip netns add "${P}outside"
ip -n "${P}outside" link set lo up
ip link add eth0 netns "${P}outside" type veth peer name out netns "${P}fabric"
ip -n "${P}fabric" link set out master br0 up
ip -n "${P}outside" addr add 198.18.0.254/24 dev eth0
ip -n "${P}outside" link set eth0 up

say "starting tabby agent on each node (file datastore, full mesh, dataplane on; IP6 gives the Node its IPv6 address)"
for n in 1 2 3; do
  cat > "$WORK/node$n.yaml" <<EOF
nodeName: node$n
routerID: 198.18.0.1$n
apiSocket: $WORK/node$n.sock
datastore: {type: file, directory: $DS}
dataplane: {enabled: true}
EOF
  ip netns exec "${P}node$n" env IP6="2001:db8:18::1$n/64" "$TABBY" agent --config "$WORK/node$n.yaml" > "$WORK/node$n.log" 2>&1 &
  PIDS+=($!)
done

say "waiting for the BGP mesh (3 nodes, 12 sessions: one IPv4 and one IPv6 per node pair)"
for i in $(seq 1 80); do
  up=0
  for n in 1 2 3; do
    c=$("$TABBY" status -o json --socket "$WORK/node$n.sock" 2>/dev/null | grep -c '"state": "Established"' || true)
    up=$((up + c))
  done
  [ "$up" -ge 12 ] && break
  sleep 0.25
done
[ "$up" -ge 12 ] || { echo "the mesh did not come up (agents' logs below)"; cat "$WORK"/node*.log; exit 1; }

say "attaching 2 pods per node through the CNI plugin (as a container runtime does)"
CNI_CONF='{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tabby","tabbyConfig":"CONF"}'
PODS=()
PODS6=()  # "netns|IPv6 address" (an IPv6 address has colons)
for n in 1 2 3; do
  for p in 1 2; do
    pod="${P}n${n}pod$p"
    ip netns add "$pod"
    out=$(echo "${CNI_CONF/CONF/$WORK/node$n.yaml}" | ip netns exec "${P}node$n" env CNI_COMMAND=ADD \
      CNI_CONTAINERID="demo-$n-$p" CNI_NETNS="/var/run/netns/$pod" CNI_IFNAME=eth0 \
      CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-$n-$p" CNI_PATH="$(dirname "$TABBY")" "$TABBY") ||
      { echo "CNI ADD failed: $out"; cat "$WORK"/node*.log; exit 1; }
    read -r ip_addr ip6_addr < <(echo "$out" | python3 -c 'import json,sys
print(" ".join(i["address"].split("/")[0] for i in json.load(sys.stdin)["ips"]))')
    printf '  node%d  default/web-%d-%d  %-14s %s\n' "$n" "$n" "$p" "$ip_addr" "${ip6_addr:-NO-IPv6}"
    PODS+=("$pod:$ip_addr")
    PODS6+=("$pod|${ip6_addr:-none}")
  done
done

wait_routes() {  # $1: a regex the other nodes' block routes match
  for i in $(seq 1 80); do
    have=0
    for n in 1 2 3; do
      c=$(ip -n "${P}node$n" route show proto 44 | grep -cE "^198\.19\.[0-9]+\.[0-9]+/26 $1" || true)
      have=$((have + c))
    done
    [ "$have" -ge 6 ] && return 0
    sleep 0.25
  done
  echo "block routes ($1) were not installed (agents' logs below)"; cat "$WORK"/node*.log; exit 1
}
# ping_pairs SEP WHAT ENTRY...: each ENTRY is "namespace SEP address"; every one pings
# every other; WHAT names them in the summary ("" or "IPv6 ").
ping_pairs() {
  local sep=$1 what=$2 ok=0 bad=0 src dst
  shift 2
  for src in "$@"; do
    for dst in "$@"; do
      [ "$src" = "$dst" ] && continue
      if ip netns exec "${src%%"$sep"*}" ping -c 2 -i 0.2 -W 1 -q "${dst##*"$sep"}" >/dev/null 2>&1; then
        ok=$((ok + 1)); printf '  %-18s -> %-18s ok\n' "${src##*"$sep"}" "${dst##*"$sep"}"
      else
        bad=$((bad + 1)); printf '  %-18s -> %-18s FAILED\n' "${src##*"$sep"}" "${dst##*"$sep"}"
      fi
    done
  done
  say "$ok ${what}pings answered, $bad failed"
  [ "$bad" -eq 0 ]
}
ping_all() { ping_pairs : "" "${PODS[@]}"; }

wait_routes "via 198\.18\.0\.1[0-9] dev eth0"
say "tabby status on node1"
"$TABBY" status --socket "$WORK/node1.sock"
say "tabby routes on node1"
"$TABBY" routes --socket "$WORK/node1.sock"
say "kernel routes tabby wrote on node1 (ip route show proto tabby)"
ip -n "${P}node1" route show proto 44

ping_all6() { ping_pairs "|" "IPv6 " "${PODS6[@]}"; }

say "every pod pings every other pod (plain routes)"
ping_all
say "kernel IPv6 routes tabby wrote on node1 (ip -6 route show proto tabby)"
ip -n "${P}node1" -6 route show proto 44
say "every pod pings every other pod over IPv6 (MP-BGP, /122 blocks routed directly)"
ping_all6
say "tabby ipam on node1 (blocks of both families)"
"$TABBY" ipam --socket "$WORK/node1.sock"

say "switching the pool to VXLAN (vxlanMode: Always)"
pool Always
wait_routes "via 198\.19\.[0-9.]+ dev vxlan\.tabby onlink"
ip -n "${P}node1" route show proto 44
ip -n "${P}node1" -d link show vxlan.tabby | head -3

say "every pod pings every other pod (VXLAN)"
ping_all
say "and over IPv6 (its pool routed directly)"
ping_all6

say "every pod sends to the outside host 198.18.0.254 (no route back to the pods): natOutgoing"
ip netns exec "${P}outside" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777)); s.settimeout(10)
print("ready", flush=True)
for _ in range(int(sys.argv[1])):
    data, addr = s.recvfrom(100)
    print(f"  outside host: {data.decode():<30} seen as {addr[0]}", flush=True)
' "${#PODS[@]}" > "$WORK/outside.log" 2>&1 &
LISTENER=$!
for i in $(seq 1 40); do grep -q ready "$WORK/outside.log" && break; sleep 0.1; done
for pod in "${PODS[@]}"; do
  ip netns exec "${pod%%:*}" python3 -c 'import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[1].encode(), ("198.18.0.254", 7777))' \
    "from pod ${pod##*:}"
done
wait "$LISTENER" || true
grep -v ready "$WORK/outside.log"
nat_ok=0 nat_bad=0
for pod in "${PODS[@]}"; do
  if ip netns exec "${pod%%:*}" ping -c 2 -i 0.2 -W 1 -q 198.18.0.254 >/dev/null 2>&1; then
    nat_ok=$((nat_ok + 1))
  else
    nat_bad=$((nat_bad + 1)); echo "  ${pod##*:} -> outside: FAILED"
  fi
done
say "$nat_ok pods reach the outside host masqueraded, $nat_bad failed"
ip netns exec "${P}node1" nft list chain inet tabby nat-outgoing | grep masquerade
[ "$nat_bad" -eq 0 ]

say "releasing the pods through the CNI plugin (DEL)"
for n in 1 2 3; do
  for p in 1 2; do
    echo "${CNI_CONF/CONF/$WORK/node$n.yaml}" | ip netns exec "${P}node$n" env CNI_COMMAND=DEL \
      CNI_CONTAINERID="demo-$n-$p" CNI_NETNS="/var/run/netns/${P}n${n}pod$p" CNI_IFNAME=eth0 \
      CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-$n-$p" CNI_PATH="$(dirname "$TABBY")" "$TABBY" >/dev/null
  done
done
say "done: tearing down"
