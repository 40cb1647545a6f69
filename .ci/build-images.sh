#!/usr/bin/env bash
# Build the local test images the docker-backend tests and benchmarks use.
#
# No image registry is reachable here, so images are made from root filesystems and
# `docker import`ed:
#   river-test-python   Debian bookworm minbase + python3 (debootstrap)
#   river-test-busybox  /bin/busybox (static) + applet symlinks: ~2 MB, for fast benchmarks
# Each rootfs tarball is cached under ${RIVER_IMAGE_CACHE:-/var/cache/river-images}, keyed
# by a hash of this script, so a re-run (or a fresh daemon on the same machine) is quick.
# An image is rebuilt only when it is missing or was built by another version of this
# script (label river.build). RIVER_IMAGES_FORCE=1 rebuilds regardless.
# Needs root (debootstrap, apt-get) and a running daemon (.ci/setup-docker.sh).
set -euo pipefail

DOCKER=/usr/bin/docker
CACHE=${RIVER_IMAGE_CACHE:-/var/cache/river-images}
MIRROR=${RIVER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${RIVER_DEBIAN_SUITE:-bookworm}
FORCE=${RIVER_IMAGES_FORCE:-0}
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
BUILD_HASH=$(sha256sum "$SCRIPT_PATH" | cut -c1-16)
T0=$(date +%s%N)

log() {
    local ms=$((($(date +%s%N) - T0) / 1000000))
    printf 'build-images [%4d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}

WORK=""
cleanup() { if [[ -n "$WORK" && -d "$WORK" ]]; then rm -rf --one-file-system "$WORK"; fi; }
trap cleanup EXIT

APT_UPDATED=0
need_pkg() {
    # need_pkg PACKAGE: install a Debian package with apt when it is not installed.
    if dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; then
        return
    fi
    log "installing $1"
    if [[ $APT_UPDATED == 0 ]]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    # needrestart (if present) has nothing to restart here and is noisy without a tty.
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
        apt-get install -y -qq --no-install-recommends "$1" >/dev/null 2>"$CACHE/apt.log" || {
        cat "$CACHE/apt.log" >&2
        exit 1
    }
}

image_current() {
    # True when image $1 exists and was built by this exact script.
    local label
    [[ "$FORCE" == 1 ]] && return 1
    label=$("$DOCKER" image inspect --format '{{ index .Config.Labels "river.build" }}' "$1" 2>/dev/null) || return 1
    [[ "$label" == "$BUILD_HASH" ]]
}

import_tar() {
    # import_tar TARBALL IMAGE CMD: import a rootfs tarball as IMAGE:latest.
    "$DOCKER" import \
        --change "LABEL river.build=$BUILD_HASH" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "CMD $3" \
        "$1" "$2:latest" >/dev/null
    log "imported $2 ($("$DOCKER" image inspect --format '{{.Size}}' "$2" | numfmt --to=iec))"
}

build_python() {
    local image=river-test-python tarball="$CACHE/river-test-python-$BUILD_HASH.tar"
    if image_current "$image"; then
        log "$image is current"
        return
    fi
    if [[ ! -s "$tarball" || "$FORCE" == 1 ]]; then
        need_pkg debootstrap
        WORK=$(mktemp -d /var/tmp/river-rootfs.XXXXXX)
        log "debootstrap $SUITE minbase + python3 from $MIRROR"
        debootstrap --variant=minbase --include=python3-minimal,python3 \
            "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
            tail -n 30 "$WORK/debootstrap.log" >&2
            exit 1
        }
        # Trim what a test image never needs: apt caches/lists, docs, man pages, locales.
        rm -rf "$WORK"/rootfs/var/cache/apt/*.bin "$WORK"/rootfs/var/cache/apt/archives/*.deb \
            "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/usr/share/doc/* \
            "$WORK"/rootfs/usr/share/man/* "$WORK"/rootfs/usr/share/info/* \
            "$WORK"/rootfs/usr/share/locale/* "$WORK"/rootfs/var/log/*.log
        log "rootfs $(du -sh "$WORK/rootfs" | cut -f1); writing $tarball"
        tar --numeric-owner --one-file-system -C "$WORK/rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        cleanup
        WORK=""
    else
        log "using cached $tarball"
    fi
    import_tar "$tarball" "$image" '["python3"]'
}

build_busybox() {
    local image=river-test-busybox tarball="$CACHE/river-test-busybox-$BUILD_HASH.tar"
    if image_current "$image"; then
        log "$image is current"
        return
    fi
    if [[ ! -s "$tarball" || "$FORCE" == 1 ]]; then
        # busybox-static (not "busybox", which is dynamic and would need libc in the image).
        need_pkg busybox-static
        WORK=$(mktemp -d /var/tmp/river-rootfs.XXXXXX)
        local root="$WORK/rootfs" applet
        mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/tmp}
        chmod 1777 "$root/tmp" "$root/var/tmp"
        cp /bin/busybox "$root/bin/busybox"
        for applet in $("$root/bin/busybox" --list); do
            [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        cleanup
        WORK=""
    else
        log "using cached $tarball"
    fi
    import_tar "$tarball" "$image" '["/bin/sh"]'
}

if ! "$DOCKER" info >/dev/null 2>&1; then
    echo "build-images: no Docker daemon answers; run .ci/setup-docker.sh first" >&2
    exit 1
fi
mkdir -p "$CACHE"
# Drop tarballs from other versions of this script so the cache does not grow forever.
find "$CACHE" -maxdepth 1 -name 'river-test-*.tar' ! -name "*-$BUILD_HASH.tar" -delete 2>/dev/null || true

log "build hash $BUILD_HASH, cache $CACHE"
build_busybox
build_python
log "done"
