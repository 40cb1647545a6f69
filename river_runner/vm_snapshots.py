"""A stopped VM's disk kept as numbered snapshots, with the container VPS's retention rule.

Why qcow2 internal snapshots (`qemu-img snapshot`) and not a file per snapshot: the VM's
disk is already a qcow2 overlay over the base image; an internal snapshot costs only the
clusters written after it, lives and dies with the disk file (deleting the VPS removes the
directory, and with it every snapshot), and applying one needs no chain of backing files
to rebase. A snapshot is named `river-<n>` like a container's tag `river-vps/<id>:<n>`,
so the host records and lists both kinds the same way.

Taken only after QEMU has exited (a clean ACPI shutdown has flushed the guest's page
cache): a live disk snapshot would be crash-consistent at best and lose the last writes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

PREFIX = "river-"
TIMEOUT = 120  # qemu-img on a large, fragmented overlay under a loaded machine


def _qemu_img(*args: str) -> str:
    done = subprocess.run(
        ["qemu-img", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"qemu-img {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def numbers(disk: Path) -> list[int]:
    """The disk's River snapshots, oldest first (none when the disk does not exist)."""
    if not disk.exists():
        return []
    # -U: read even while a QEMU holds the image (a listing of a running VM's disk).
    info = json.loads(_qemu_img("info", "-U", "--output=json", str(disk)))
    found = []
    for snap in info.get("snapshots") or []:
        name = str(snap.get("name", ""))
        if name.startswith(PREFIX) and name[len(PREFIX) :].isdigit():
            found.append(int(name[len(PREFIX) :]))
    return sorted(found)


def next_number(disk: Path) -> int:
    return max(numbers(disk), default=0) + 1


def take(disk: Path, number: int, keep: int) -> list[int]:
    """Snapshot the (closed) disk as `number`, delete all but the newest `keep` (at least
    one: the one just taken), and return those kept."""
    _qemu_img("snapshot", "-c", f"{PREFIX}{number}", str(disk))
    kept = numbers(disk)
    for old in kept[: max(0, len(kept) - max(1, keep))]:
        _qemu_img("snapshot", "-d", f"{PREFIX}{old}", str(disk))
    return numbers(disk)


def apply_newest(disk: Path) -> int | None:
    """Revert the (closed) disk to its newest snapshot before a boot; None when it has none."""
    found = numbers(disk)
    if not found:
        return None
    _qemu_img("snapshot", "-a", f"{PREFIX}{found[-1]}", str(disk))
    return found[-1]


def delete(disk: Path, which: list[int]) -> list[int]:
    """Delete the snapshots numbered `which` that exist; return those deleted."""
    gone = [n for n in numbers(disk) if n in which]
    for number in gone:
        _qemu_img("snapshot", "-d", f"{PREFIX}{number}", str(disk))
    return gone
