#!/usr/bin/env bash
# deploy/image/build.sh — builds the tabby image FROM scratch with buildah from the
# local build (nothing is pulled: this needs no registry). Stages a root filesystem
# (build/felix/tabby, the libraries `ldd` names, the loader, Debian's portmap and
# bandwidth from /usr/lib/cni), runs `buildah bud -f deploy/Containerfile` on it and
# prints the image size.
#   bash deploy/image/build.sh [--tag NAME] [--archive FILE] [--binary PATH] [-- BUILDAH_GLOBAL_OPTS...]
#   --archive FILE   also write an oci-archive (for `podman load -i FILE` elsewhere)
#   after --: global options for buildah, e.g. --root DIR --runroot DIR --storage-driver vfs
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tag="localhost/tabby:$(git -C "$root" describe --always --dirty 2>/dev/null || echo dev)"
archive="" binary="$root/build/felix/tabby" buildah_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --) shift; buildah_opts=("$@"); break ;;
    *) echo "usage: $0 [--tag NAME] [--archive FILE] [--binary PATH] [-- BUILDAH_GLOBAL_OPTS...]" >&2; exit 2 ;;
  esac
done
command -v buildah >/dev/null || { echo "buildah not installed (apt-get install buildah)" >&2; exit 1; }
[ -x "$binary" ] || { echo "no tabby binary at $binary (bash scripts/build.sh release)" >&2; exit 1; }
for p in portmap bandwidth; do
  [ -x "/usr/lib/cni/$p" ] || { echo "/usr/lib/cni/$p missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
done

ctx="$(mktemp -d /tmp/tabby-image.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/run/tabby" "$rootfs/tmp" "$rootfs/etc/tabby" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/local/bin/tabby"
install -m 0755 /usr/lib/cni/portmap /usr/lib/cni/bandwidth "$rootfs/usr/local/bin/"
# Every shared object the binaries load, at the path the loader looks for it.
for f in "$binary" /usr/lib/cni/portmap /usr/lib/cni/bandwidth; do
  ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib/{print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
# The loader's own path (/lib64/ld-linux-x86-64.so.2 on amd64) is a symlink on Debian.
loader="$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
mkdir -p "$rootfs$(dirname "$loader")"
cp -L "$loader" "$rootfs$loader"
printf 'root:x:0:0:root:/:/usr/local/bin/tabby\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"
cp "$root/deploy/Containerfile" "$ctx/Containerfile"

buildah "${buildah_opts[@]}" bud --quiet --layers=false -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null
bytes="$(du -sb "$rootfs" | cut -f1)"
echo "image $tag: $(( bytes / 1024 / 1024 )) MiB uncompressed (${bytes} bytes; tabby $(stat -c %s "$binary") bytes, $(find "$rootfs" -name '*.so*' | wc -l) shared objects)"
if [ -n "$archive" ]; then
  rm -f "$archive"
  buildah "${buildah_opts[@]}" push --quiet "$tag" "oci-archive:$archive:$tag" >/dev/null
  echo "archive $archive: $(( $(stat -c %s "$archive") / 1024 / 1024 )) MiB"
fi
