#!/usr/bin/env bash
# Install what the VM backend and its tests need (issue 19), if missing:
#   qemu-system-x86  the emulator/hypervisor (KVM in production, TCG in the tests here)
#   qemu-utils       qemu-img: copy-on-write overlays over the base image
#   genisoimage      the NoCloud seed (an ISO 9660 volume labelled "cidata")
#   debootstrap      .ci/build-vm-image.sh makes the base image from Debian's own packages
#   openssh-client   the tests SSH into a VM through River's proxy
# and qemu.qmp (the QMP library the backend drives QEMU with) into the venv given as $1.
# Idempotent; meant for root on Debian 12 (CI and fresh dev machines).
set -euo pipefail

VENV=${1:-}
PKGS=(qemu-system-x86 qemu-utils genisoimage debootstrap openssh-client)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-qemu: ${missing[*]} missing and installing needs root" >&2
        exit 1
    fi
    start=$SECONDS
    echo "setup-qemu: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    echo "setup-qemu: installed in $((SECONDS - start))s"
else
    echo "setup-qemu: $(qemu-system-x86_64 --version | head -n 1) already installed"
fi
if [[ -n "$VENV" ]] && ! "$VENV/bin/python" -c 'import qemu.qmp' 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q qemu.qmp
fi
