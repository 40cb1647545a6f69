"""What a VM's directory records so that a restarted runner can take the VM over.

Why a file and not the runner's memory: QEMU runs in a session of its own and outlives the
runner process (a crash, an upgrade); the next runner finds its VMs by reading `vm.json`
in each VM directory. The pid alone is not trusted (pids are reused): a VM counts as alive
only when that pid's command line still names the VPS (`-name river-vps-<id>`).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

STATE_FILE = "vm.json"


@dataclass
class VmState:
    task_id: int
    vps_id: str
    pid: int
    ports: dict[int, int] = field(default_factory=dict)  # guest port -> loopback port
    killed: bool = False  # a stop was asked for: its end is reported as a kill
    tap: str | None = None  # the overlay NIC's tap (removed when the VM ends)
    overlay_ip: str | None = None
    snapshot: int | None = None  # the disk snapshot a stop asked for (taken once QEMU exits)
    keep: int = 1
    vfio: list[str] = field(default_factory=list)  # PCI devices bound to vfio-pci for it

    def write(self, directory: Path) -> None:
        """Atomically (a reader never sees half a file)."""
        body = {
            "task_id": self.task_id,
            "vps_id": self.vps_id,
            "pid": self.pid,
            "ports": {str(k): v for k, v in self.ports.items()},
            "killed": self.killed,
            "tap": self.tap,
            "overlay_ip": self.overlay_ip,
            "snapshot": self.snapshot,
            "keep": self.keep,
            "vfio": list(self.vfio),
        }
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, directory / STATE_FILE)

    @classmethod
    def read(cls, directory: Path) -> VmState | None:
        """The recorded state, or None when there is none (a stopped VM) or it is unreadable."""
        try:
            body = json.loads((directory / STATE_FILE).read_text())
            return cls(
                int(body["task_id"]),
                str(body["vps_id"]),
                int(body["pid"]),
                {int(k): int(v) for k, v in (body.get("ports") or {}).items()},
                bool(body.get("killed")),
                body.get("tap") or None,
                body.get("overlay_ip") or None,
                None if body.get("snapshot") is None else int(body["snapshot"]),
                int(body.get("keep") or 1),
                [str(d) for d in body.get("vfio") or []],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def remove(directory: Path) -> None:
        (directory / STATE_FILE).unlink(missing_ok=True)


def qemu_alive(pid: int, vps_id: str) -> bool:
    """Whether `pid` is still the QEMU of VPS `vps_id` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"river-vps-{vps_id}".encode() in argv


async def wait_pid_exit(pid: int) -> None:
    """Return once process `pid` (not necessarily a child) has exited: a pidfd becomes
    readable then (Linux 5.3+), so nothing polls."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
