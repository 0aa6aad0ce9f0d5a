#!/usr/bin/env bash
# The demo: a three-node cluster in network namespaces on one bridge. Each node
# runs `tabby agent` (iBGP full mesh, AS 64512) with its kernel dataplane on,
# announces its pod block (198.19.0.N/26) and installs the other nodes' blocks
# as kernel routes. Two "pods" per node (a netns + veth each, wired the way
# Calico's CNI plugin wires them: /32 on eth0, default route via 169.254.1.1,
# proxy ARP on the host-side cali* veth) then ping every other pod.
# Everything lives in namespaces this script creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh build
bash scripts/build.sh release
TABBY=$PWD/build/felix/tabby

P="td$$-"
WORK=$(mktemp -d /tmp/tabby-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do ip netns del "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

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
  ip -n "$ns" link set eth0 up
  # An upstream default route, as a real node has: proxy ARP answers a pod's
  # ARP for its gateway 169.254.1.1 only when the node has a route to it.
  ip -n "$ns" route add default via 198.18.0.254 dev eth0
done

say "starting tabby agent on each node (full mesh iBGP, dataplane on)"
for n in 1 2 3; do
  block="198.19.0.$(( (n - 1) * 64 ))/26"
  {
    echo "nodeName: node$n"
    echo "routerID: 198.18.0.1$n"
    echo "asNumber: 64512"
    echo "apiSocket: $WORK/node$n.sock"
    echo "dataplane: {enabled: true}"
    echo "peers:"
    for m in 1 2 3; do
      [ "$m" = "$n" ] && continue
      echo "  - {peerIP: 198.18.0.1$m, asNumber: 64512, holdTime: 9, connectRetryTime: 1, description: node-to-node mesh}"
    done
    echo "announce:"
    echo "  - prefix: $block"
  } > "$WORK/node$n.yaml"
  ip netns exec "${P}node$n" "$TABBY" agent --config "$WORK/node$n.yaml" > "$WORK/node$n.log" 2>&1 &
  PIDS+=($!)
done

say "attaching 2 pods per node (standing in for the CNI plugin: veth cali*, /32, proxy ARP)"
PODS=()
for n in 1 2 3; do
  for p in 1 2; do
    ns="${P}node$n"; pod="${P}n${n}pod$p"
    ip_addr="198.19.0.$(( (n - 1) * 64 + p + 1 ))"
    host_if="cali$(printf 'node%dpod%d' "$n" "$p" | sha1sum | cut -c1-11)"
    ip netns add "$pod"
    ip link add "$host_if" netns "$ns" type veth peer name eth0 netns "$pod"
    ip -n "$pod" link set lo up
    ip -n "$pod" addr add "$ip_addr/32" dev eth0
    ip -n "$pod" link set eth0 up
    ip -n "$pod" route add 169.254.1.1 dev eth0 scope link
    ip -n "$pod" route add default via 169.254.1.1 dev eth0
    ip -n "$ns" link set "$host_if" up
    ip netns exec "$ns" sysctl -qw "net.ipv4.conf.$host_if.proxy_arp=1" \
      "net.ipv4.neigh.$host_if.proxy_delay=0" "net.ipv4.ip_forward=1"
    ip -n "$ns" route add "$ip_addr/32" dev "$host_if" scope link
    PODS+=("$pod:$ip_addr")
  done
done

say "waiting for the BGP mesh to establish"
for i in $(seq 1 60); do
  up=0
  for n in 1 2 3; do
    c=$("$TABBY" status -o json --socket "$WORK/node$n.sock" 2>/dev/null | grep -c '"state": "Established"' || true)
    up=$((up + c))
  done
  [ "$up" -ge 6 ] && break
  sleep 0.5
done
[ "$up" -ge 6 ] || { echo "the mesh did not come up (agents' logs below)"; cat "$WORK"/node*.log; exit 1; }

say "waiting for each node to install the other nodes' blocks"
for i in $(seq 1 60); do
  have=0
  for n in 1 2 3; do
    c=$(ip -n "${P}node$n" route show proto 44 | grep -c '^198\.19\.0\..*/26 via' || true)
    have=$((have + c))
  done
  [ "$have" -ge 6 ] && break
  sleep 0.5
done
[ "$have" -ge 6 ] || { echo "routes were not installed (agents' logs below)"; cat "$WORK"/node*.log; exit 1; }

say "tabby status on node1"
"$TABBY" status --socket "$WORK/node1.sock"
say "tabby routes on node1"
"$TABBY" routes --socket "$WORK/node1.sock"
say "kernel routes tabby wrote on node1 (ip route show proto 44)"
ip -n "${P}node1" route show proto 44

say "every pod pings every other pod"
ok=0; bad=0
for src in "${PODS[@]}"; do
  for dst in "${PODS[@]}"; do
    [ "$src" = "$dst" ] && continue
    if ip netns exec "${src%%:*}" ping -c 3 -i 0.2 -W 1 -q "${dst##*:}" >/dev/null 2>&1; then
      ok=$((ok + 1)); printf '  %-16s -> %-14s ok\n' "${src##*:}" "${dst##*:}"
    else
      bad=$((bad + 1)); printf '  %-16s -> %-14s FAILED\n' "${src##*:}" "${dst##*:}"
    fi
  done
done
say "$ok pings answered, $bad failed"
[ "$bad" -eq 0 ]
