#!/usr/bin/env bash
# Build the local test images the docker-backend tests and benchmarks use.
#
# No image registry is reachable here, so images are made from root filesystems and
# `docker import`ed:
#   river-test-python   Debian bookworm minbase + python3 (debootstrap)
#   river-test-busybox  /bin/busybox (static) + applet symlinks: ~2 MB, for fast benchmarks
#   river-test-vps      as river-test-python + openssh-server (no host keys: a VPS makes
#                       its own), procps, and jupyter-server + ipykernel from PyPI with a
#                       python3 kernelspec, and jupyterhub (its `jupyterhub-singleuser`,
#                       the command RiverSpawner runs; pinned to the version the venv's
#                       Hub runs, $JUPYTERHUB_VERSION): the image the VPS and Hub tests run
# Each rootfs tarball is cached under ${RIVER_IMAGE_CACHE:-/var/cache/river-images}, keyed
# by a hash of this script, so a re-run (or a fresh daemon on the same machine) is quick.
# An image is rebuilt only when it is missing or was built by another version of this
# script (label river.build). RIVER_IMAGES_FORCE=1 rebuilds regardless.
# Debian packages come from the mirror this machine's apt already uses (the main archive
# in /etc/apt/sources.list or sources.list.d/*.list / *.sources), or RIVER_DEBIAN_MIRROR;
# Python packages from the index the host's pip is configured with. No registry is named
# here.
# Needs root (debootstrap, apt-get) and a running daemon (.ci/setup-docker.sh).
set -euo pipefail

DOCKER=/usr/bin/docker
CACHE=${RIVER_IMAGE_CACHE:-/var/cache/river-images}
SUITE=${RIVER_DEBIAN_SUITE:-bookworm}
MIRROR=${RIVER_DEBIAN_MIRROR:-}
FORCE=${RIVER_IMAGES_FORCE:-0}
# The Hub's version in pyproject's venv: a single-user server of another version works but
# the Hub warns on every spawn. Bump both together.
JUPYTERHUB_VERSION=6.1.1
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

build_image() {
    # build_image IMAGE CMD MAKE_ROOTFS: import IMAGE from its cached rootfs tarball, first
    # running MAKE_ROOTFS ROOT (which fills the new directory ROOT) when there is none.
    local image=$1 cmd=$2 make_rootfs=$3 tarball="$CACHE/$1-$BUILD_HASH.tar"
    if image_current "$image"; then
        log "$image is current"
        return
    fi
    if [[ ! -s "$tarball" || "$FORCE" == 1 ]]; then
        WORK=$(mktemp -d /var/tmp/river-rootfs.XXXXXX)
        "$make_rootfs" "$WORK/rootfs"
        log "rootfs $(du -sh "$WORK/rootfs" | cut -f1); writing $tarball"
        tar --numeric-owner --one-file-system -C "$WORK/rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        cleanup
        WORK=""
    else
        log "using cached $tarball"
    fi
    import_tar "$tarball" "$image" "$cmd"
}

apt_mirror() {
    # apt_mirror SUITE: the URI of the main archive in this machine's apt sources: the
    # first enabled `deb` entry for SUITE itself (not SUITE-security/-updates), else the
    # first one for any plain suite. One-line format (sources.list, *.list: `deb [opts]
    # URI suite components`) and deb822 (*.sources: Types/URIs/Suites/Enabled stanzas).
    /usr/bin/python3 - "$1" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources <<'PY'
import re, sys
suite, paths = sys.argv[1], sys.argv[2:]
entries = []  # (uri, suites) in the order apt reads them
for path in paths:
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in stanza.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    else:
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
for wanted in (lambda s: s == suite, lambda s: "-" not in s and "/" not in s):
    for uri, suites in entries:
        if any(wanted(s) for s in suites):
            print(uri.rstrip("/"))
            sys.exit(0)
sys.exit(1)
PY
}

debootstrap_rootfs() {
    # debootstrap_rootfs ROOT PACKAGES: $SUITE minbase plus PACKAGES (comma-separated).
    need_pkg debootstrap
    if [[ -z "$MIRROR" ]]; then
        MIRROR=$(apt_mirror "$SUITE") || {
            echo "build-images: no Debian archive in this machine's apt sources" \
                "(/etc/apt/sources.list, /etc/apt/sources.list.d/); set RIVER_DEBIAN_MIRROR" \
                "to the URL of a Debian mirror that has $SUITE" >&2
            exit 1
        }
    fi
    log "debootstrap $SUITE minbase + $2 from $MIRROR"
    debootstrap --variant=minbase --include="$2" \
        "$SUITE" "$1" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 30 "$WORK/debootstrap.log" >&2
        echo "build-images: debootstrap from $MIRROR failed; RIVER_DEBIAN_MIRROR picks" \
            "another Debian mirror" >&2
        exit 1
    }
}

