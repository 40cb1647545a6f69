"""GPU inventory through the pynvml interface, with a fake NVML for machines without GPUs.

The inventory code only calls pynvml functions, so the fake module below stands in for the
real one (same function names and return shapes) and everything above it is exercised as is.
Checked on a real NVIDIA H200 (bench/gpu_check.py, tests/gpu/): one full sample of a GPU
costs well under a millisecond, so the heartbeat reads it inline; docs/performance.md has
the figures.
"""

from __future__ import annotations

import json
import logging
import os
import types
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("river_runner.gpu")


@dataclass
class _FakeDevice:
    index: int
    name: str
    memory: int
    used: int = 0
    util: int = 0
    temperature: int = 35

    @property
    def uuid(self) -> str:
        return f"GPU-00000000-0000-4000-8000-{self.index:012d}"


class _Memory:
    def __init__(self, total: int, used: int) -> None:
        self.total, self.used, self.free = total, used, total - used


class _Util:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu, self.memory = gpu, memory


def fake_nvml(spec: str) -> types.SimpleNamespace:
    """A stand-in for the pynvml module. `spec` is a count ("2") or a JSON list of
    {"name", "memory"} objects describing the devices."""
    spec = spec.strip()
    if spec.isdigit():
        entries: list[dict[str, Any]] = [{} for _ in range(int(spec))]
    else:
        entries = json.loads(spec)
    devices = [
        _FakeDevice(
            index=i,
            name=str(entry.get("name", "River Fake GPU")),
            memory=int(entry.get("memory", 16 * 1024**3)),
        )
        for i, entry in enumerate(entries)
    ]

    def handle(index: int) -> _FakeDevice:
        return devices[index]

    return types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetName=lambda h: h.name,
        nvmlDeviceGetUUID=lambda h: h.uuid,
        nvmlDeviceGetMemoryInfo=lambda h: _Memory(h.memory, h.used),
        nvmlDeviceGetUtilizationRates=lambda h: _Util(h.util, 0),
        nvmlDeviceGetTemperature=lambda h, _sensor: h.temperature,
        # Bus 0x81 on: addresses no real device of a test machine has.
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(
            busId=f"00000000:{0x81 + h.index:02x}:00.0"
        ),
    )


def load_nvml(fake_spec: str | None = None) -> Any | None:
    """The NVML module to use: the fake one when asked (or RIVER_FAKE_GPUS is set), the real
    pynvml when a driver answers, otherwise None (a node without GPUs)."""
    fake_spec = fake_spec if fake_spec is not None else os.environ.get("RIVER_FAKE_GPUS")
    if fake_spec:
        return fake_nvml(fake_spec)
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GpuInventory:
    """Reads the GPUs of this node through an NVML-like module.

    Static facts (name, UUID, total memory) are read once: they do not change while the
    runner lives, and the UUID is what a task's own CUDA view is checked against. Live
    figures are read on each call; a figure a device does not support (NVML answers
    NOT_SUPPORTED for temperature on some boards and for utilisation under MIG) is reported
    as None instead of failing the heartbeat that carries the rest.
    """

    def __init__(self, nvml: Any | None) -> None:
        self._nvml = nvml
        self._static: list[dict[str, Any]] | None = None
        self._handles: list[Any] = []

    def count(self) -> int:
        return self._nvml.nvmlDeviceGetCount() if self._nvml else 0

    def inventory(self) -> list[dict[str, Any]]:
        """index, name, uuid and total memory of each GPU (read once, then cached)."""
        if not self._nvml:
            return []
        if self._static is None:
            nvml = self._nvml
            static = []
            handles = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                handles.append(handle)
                uuid = self._optional(lambda h=handle: _text(nvml.nvmlDeviceGetUUID(h)))
                static.append(
                    {
                        "index": index,
                        "name": _text(nvml.nvmlDeviceGetName(handle)),
                        "uuid": uuid,
                        "memory": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    }
                )
            self._static, self._handles = static, handles
        return [dict(entry) for entry in self._static]

    def describe(self) -> list[dict[str, Any]]:
        """Static facts plus current use, one dict per GPU (what a heartbeat carries)."""
        result = self.inventory()
        if not result:
            return result
        nvml = self._nvml
        for entry, handle in zip(result, self._handles, strict=True):
            memory = self._optional(lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h))
            util = self._optional(lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h))
            entry["memory_used"] = int(memory.used) if memory is not None else None
            entry["util"] = float(util.gpu) if util is not None else None
            entry["temperature"] = self._optional(
                lambda h=handle: int(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
            )
        return result

    def pci_bus_ids(self, indices: list[int]) -> list[str]:
        """NVML's PCI bus ids of GPUs `indices` (what a VM's passthrough binds)."""
        self.inventory()  # the handles, read once
        nvml = self._nvml
        if nvml is None:
            raise ValueError("this runner has no GPUs")
        return [_text(nvml.nvmlDeviceGetPciInfo(self._handles[i]).busId) for i in indices]

    @staticmethod
    def _optional(read: Any) -> Any:
        try:
            return read()
        except Exception as exc:  # pynvml.NVMLError and friends: one figure, not the beat
            log.debug("NVML read failed: %s", exc)
            return None


def process_gpu_environment(gpus: list[int]) -> dict[str, str]:
    """CUDA variables for a process task holding `gpus` (NVML indices).

    CUDA numbers devices fastest-first by default, NVML by PCI bus id; on a node with mixed
    boards the same index names different GPUs. PCI_BUS_ID order makes CUDA_VISIBLE_DEVICES
    mean the GPUs River placed the task on (checked on a real GPU by tests/gpu). An empty
    CUDA_VISIBLE_DEVICES hides every GPU from a task that asked for none.
    """
    return {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),
    }
