"""A VM's placed GPUs passed through with vfio-pci: claimed before QEMU starts, released
when it ends (issue 19, docs/vps.md "GPU passthrough").

Why a module of its own between the vm backend and river_runner/vfio.py: vfio.py decides
and binds one device at a time over a sysfs root; a VM needs all of its devices or none
(a half-bound set is given back before the refusal) and must give every device back to
its own driver once QEMU is gone, also after a runner restart (the addresses are recorded
in the VM's state). The runner passes `/sys`; tests pass a fake tree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from river_runner.vfio import PassthroughRefused, bind_vfio, plan_passthrough, release_vfio

log = logging.getLogger("river.runner.vm")


@dataclass(frozen=True)
class Claimed:
    """The devices bound to vfio-pci for one VM and QEMU's arguments for them."""

    devices: list[str] = field(default_factory=list)
    qemu_args: list[str] = field(default_factory=list)


def sysfs_address(nvml_bus_id: str) -> str:
    """NVML's bus id (`00000000:01:00.0`, 8-digit domain) as sysfs names the device
    (`0000:01:00.0`)."""
    domain, _, rest = nvml_bus_id.strip().lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}"


def claim(sysfs: Path, addresses: list[str]) -> Claimed:
    """Decide (vfio.plan_passthrough: IOMMU on, groups isolated) and bind every device;
    raise PassthroughRefused with the reason, having given back whatever was bound."""
    plan = plan_passthrough(sysfs, addresses)
    bound: list[str] = []
    for device in plan.devices:
        try:
            bind_vfio(sysfs, device)
        except OSError as exc:
            release(sysfs, bound)
            raise PassthroughRefused(f"could not bind {device} to vfio-pci: {exc}") from exc
        bound.append(device)
    return Claimed(list(plan.devices), plan.qemu_args())


def release(sysfs: Path, devices: list[str]) -> list[str]:
    """Give each device back to the kernel's own driver; return those that failed (logged:
    a device left on vfio-pci is an operator's to look at, not a reason to keep QEMU's end
    from being reported)."""
    failed = []
    for device in devices:
        try:
            release_vfio(sysfs, device)
        except OSError as exc:
            log.warning("PCI device %s not given back to its driver: %s", device, exc)
            failed.append(device)
    return failed
