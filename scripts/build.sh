#!/usr/bin/env bash
# Builds the named flavours (default: release):
#   release  build/       -O2, warnings as errors: the tabby binary, benches
#   asan     build-asan/  ASan+UBSan: unit tests
#   fuzz     build-fuzz/  clang++ libFuzzer targets
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- release
for flavour in "$@"; do
  case "$flavour" in
    release) dir=build; opts=(--buildtype=release -Dwerror=true) ;;
    asan) dir=build-asan; opts=(--buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false) ;;
    fuzz) dir=build-fuzz; opts=(--buildtype=debug -Dfuzz=true -Db_lundef=false)
          export CXX=clang++ ;;
    *) echo "unknown build flavour $flavour" >&2; exit 2 ;;
  esac
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "${opts[@]}" >/dev/null
  fi
  ninja -C "$dir" >/dev/null || ninja -C "$dir"
  unset CXX
done