trim_rootfs() {
    # Trim what a test image never needs: apt caches/lists, docs, man pages, locales.
    rm -rf "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb \
        "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* \
        "$1"/usr/share/man/* "$1"/usr/share/info/* \
        "$1"/usr/share/locale/* "$1"/var/log/*.log "$1"/root/.cache
}

pip_install_rootfs() {
    # pip_install_rootfs ROOT REQUIREMENT...: install from PyPI into ROOT's system python
    # (/usr/local). The chroot has no network, DNS or pip config of its own, so the host's
    # pip (with this machine's index, proxy and certificate settings) downloads wheels for
    # the chroot's python and platform, and a pip run from its own wheel installs them
    # offline inside the chroot; pip itself is not left in the image.
    local root=$1 pyver platforms=() plat pip_whl wheels
    shift
    need_pkg python3-pip
    # The chroot's python version, then the manylinux tags its glibc and machine accept
    # (this pip does not widen a --platform manylinux_2_X to the older ones by itself).
    read -r pyver plat < <(chroot "$root" /usr/bin/python3 -c 'import platform, sys
m = int(platform.libc_ver()[1].split(".")[1]); arch = platform.machine()
tags = ["manylinux_2_%d_%s" % (i, arch) for i in range(m, 4, -1)]
tags += ["manylinux%s_%s" % (n, arch) for n, i in (("2014", 17), ("2010", 12), ("1", 5)) if m >= i]
print("%d.%d" % sys.version_info[:2], ",".join(tags))')
    [[ -n "${plat:-}" ]] || { echo "build-images: no python3 in $root" >&2; exit 1; }
    IFS=, read -r -a platforms <<<"$plat"
    mkdir -p "$root/tmp/wheels"
    log "pip download $* (python $pyver, ${platforms[0]})"
    /usr/bin/python3 -m pip download --dest "$root/tmp/wheels" --only-binary=:all: \
        --implementation cp --python-version "$pyver" "${platforms[@]/#/--platform=}" \
        pip "$@" >"$WORK/pip.log" 2>&1 || {
        tail -n 30 "$WORK/pip.log" >&2
        exit 1
    }
    wheels=("$root"/tmp/wheels/*.whl)
    pip_whl=$(basename "$(printf '%s\n' "$root"/tmp/wheels/pip-*.whl | head -n 1)")
    log "pip install $* (${#wheels[@]} wheels)"
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 python3 "/tmp/wheels/$pip_whl/pip" install --no-index \
        --find-links /tmp/wheels --no-cache-dir --break-system-packages \
        --root-user-action=ignore --disable-pip-version-check "$@" >>"$WORK/pip.log" 2>&1 || {
        tail -n 30 "$WORK/pip.log" >&2
        exit 1
    }
    rm -rf "$root/tmp/wheels"
}

rootfs_python() {
    debootstrap_rootfs "$1" python3-minimal,python3
    trim_rootfs "$1"
}

rootfs_vps() {
    # What a VPS needs: sshd (host keys are made per VPS at start, `ssh-keygen -A`), and a
    # Jupyter server with a python3 kernel, which jupyterhub-singleuser can run as a Hub
    # user's server (RiverSpawner). procps comes with openssh-server.
    debootstrap_rootfs "$1" python3-minimal,python3,openssh-server,procps
    rm -f "$1"/etc/ssh/ssh_host_*
    pip_install_rootfs "$1" jupyter-server ipykernel "jupyterhub==$JUPYTERHUB_VERSION"
    # Replaces the kernelspec in ipykernel's wheel (argv "python", which bookworm lacks)
    # with one that runs /usr/bin/python3.
    chroot "$1" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
        python3 -m ipykernel install --prefix=/usr/local >>"$WORK/pip.log" 2>&1 || {
        tail -n 30 "$WORK/pip.log" >&2
        exit 1
    }
    trim_rootfs "$1"
}

rootfs_busybox() {
    # busybox-static (not "busybox", which is dynamic and would need libc in the image).
    local root=$1 applet
    need_pkg busybox-static
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/tmp}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}

if ! "$DOCKER" info >/dev/null 2>&1; then
    echo "build-images: no Docker daemon answers; run .ci/setup-docker.sh first" >&2
    exit 1
fi
mkdir -p "$CACHE"
# Drop tarballs from other versions of this script so the cache does not grow forever.
find "$CACHE" -maxdepth 1 -name 'river-test-*.tar' ! -name "*-$BUILD_HASH.tar" -delete 2>/dev/null || true

log "build hash $BUILD_HASH, cache $CACHE"
build_image river-test-busybox '["/bin/sh"]' rootfs_busybox
build_image river-test-python '["python3"]' rootfs_python
build_image river-test-vps '["/bin/sh"]' rootfs_vps
log "done"
