#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds (release build for the
# binary, ASan/UBSan build for unit tests, clang libFuzzer build for fuzz
# targets), then runs test/run.py, which ends with "N passed, N failed, N skipped".
# Extra arguments go to test/run.py (e.g. --only bird, --phases unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh all
flavours=(release asan)
# The fuzz build exists only once there is a fuzz target to build.
ls test/fuzz/*_fuzz.cpp >/dev/null 2>&1 && flavours+=(fuzz)
bash scripts/build.sh "${flavours[@]}"
exec python3 test/run.py "$@"
