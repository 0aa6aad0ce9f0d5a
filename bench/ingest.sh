#!/usr/bin/env bash
# Ingest benchmark: tabby vs BIRD 2, FRR, GoBGP receiving the same pre-encoded
# feed, in the same run. Prints a table and `BENCH ...` lines; never asserts on time.
#   bash bench/ingest.sh                      # 1x1M and 100x10k, packed and <=4 prefixes/UPDATE
#   bash bench/ingest.sh -n 200000 --receivers bird,tabby --shapes single --packings packed
#   bash bench/ingest.sh --receivers tabby --shapes single --packings packed --runs 3 --import-filter
#                                              # cost of a 20-rule import filter (receiver tabbyf)
# TABBY_BIN selects the tabby binary (default build/felix/tabby); if it is missing the
# others still run and the output says tabby was missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export TABBY_ROOT="$PWD"
export TABBY_BIN="${TABBY_BIN:-$PWD/build/felix/tabby}"
exec python3 bench/ingest.py "$@"
