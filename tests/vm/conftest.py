"""VM tests need QEMU and the base image (.ci/setup-qemu.sh, .ci/build-vm-image.sh)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# RIVER_VM_IMAGE: an image built elsewhere (RIVER_IMAGE_CACHE=... .ci/build-vm-image.sh),
# e.g. to try a change to the image without replacing the machine's shared one.
IMAGE = Path(os.environ.get("RIVER_VM_IMAGE") or "/var/cache/river-images/river-vm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = None
    if shutil.which("qemu-system-x86_64") is None:
        why = "no qemu-system-x86_64 (run .ci/setup-qemu.sh)"
    elif not (IMAGE / "base.qcow2").is_file():
        why = f"no VM base image at {IMAGE} (run .ci/build-vm-image.sh)"
    if why:
        for item in items:
            if "tests/vm/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=why))
