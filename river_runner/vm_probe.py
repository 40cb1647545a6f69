"""Can this runner run VMs? The `vm: true|false` fact it registers with, and the reason.

Why a real boot, not a look at /dev/kvm: on nested hosts the device opens and QEMU's KVM
accelerator initialises, yet a Linux guest hangs right after the boot loader. So the probe
boots the base image's own kernel with the chosen accelerator (`-kernel`, no disk) and
waits, bounded, for the kernel's first line on the serial console. Emulation (TCG) is
probed the same way but is only ever used when the runner is started with
`--vm-accel tcg`: nothing falls back to it silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCELS = ("off", "kvm", "tcg")
BOOT_LINE = b"Linux version"  # the kernel's first console line
QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class VmImage:
    """A base image as .ci/build-vm-image.sh leaves it: a disk and its kernel/initrd."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "base.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    def missing(self) -> str | None:
        """What is missing, said so an operator can fix it; None when complete."""
        for path in (self.disk, self.kernel, self.initrd):
            if not path.is_file():
                return f"no VM base image: {path} is missing (build it with .ci/build-vm-image.sh)"
        return None


@dataclass(frozen=True)
class VmCapability:
    ok: bool
    reason: str
    accel: str = "off"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, "accel": self.accel}


def accel_args(accel: str) -> list[str]:
    """QEMU's accelerator and CPU model for `accel`: the host's CPU under KVM, QEMU's
    fullest model under emulation."""
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg", "-cpu", "max"]


async def probe(accel: str, image: VmImage, timeout: float = 20.0) -> VmCapability:
    """Whether `accel` really runs a guest here (see the module's docstring)."""
    if accel == "off":
        return VmCapability(
            False, "VMs are off on this runner: start it with --vm-accel kvm (or tcg to emulate)"
        )
    qemu = shutil.which(QEMU)
    if qemu is None:
        return VmCapability(False, f"no {QEMU} on this runner (install qemu-system-x86)", accel)
    missing = image.missing()
    if missing:
        return VmCapability(False, missing, accel)
    if accel == "kvm":
        try:
            os.close(os.open("/dev/kvm", os.O_RDWR))
        except OSError as exc:
            return VmCapability(False, f"KVM is unusable here: /dev/kvm: {exc.strerror}", accel)
    booted = await _boots(qemu, accel, image, timeout)
    if booted is not None:
        return VmCapability(False, booted, accel)
    return VmCapability(True, f"a guest kernel booted under {accel}", accel)


async def _boots(qemu: str, accel: str, image: VmImage, timeout: float) -> str | None:
    """Boot the image's kernel (no disk: it panics without a root, which is fine) and wait
    for BOOT_LINE on the serial console; None when seen, else why not."""
    proc = await asyncio.create_subprocess_exec(
        qemu, *accel_args(accel), "-m", "256", "-nodefaults", "-display", "none",
        "-no-reboot", "-serial", "stdio", "-kernel", str(image.kernel),
        "-append", "console=ttyS0 panic=-1",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    seen = b""
    try:
        async with asyncio.timeout(timeout):
            while BOOT_LINE not in seen:
                chunk = await proc.stdout.read(4096)
                if not chunk:
                    err = (await proc.stderr.read()).decode(errors="replace").strip()
                    return f"{accel} could not start a guest: {err[-300:] or 'QEMU exited'}"
                seen = seen[-4096:] + chunk
        return None
    except TimeoutError:
        return (
            f"{accel} did not boot a guest kernel within {timeout:g} s (no console output; "
            "nested virtualisation?)"
            + ("; --vm-accel tcg emulates instead, much slower" if accel == "kvm" else "")
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
