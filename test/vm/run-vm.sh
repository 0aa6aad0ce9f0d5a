#!/bin/bash
# run-vm.sh — boots Debian's stock kernel under qemu (TCG) with a busybox initramfs that
# loads the modules this kernel lacks on the host (ipip, bridge, veth, 9p; nf_tables and
# nft_objref for the tunnel guard), mounts the host's / read-only over virtio-9p, chroots
# into it and runs one test script with the host's own binaries; then powers off. Prints
# "VMTEST rc=N" with the script's exit code.
# Adapted from /work/shared/recipes/vm-ipip.sh.
#   usage: run-vm.sh WORKDIR SCRIPT [ARGS...]   (SCRIPT path as seen from the host's /)
# WORKDIR is shared read-write at the same path in the guest (guest /tmp is an empty tmpfs).
# needs: qemu-system-x86 linux-image-amd64 busybox-static cpio kmod (scripts/install-deps.sh all)
# Environment: VM_KERNEL=PATH boots that kernel instead (one with every driver built in,
# e.g. test/vm/build_tcp_ao_kernel.sh's: no modules are loaded); VM_ACCEL (default tcg:
# KVM has hung guests on these machines), VM_SMP (default 1), VM_MEM (default 1024M).
set -euo pipefail
W=$1; shift
TEST=$1; shift
ARGS="$*"
if [ -n "${VM_KERNEL:-}" ]; then
  KIMG=$VM_KERNEL MODS=""
else
  K=${K:-$(ls /lib/modules | grep -v cloud | sort -V | tail -1)}
  KIMG=/boot/vmlinuz-$K MODS="ipip bridge veth 9p 9pnet_virtio virtio_pci nf_tables nft_objref"
fi
[ -f "$KIMG" ] || { echo "no kernel image $KIMG"; exit 2; }
mkdir -p $W/ir/{bin,dev,proc,sys,host,lib/modules}
cp /bin/busybox $W/ir/bin/busybox
: > $W/ir/mods
for m in $MODS; do
  for ko in $(modprobe -S $K --show-depends $m | awk '$1=="insmod"{print $2}'); do
    grep -qx "$ko" $W/ir/mods || { echo "$ko" >> $W/ir/mods; cp "$ko" $W/ir/lib/modules/; }
  done
done
sed 's|.*/||' $W/ir/mods > $W/ir/mods.base && mv $W/ir/mods.base $W/ir/mods
cat > $W/ir/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for ko in $(cat /mods); do
  f=/lib/modules/$ko
  case $ko in *.xz) xz -d -c $f > /tmp.ko 2>/dev/null && f=/tmp.ko ;; esac
  insmod $f || echo "insmod $ko failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 host /host || echo "9p mount failed"
for d in proc sys dev; do mount --rbind /$d /host/$d; done
for d in tmp run; do mount -t tmpfs $d /host/$d; done
mkdir -p /host/run/netns
T=$(sed -n 's/.*vmtest=\([^ ]*\).*/\1/p' /proc/cmdline); S=$(sed -n 's/.*vmshare=\([^ ]*\).*/\1/p' /proc/cmdline)
A=$(sed -n 's/.*vmargs=\([^ ]*\).*/\1/p' /proc/cmdline | tr ',' ' ')
mkdir -p /host$S && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 work /host$S || echo "rw share failed"
chroot /host /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$T" $A 2>&1; echo "VMTEST rc=$?"
# without ACPI (VM_KERNEL's) there is no power-off: a reset, which -no-reboot makes qemu's exit
if [ -d /sys/firmware/acpi ]; then poweroff -f; else reboot -f; fi
INIT
chmod +x $W/ir/init
(cd $W/ir && find . | cpio -o -H newc 2>/dev/null | gzip -1) > $W/initrd.gz
ACCEL=${VM_ACCEL:-tcg}
CPU=max; [ "$ACCEL" = kvm ] && CPU=host
exec qemu-system-x86_64 -accel $ACCEL -cpu $CPU -m ${VM_MEM:-1024M} -smp ${VM_SMP:-1} -nographic -no-reboot -nodefaults \
  -serial stdio -kernel "$KIMG" -initrd $W/initrd.gz \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path=$W,mount_tag=work,security_model=none \
  -append "console=ttyS0 quiet panic=-1 vmtest=$TEST vmshare=$W vmargs=$(echo $ARGS | tr ' ' ',')"
