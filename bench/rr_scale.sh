#!/usr/bin/env bash
# Route reflector at scale: P iBGP clients from one epoll process, each
# announcing k /26s, reflected to all; tabby vs BIRD 2 vs FRR in fresh namespaces.
#   bash bench/rr_scale.sh                               # P = 1000,2000,5000; k = 1,20
#   bash bench/rr_scale.sh --clients 1000 --prefixes 1 --reflectors tabby,bird
# TABBY_BIN selects the tabby binary (default build/felix/tabby).
set -euo pipefail
cd "$(dirname "$0")/.."
export TABBY_ROOT="$PWD"
export TABBY_BIN="${TABBY_BIN:-$PWD/build/felix/tabby}"
exec python3 bench/rr_scale.py "$@"
