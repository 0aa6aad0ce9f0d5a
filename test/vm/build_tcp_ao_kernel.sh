#!/bin/bash
# build_tcp_ao_kernel.sh — builds the small kernel the TCP-AO test boots under qemu
# (Debian's packaged kernels, 6.1 and 6.12, ship with CONFIG_TCP_AO unset; the host's may
# too). Source: Debian's linux-source-6.12 tarball; config: `make tinyconfig` plus
# test/vm/tcp_ao_kernel.config, everything built in (no modules, no initramfs tools).
# The bzImage is cached under $TABBY_VM_KERNEL_CACHE (default /var/cache/tabby-vm-kernel),
# keyed by the source package's version, a hash of the config fragment and the recipe
# version below, so a second run (or another checkout) reuses it. Prints the bzImage's path as
# the last line of stdout; progress and the build time go to stderr.
#   usage: build_tcp_ao_kernel.sh            (needs: linux-source-6.12 flex bison bc
#          libelf-dev libssl-dev build-essential: scripts/install-deps.sh all)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FRAGMENT=$HERE/tcp_ao_kernel.config
SRC_PKG=linux-source-6.12
TARBALL=/usr/src/$SRC_PKG.tar.xz
CACHE=${TABBY_VM_KERNEL_CACHE:-/var/cache/tabby-vm-kernel}
JOBS=${TABBY_VM_KERNEL_JOBS:-2}

die() { echo "build_tcp_ao_kernel: $*" >&2; exit 1; }
[ -f "$TARBALL" ] || die "no $TARBALL: install the $SRC_PKG package (scripts/install-deps.sh all does)"
for t in make gcc flex bison bc xz; do
  command -v $t >/dev/null || die "$t not installed (scripts/install-deps.sh all installs it)"
done
[ -f /usr/include/libelf.h ] || die "libelf-dev not installed (scripts/install-deps.sh all installs it)"
version=$(dpkg-query -W -f='${Version}' $SRC_PKG 2>/dev/null || true)
[ -n "$version" ] || version=$(stat -c %Y "$TARBALL")
# Bump RECIPE when the build steps below change what comes out (comments do not count).
RECIPE=1
key=$( (cat "$FRAGMENT"; echo "recipe $RECIPE") | sha256sum | cut -c1-16)
out=$CACHE/$SRC_PKG-${version//[^A-Za-z0-9.+-]/_}-$key
if [ -f "$out/bzImage" ]; then
  echo "build_tcp_ao_kernel: cached kernel $out/bzImage" >&2
  echo "$out/bzImage"; exit 0
fi

mkdir -p "$CACHE" 2>/dev/null && [ -w "$CACHE" ] || die "cannot write the cache directory $CACHE"
exec 9>"$CACHE/.lock"
flock 9  # one build at a time; a concurrent caller waits, then finds the cached kernel
if [ -f "$out/bzImage" ]; then echo "$out/bzImage"; exit 0; fi

work=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "build_tcp_ao_kernel: unpacking $TARBALL ($version)" >&2
tar -xJf "$TARBALL" -C "$work"
src=$work/$SRC_PKG obj=$work/obj
mkdir -p "$obj"
make -s -C "$src" O="$obj" tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$FRAGMENT" >/dev/null
make -s -C "$src" O="$obj" olddefconfig >/dev/null
# Every option the fragment asks for must have survived olddefconfig (a dependency it
# lacks would silently drop it): a kernel without TCP-AO would make the test meaningless.
missing=()
while read -r opt; do
  grep -qx "$opt" "$obj/.config" || missing+=("$opt")
done < <(grep -E '^CONFIG_[A-Z0-9_]+=' "$FRAGMENT")
[ ${#missing[@]} -eq 0 ] || die "options dropped by olddefconfig (unmet dependencies): ${missing[*]}"
echo "build_tcp_ao_kernel: building bzImage with make -j$JOBS (nice 10)" >&2
TIMEFORMAT='%R %U %S'
if ! { time nice -n 10 make -C "$src" O="$obj" -j"$JOBS" bzImage > "$work/build.log" 2>&1; } 2> "$work/make-time"; then
  tail -30 "$work/build.log" >&2
  die "kernel build failed (log above)"
fi
read -r make_real make_user make_sys < "$work/make-time"
mkdir -p "$out.tmp"
cp "$obj/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$obj/.config" "$out.tmp/config"
echo "$version" > "$out.tmp/source-version"
secs=$(( $(date +%s) - start ))
echo "$secs" > "$out.tmp/build-seconds"
cpu=$(echo "$make_user + $make_sys" | bc)
echo "make: ${make_real}s wall, ${cpu}s CPU (user+sys)" > "$out.tmp/build-times"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "build_tcp_ao_kernel: built $out/bzImage in ${secs}s (unpack + config + make -j$JOBS: ${make_real}s wall, ${cpu}s CPU; load average now $(cut -d' ' -f1-3 /proc/loadavg))" >&2
echo "$out/bzImage"
