"""A stopped VM's disk snapshots (river_runner/vm_snapshots.py) with the real qemu-img.

No guest is booted: qemu-io writes a byte pattern into a qcow2 overlay as a guest would,
so the retention rule and "boot the newest" are checked on real images in milliseconds.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from river_runner import vm_snapshots

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="needs qemu-img and qemu-io (qemu-utils)",
)


def make_disk(tmp_path: Path) -> Path:
    """An overlay over a base image, as the vm backend makes one."""
    base, disk = tmp_path / "base.qcow2", tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
         str(disk), "16M"],
        check=True,
    )  # fmt: skip
    return disk


def write(disk: Path, pattern: int) -> None:
    subprocess.run(
        ["qemu-io", "-c", f"write -P {pattern} 0 4k", str(disk)], check=True, capture_output=True
    )


def holds(disk: Path, pattern: int) -> bool:
    """Whether the disk's first 4 KiB are `pattern` (qemu-io's read -P fails otherwise)."""
    done = subprocess.run(
        ["qemu-io", "-c", f"read -P {pattern} 0 4k", str(disk)], capture_output=True, text=True
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def test_a_new_disk_has_no_snapshot_and_numbers_start_at_one(tmp_path: Path) -> None:
    disk = make_disk(tmp_path)
    assert vm_snapshots.numbers(disk) == []
    assert vm_snapshots.next_number(disk) == 1
    assert vm_snapshots.apply_newest(disk) is None
    assert vm_snapshots.numbers(tmp_path / "absent.qcow2") == []


def test_only_the_newest_keep_snapshots_stay(tmp_path: Path) -> None:
    disk = make_disk(tmp_path)
    for number in (1, 2, 3):
        assert vm_snapshots.take(disk, number, keep=3) == list(range(1, number + 1))
    assert vm_snapshots.take(disk, 4, keep=3) == [2, 3, 4]  # the oldest goes
    assert vm_snapshots.take(disk, 5, keep=0) == [5]  # the one just taken always stays


def test_a_restart_boots_the_newest_snapshot(tmp_path: Path) -> None:
    disk = make_disk(tmp_path)
    write(disk, 0x41)
    vm_snapshots.take(disk, 1, keep=3)
    write(disk, 0x42)
    vm_snapshots.take(disk, 2, keep=3)
    write(disk, 0x43)  # written after the last stop's snapshot (e.g. by a lost incarnation)
    assert vm_snapshots.apply_newest(disk) == 2
    assert holds(disk, 0x42) and not holds(disk, 0x43)


def test_delete_removes_only_the_named_snapshots(tmp_path: Path) -> None:
    disk = make_disk(tmp_path)
    for number in (1, 2, 3):
        vm_snapshots.take(disk, number, keep=3)
    assert vm_snapshots.delete(disk, [2, 7]) == [2]
    assert vm_snapshots.numbers(disk) == [1, 3]


def test_a_broken_disk_is_reported_with_qemu_imgs_reason(tmp_path: Path) -> None:
    broken = tmp_path / "disk.qcow2"
    broken.write_bytes(b"not a qcow2 image")
    with pytest.raises(RuntimeError, match="qemu-img snapshot failed"):
        vm_snapshots.take(broken, 1, keep=3)
