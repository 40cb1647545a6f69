"""GPU passthrough decisions (river_runner/vfio.py) against a fake sysfs tree.

No machine here has a passthrough-capable device or an IOMMU, so the tree is built in
tmp_path the way the kernel lays it out: /sys/kernel/iommu_groups/N/devices/<addr> and
/sys/bus/pci/devices/<addr>/{class,iommu_group,driver,driver_override}, with drivers'
bind/unbind files under /sys/bus/pci/drivers/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from river_runner import vm_gpus
from river_runner.gpu import GpuInventory, fake_nvml
from river_runner.vfio import (
    PassthroughRefused,
    bind_vfio,
    plan_passthrough,
    release_vfio,
)

GPU, AUDIO, BRIDGE, NIC = "0000:01:00.0", "0000:01:00.1", "0000:00:01.0", "0000:02:00.0"
VGA, SOUND, PCI_BRIDGE, ETHERNET = "0x030000", "0x040300", "0x060400", "0x020000"


def make_sysfs(
    root: Path,
    groups: dict[str, list[tuple[str, str]]],
    drivers: dict[str, str] | None = None,
    vfio_loaded: bool = True,
) -> Path:
    """A sysfs tree with IOMMU `groups` ({group: [(address, class)]}) and each device bound
    to `drivers[address]`."""
    pci = root / "bus" / "pci"
    for name in ["nvidia", "snd_hda_intel", "e1000e", *(["vfio-pci"] if vfio_loaded else [])]:
        (pci / "drivers" / name).mkdir(parents=True)
        (pci / "drivers" / name / "unbind").write_text("")
    (pci / "drivers_probe").write_text("")
    (root / "kernel" / "iommu_groups").mkdir(parents=True)
    for group, members in groups.items():
        group_dir = root / "kernel" / "iommu_groups" / group / "devices"
        group_dir.mkdir(parents=True)
        for address, pci_class in members:
            device = pci / "devices" / address
            device.mkdir(parents=True)
            (device / "class").write_text(pci_class + "\n")
            (device / "driver_override").write_text("(null)\n")
            os.symlink(f"../../../../kernel/iommu_groups/{group}", device / "iommu_group")
            os.symlink(f"../../../bus/pci/devices/{address}", group_dir / address)
            driver = (drivers or {}).get(address)
            if driver:
                os.symlink(f"../../drivers/{driver}", device / "driver")
    return root


def test_no_iommu_is_refused_with_how_to_turn_it_on(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {})
    (tmp_path / "bus" / "pci" / "devices" / GPU).mkdir(parents=True)  # a GPU, no groups
    with pytest.raises(PassthroughRefused, match="no IOMMU.*intel_iommu=on"):
        plan_passthrough(sysfs, [GPU])


def test_an_isolated_group_passes_the_device_and_its_audio_function(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"12": [(GPU, VGA), (AUDIO, SOUND)], "3": [(NIC, ETHERNET)]})
    plan = plan_passthrough(sysfs, [GPU])
    assert plan.devices == [GPU, AUDIO]  # the same card's other function goes along
    assert plan.groups == {GPU: "12", AUDIO: "12"}
    assert plan.qemu_args() == [
        "-device", f"vfio-pci,host={GPU}", "-device", f"vfio-pci,host={AUDIO}",
    ]  # fmt: skip


def test_a_group_shared_with_a_bridge_passes_and_leaves_the_bridge(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"1": [(BRIDGE, PCI_BRIDGE), (GPU, VGA)]})
    plan = plan_passthrough(sysfs, [GPU])
    assert plan.devices == [GPU] and plan.bridges == [BRIDGE]


def test_a_group_shared_with_another_device_is_refused_naming_it(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"1": [(BRIDGE, PCI_BRIDGE), (GPU, VGA), (NIC, ETHERNET)]})
    with pytest.raises(PassthroughRefused, match=f"{GPU} is not isolated.*group 1.*{NIC}"):
        plan_passthrough(sysfs, [GPU])
    # Asking for both devices of the group passes both through.
    assert plan_passthrough(sysfs, [GPU, NIC]).devices == [GPU, NIC]


def test_unknown_device_and_missing_vfio_driver_are_refused(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"12": [(GPU, VGA)]}, vfio_loaded=False)
    with pytest.raises(PassthroughRefused, match="modprobe vfio-pci"):
        plan_passthrough(sysfs, [GPU])
    (tmp_path / "bus" / "pci" / "drivers" / "vfio-pci").mkdir()
    with pytest.raises(PassthroughRefused, match="no PCI device 0000:09:00.0"):
        plan_passthrough(sysfs, ["0000:09:00.0"])
    assert plan_passthrough(sysfs, []).devices == []


def test_bind_overrides_unbinds_and_probes_and_release_undoes_it(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"12": [(GPU, VGA)]}, drivers={GPU: "nvidia"})
    pci = tmp_path / "bus" / "pci"
    assert bind_vfio(sysfs, GPU) == "nvidia"
    assert (pci / "devices" / GPU / "driver_override").read_text() == "vfio-pci"
    assert (pci / "drivers" / "nvidia" / "unbind").read_text() == GPU
    assert (pci / "drivers_probe").read_text() == GPU
    # What the kernel does on that probe: the device is now vfio-pci's.
    (pci / "devices" / GPU / "driver").unlink()
    os.symlink("../../drivers/vfio-pci", pci / "devices" / GPU / "driver")
    assert bind_vfio(sysfs, GPU) == "vfio-pci"  # already bound: nothing written again
    (pci / "drivers_probe").write_text("")
    release_vfio(sysfs, GPU)
    assert (pci / "devices" / GPU / "driver_override").read_text() == "\n"
    assert (pci / "drivers" / "vfio-pci" / "unbind").read_text() == GPU
    assert (pci / "drivers_probe").read_text() == GPU


# ---- a VM's devices, all or none (river_runner/vm_gpus.py) ------------------------------


def written(sysfs: Path, relative: str) -> str:
    return (sysfs / "bus" / "pci" / relative).read_text()


def test_a_vm_claims_the_gpu_and_its_audio_function_and_gives_them_back(tmp_path: Path) -> None:
    drivers = {GPU: "nvidia", AUDIO: "snd_hda_intel"}
    sysfs = make_sysfs(tmp_path, {"12": [(GPU, VGA), (AUDIO, SOUND)]}, drivers)
    claimed = vm_gpus.claim(sysfs, [GPU])
    assert claimed.devices == [GPU, AUDIO]
    assert claimed.qemu_args == [
        "-device",
        f"vfio-pci,host={GPU}",
        "-device",
        f"vfio-pci,host={AUDIO}",
    ]
    for device in (GPU, AUDIO):
        assert written(sysfs, f"devices/{device}/driver_override") == "vfio-pci"
    assert written(sysfs, "drivers/nvidia/unbind") == GPU  # taken from its own driver
    assert written(sysfs, "drivers/snd_hda_intel/unbind") == AUDIO

    assert vm_gpus.release(sysfs, claimed.devices) == []
    for device in (GPU, AUDIO):
        assert written(sysfs, f"devices/{device}/driver_override") == "\n"  # no override
    assert written(sysfs, "drivers_probe") == AUDIO  # the kernel probes its driver again


def test_a_claim_that_cannot_bind_every_device_gives_back_those_it_bound(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {"12": [(GPU, VGA), (AUDIO, SOUND)]}, {GPU: "nvidia"})
    override = sysfs / "bus" / "pci" / "devices" / AUDIO / "driver_override"
    override.unlink()
    override.mkdir()  # the audio function (bound after the GPU) cannot be written
    with pytest.raises(PassthroughRefused, match=f"could not bind {AUDIO} to vfio-pci"):
        vm_gpus.claim(sysfs, [GPU])
    assert written(sysfs, f"devices/{GPU}/driver_override") == "\n"  # given back
    assert written(sysfs, "drivers_probe") == GPU  # to its own driver


def test_a_vm_claim_without_an_iommu_is_refused_and_binds_nothing(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path, {})
    (tmp_path / "bus" / "pci" / "devices" / GPU).mkdir(parents=True)
    with pytest.raises(PassthroughRefused, match="no IOMMU"):
        vm_gpus.claim(sysfs, [GPU])
    assert not (tmp_path / "bus" / "pci" / "devices" / GPU / "driver_override").exists()


def test_nvml_bus_ids_map_to_sysfs_addresses() -> None:
    assert vm_gpus.sysfs_address("00000000:01:00.0") == "0000:01:00.0"
    assert vm_gpus.sysfs_address("00000001:AF:00.1\n") == "0001:af:00.1"
    inventory = GpuInventory(fake_nvml("2"))
    assert inventory.pci_bus_ids([1]) == ["00000000:82:00.0"]
    with pytest.raises(ValueError, match="no GPUs"):
        GpuInventory(None).pci_bus_ids([0])
