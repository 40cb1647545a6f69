"""VM tests need QEMU and the base image (.ci/setup-qemu.sh, .ci/build-vm-image.sh)."""

from __future__ import annotations

import shutil

import pytest

from tests.vm_fixtures import IMAGE

__all__ = ["IMAGE"]  # where the other VM tests import it from


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
