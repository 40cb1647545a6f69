"""GPU passthrough for VM VPSes: may these PCI devices go to a VM, and binding them to
`vfio-pci` and back (issue 19).

Why pure functions over a sysfs root: no machine of this project has a passthrough-capable
device, so the decisions are tested against a fake sysfs tree (tests/unit/test_vfio.py)
and the real runner passes `/sys`. Nothing here runs a command: sysfs files are read and
written directly, as the kernel documents for `driver_override` (Documentation/ABI/testing/
sysfs-bus-pci).

The rule (docs/vps.md, "GPU passthrough"): a device may be passed through only when an
IOMMU is on and every other device in its IOMMU group is either a bridge (PCI class 0x06,
never bound to vfio-pci) or another function of the same physical device (a GPU's audio
function, same domain:bus:slot), which is passed through along with it. Anything else in
the group would be reachable by the guest's DMA too, so the request is refused and the
reason names the devices in the way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

VFIO_DRIVER = "vfio-pci"
BRIDGE_CLASS_PREFIX = "0x06"  # PCI base class 06: bridges (host, ISA, PCI-to-PCI ...)


class PassthroughRefused(Exception):
    """A VM's devices cannot be passed through; the message says why and what to fix."""


@dataclass(frozen=True)
class Passthrough:
    """The decision for one VM: the devices to bind to vfio-pci (asked ones and their
    companion functions), and the bridges that share their groups (left alone)."""

    devices: list[str]
    groups: dict[str, str] = field(default_factory=dict)  # device -> IOMMU group
    bridges: list[str] = field(default_factory=list)

    def qemu_args(self) -> list[str]:
        """QEMU's arguments for these devices."""
        return [arg for dev in self.devices for arg in ("-device", f"{VFIO_DRIVER},host={dev}")]


def _pci(sysfs: Path) -> Path:
    return sysfs / "bus" / "pci"


def iommu_present(sysfs: Path) -> bool:
    """An IOMMU is on when the kernel made at least one IOMMU group."""
    groups = sysfs / "kernel" / "iommu_groups"
    return groups.is_dir() and any(groups.iterdir())


def device_group(sysfs: Path, address: str) -> str | None:
    """The IOMMU group of PCI device `address` (`0000:01:00.0`), None if it has none."""
    link = _pci(sysfs) / "devices" / address / "iommu_group"
    if not link.exists():
        return None
    return Path(os.readlink(link)).name if link.is_symlink() else link.resolve().name


def group_members(sysfs: Path, group: str) -> list[str]:
    devices = sysfs / "kernel" / "iommu_groups" / group / "devices"
    return sorted(p.name for p in devices.iterdir()) if devices.is_dir() else []


def is_bridge(sysfs: Path, address: str) -> bool:
    try:
        pci_class = (_pci(sysfs) / "devices" / address / "class").read_text().strip()
    except OSError:
        return False
    return pci_class.lower().startswith(BRIDGE_CLASS_PREFIX)


def same_slot(a: str, b: str) -> bool:
    """Functions of one physical device: equal up to the function number (`.N`)."""
    return a.rpartition(".")[0] == b.rpartition(".")[0]


def current_driver(sysfs: Path, address: str) -> str | None:
    link = _pci(sysfs) / "devices" / address / "driver"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def plan_passthrough(sysfs: Path, addresses: list[str]) -> Passthrough:
    """Decide whether `addresses` may go to one VM (see the module's docstring); raise
    PassthroughRefused with the reason otherwise."""
    if not addresses:
        return Passthrough([])
    if not iommu_present(sysfs):
        raise PassthroughRefused(
            "no IOMMU on this runner (no groups under /sys/kernel/iommu_groups): enable "
            "VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on"
        )
    if not (_pci(sysfs) / "drivers" / VFIO_DRIVER).is_dir():
        raise PassthroughRefused(f"the {VFIO_DRIVER} driver is not loaded (modprobe {VFIO_DRIVER})")
    devices: list[str] = []
    groups: dict[str, str] = {}
    bridges: list[str] = []
    for address in addresses:
        if not (_pci(sysfs) / "devices" / address).exists():
            raise PassthroughRefused(f"no PCI device {address} on this runner")
        group = device_group(sysfs, address)
        if group is None:
            raise PassthroughRefused(f"PCI device {address} is in no IOMMU group")
        in_the_way = []
        for member in group_members(sysfs, group):
            if member == address:
                continue
            if is_bridge(sysfs, member):
                bridges.append(member)
            elif same_slot(member, address) or member in addresses:
                devices.append(member)
                groups[member] = group
            else:
                in_the_way.append(member)
        if in_the_way:
            raise PassthroughRefused(
                f"PCI device {address} is not isolated: IOMMU group {group} also holds "
                f"{', '.join(in_the_way)}, which the VM could reach too (move the card to "
                "another slot, or enable ACS on the bridge above it)"
            )
        devices.append(address)
        groups[address] = group
    unique = sorted(set(devices))
    return Passthrough(unique, {d: groups[d] for d in unique}, sorted(set(bridges)))


def bind_vfio(sysfs: Path, address: str) -> str | None:
    """Give `address` to vfio-pci; return the driver it had (to give it back to)."""
    device = _pci(sysfs) / "devices" / address
    previous = current_driver(sysfs, address)
    if previous == VFIO_DRIVER:
        return previous
    (device / "driver_override").write_text(VFIO_DRIVER)
    if previous is not None:
        (_pci(sysfs) / "drivers" / previous / "unbind").write_text(address)
    (_pci(sysfs) / "drivers_probe").write_text(address)
    return previous


def release_vfio(sysfs: Path, address: str) -> None:
    """Take `address` from vfio-pci and let the kernel probe its own driver again."""
    device = _pci(sysfs) / "devices" / address
    (device / "driver_override").write_text("\n")  # empty: no override
    if current_driver(sysfs, address) == VFIO_DRIVER:
        (_pci(sysfs) / "drivers" / VFIO_DRIVER / "unbind").write_text(address)
    (_pci(sysfs) / "drivers_probe").write_text(address)
