#!/usr/bin/env bash
# soak.sh — the soak benchmark (not in CI): a 3-node tabby cluster on etcd under pod,
# policy, BGP-session and datastore churn for 30 minutes (--minutes N), with a
# continuous UDP probe between pods that are never churned. Prints RSS, fds and CPU of
# each agent every minute, then the probe's lost packets and a verdict (memory and fds
# flat, zero loss). Exit 0: clean; 1: not clean or the cluster could not be set up.
# The work is in bench/soak.py (options: python3 bench/soak.py --help).
#
# Usage: bash bench/soak.sh [--minutes N] [--pps N] [--pod-every S] [--policy-every S]
#                           [--flap-every S] [--etcd-every S] [--etcd-down S]
#        env TABBY_BIN (default build/felix/tabby). Needs root, etcd, etcdctl, ss.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export TABBY_BIN=${TABBY_BIN:-$ROOT/build/felix/tabby}
[ -x "$TABBY_BIN" ] || { echo "build first: bash scripts/build.sh release (no $TABBY_BIN)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
exec python3 "$ROOT/bench/soak.py" "$@"
