#!/usr/bin/env bash
# Build the Debian base image the VM backend (river_runner/backends/vm.py) boots.
#
# No image registry is reachable here, so the image is made from Debian's own packages:
# debootstrap minbase + the cloud kernel, systemd, cloud-init and openssh-server, written
# into an ext4 filesystem with `mkfs.ext4 -d` (no loop mount, no partition table) and
# converted to qcow2. There is no boot loader: QEMU boots with -kernel/-initrd, which this
# script copies out of the image's /boot next to it (simpler and faster than GRUB, and the
# guest kernel is still Debian's). Output, under ${RIVER_IMAGE_CACHE:-/var/cache/river-images}:
#   river-vm-<hash>/{base.qcow2,vmlinuz,initrd.img}   keyed by a hash of this script
#   river-vm -> river-vm-<hash>                       what runners and tests use
# Rebuilt only when missing or built by another version of this script (RIVER_IMAGES_FORCE=1
# rebuilds regardless). Debian packages come from the mirror this machine's apt already
# uses (as .ci/build-images.sh finds it), or RIVER_DEBIAN_MIRROR. Needs root.
set -euo pipefail

CACHE=${RIVER_IMAGE_CACHE:-/var/cache/river-images}
SUITE=${RIVER_DEBIAN_SUITE:-bookworm}
MIRROR=${RIVER_DEBIAN_MIRROR:-}
FORCE=${RIVER_IMAGES_FORCE:-0}
SIZE=${RIVER_VM_IMAGE_SIZE:-2G}
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
BUILD_HASH=$(sha256sum "$(readlink -f "${BASH_SOURCE[0]}")" | cut -c1-16)
OUT="$CACHE/river-vm-$BUILD_HASH"
T0=$(date +%s%N)
# debootstrap's own configuration pass fails on a set this large (python3 modules come
# before python3 is configured), so it lays down minbase + init, and apt (which orders
# configuration properly) installs the rest inside the chroot.
BASE_PACKAGES=systemd-sysv,udev
# acpid: the ACPI power button (QMP system_powerdown, River's stop) needs a listener, and
# minbase has no D-Bus, so systemd-logind (which would handle it) never runs.
PACKAGES="linux-image-cloud-amd64 cloud-init openssh-server netbase iproute2 ifupdown isc-dhcp-client procps acpid"

log() {
    local ms=$((($(date +%s%N) - T0) / 1000000))
    printf 'build-vm-image [%4d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}

if [[ -s "$OUT/base.qcow2" && "$FORCE" != 1 ]]; then
    ln -sfn "$(basename "$OUT")" "$CACHE/river-vm"
    log "$OUT is current"
    exit 0
fi
for tool in debootstrap qemu-img mkfs.ext4; do
    command -v "$tool" >/dev/null || { echo "build-vm-image: no $tool; run .ci/setup-qemu.sh" >&2; exit 1; }
done
if [[ -z "$MIRROR" ]]; then
    # The apt_mirror function of build-images.sh (one parser for the machine's sources).
    eval "$(sed -n '/^apt_mirror() {/,/^PY$/p' "$HERE/build-images.sh"; echo '}')"
    MIRROR=$(apt_mirror "$SUITE") || {
        echo "build-vm-image: no Debian archive in this machine's apt sources; set" \
            "RIVER_DEBIAN_MIRROR to a Debian mirror that has $SUITE" >&2
        exit 1
    }
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d /var/tmp/river-vm.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
ROOT="$WORK/rootfs"
log "debootstrap $SUITE minbase + $BASE_PACKAGES from $MIRROR"
debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    exit 1
}
log "apt-get install $PACKAGES (in the chroot)"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"  # start no services in the chroot
chmod +x "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true; rm -rf --one-file-system "$WORK"' EXIT
# shellcheck disable=SC2086
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $PACKAGES >"$WORK/apt.log" 2>&1 || {
    tail -n 30 "$WORK/apt.log" >&2
    exit 1
}
umount "$ROOT/proc"
rm -f "$ROOT/usr/sbin/policy-rc.d"

log "configuring"
echo '/dev/vda / ext4 defaults,discard 0 1' >"$ROOT/etc/fstab"
echo river-vm >"$ROOT/etc/hostname"
# Network: DHCP on the first NIC (cloud-init's NoCloud network-config, when given, wins).
cat >"$ROOT/etc/network/interfaces" <<'NET'
auto lo
iface lo inet loopback
source /etc/network/interfaces.d/*
NET
# cloud-init: the NoCloud seed only (no slow probing of cloud metadata services), root's
# key from the seed (River's SSH proxy logs in as root), only ed25519 host keys (fast under
# emulation), no default user.
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-river.cfg" <<'CFG'
datasource_list: [NoCloud, None]
disable_root: false
users: []
ssh_genkeytypes: [ed25519]
ssh_deletekeys: true
# Only what a River VM needs before sshd answers: the seed's hostname, root's keys, the
# ed25519 host key (every VM makes its OWN at first boot) and the root filesystem grown
# to the --disk size. No locale, apt, package, ntp or growpart modules (no partition
# table): under emulation each costs seconds of boot.
cloud_init_modules: [seed_random, resizefs, set_hostname, update_hostname, update_etc_hosts, users-groups, ssh]
cloud_config_modules: []
cloud_final_modules: []
CFG
# cloud-init's config and final stages run nothing here (their module lists are empty),
# but each still starts Python (seconds under TCG, competing with sshd's start); apt's
# and e2scrub's timers, and ifupdown-pre's `udevadm settle`, only delay a VM's boot.
for unit in cloud-config.service cloud-final.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service ifupdown-pre.service; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
# A stop is an ACPI power button press: acpid powers the guest off (a clean shutdown
# that flushes the disk River keeps), instead of River quitting QEMU after its bound.
rm -f "$ROOT"/etc/acpi/events/*
printf 'event=button/power.*\naction=/usr/bin/systemctl --no-block poweroff\n' \
    >"$ROOT/etc/acpi/events/river-powerbtn"
mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
ln -sf /lib/systemd/system/acpid.service "$ROOT/etc/systemd/system/multi-user.target.wants/acpid.service"
# A guest never nests VMs, and emulated CPUs have no frequency scaling.
printf 'blacklist %s\n' kvm kvm_amd kvm_intel >"$ROOT/etc/modprobe.d/river-vm.conf"
rm -f "$ROOT"/etc/ssh/ssh_host_*
# What a VM never needs: apt caches and lists, docs, man pages, locales.
rm -rf "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
    "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* \
    "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* "$ROOT"/var/log/*.log

NEW="$OUT.new"
rm -rf "$NEW"
mkdir -p "$NEW"
cp "$(readlink -f "$ROOT/vmlinuz")" "$NEW/vmlinuz"
cp "$(readlink -f "$ROOT/initrd.img")" "$NEW/initrd.img"
log "rootfs $(du -sh "$ROOT" | cut -f1); mkfs.ext4 -d ($SIZE) and qcow2"
mkfs.ext4 -q -F -L river-root -d "$ROOT" "$WORK/root.raw" "$SIZE"
qemu-img convert -c -O qcow2 "$WORK/root.raw" "$NEW/base.qcow2"
rm -rf "$OUT"
mv "$NEW" "$OUT"
ln -sfn "$(basename "$OUT")" "$CACHE/river-vm"
# Drop images of other versions of this script so the cache does not grow forever.
find "$CACHE" -maxdepth 1 -name 'river-vm-*' ! -name "$(basename "$OUT")" -exec rm -rf {} + 2>/dev/null || true
log "done: $OUT ($(du -sh "$OUT" | cut -f1))"
