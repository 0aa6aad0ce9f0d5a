#!/usr/bin/env bash
# Installs the Debian 12 packages tabby needs to build, test and benchmark.
# Idempotent: packages already present are skipped without touching apt.
# Daemons shipped by the peer packages (bird, frr, etcd, pmacct) are kept from
# starting as system services by a temporary policy-rc.d: tests start their
# own instances inside namespaces.
set -euo pipefail

BUILD_PKGS=(build-essential g++ meson ninja-build pkg-config cmake libxxhash-dev
  libboost-dev libboost-system-dev libnl-3-dev libnl-route-3-dev libnftables-dev
  protobuf-compiler libprotobuf-dev doctest-dev libyaml-cpp-dev nlohmann-json3-dev
  libssl-dev libspdlog-dev libfmt-dev clang libclang-rt-14-dev)
RUN_PKGS=(iproute2 nftables iputils-ping procps psmisc time python3 python3-yaml bc
  openssl)  # openssl: the kubernetes datastore test makes its self-signed cert
PEER_PKGS=(bird2 frr gobgpd etcd-server etcd-client tcpdump pmacct)  # pmacct: pmbmpd, the BMP collector
# deploy/ tests: a real container runtime (podman with the CNI backend; runc because
# crun refuses hybrid cgroups), the standard CNI plugins (portmap, bandwidth), the
# image builder, kubectl (unless one is installed already), promtool, busybox rootfs,
# iptables (portmap programs hostPorts with it), systemd-analyze.
DEPLOY_PKGS=(podman buildah runc conmon containernetworking-plugins iptables busybox-static prometheus systemd)
command -v kubectl >/dev/null 2>&1 || DEPLOY_PKGS+=(kubernetes-client)
VM_PKGS=(qemu-system-x86 linux-image-amd64 busybox-static cpio kmod
  # the TCP-AO test's own kernel (test/vm/build_tcp_ao_kernel.sh): Debian's source and what building it takes
  linux-source-6.12 flex bison bc libelf-dev libssl-dev xz-utils)

want=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}")
case "${1:-all}" in
  build) ;;
  all) want+=("${PEER_PKGS[@]}" "${VM_PKGS[@]}" "${DEPLOY_PKGS[@]}") ;;
  peers) want+=("${PEER_PKGS[@]}") ;;
  *) echo "usage: $0 [build|peers|all]" >&2; exit 2 ;;
esac

# tabby's route protocol number, by name: `ip route show proto tabby` (dataplane).
if [ -d /etc/iproute2 ] || mkdir -p /etc/iproute2/rt_protos.d 2>/dev/null; then
  mkdir -p /etc/iproute2/rt_protos.d
  [ "$(cat /etc/iproute2/rt_protos.d/tabby.conf 2>/dev/null)" = "44 tabby" ] ||
    echo "44 tabby" > /etc/iproute2/rt_protos.d/tabby.conf 2>/dev/null ||
    echo "note: cannot write /etc/iproute2/rt_protos.d/tabby.conf (not root?)" >&2
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d; created_policy=1
fi
trap '[ $created_policy = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
