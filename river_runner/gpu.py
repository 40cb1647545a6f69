"""GPU inventory through the pynvml interface, with a fake NVML for machines without GPUs.

The inventory code only calls pynvml functions, so the fake module below stands in for the
real one (same function names and return shapes) and everything above it is exercised as is.
"""

from __future__ import annotations

import json
import os
import types
from dataclasses import dataclass
from typing import Any


@dataclass
class _FakeDevice:
    index: int
    name: str
    memory: int
    used: int = 0
    util: int = 0
    temperature: int = 35


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
        nvmlDeviceGetMemoryInfo=lambda h: _Memory(h.memory, h.used),
        nvmlDeviceGetUtilizationRates=lambda h: _Util(h.util, 0),
        nvmlDeviceGetTemperature=lambda h, _sensor: h.temperature,
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


class GpuInventory:
    """Reads the GPUs of this node through an NVML-like module."""

    def __init__(self, nvml: Any | None) -> None:
        self._nvml = nvml

    def count(self) -> int:
        return self._nvml.nvmlDeviceGetCount() if self._nvml else 0

    def describe(self) -> list[dict[str, Any]]:
        """Static facts plus current use, one dict per GPU."""
        if not self._nvml:
            return []
        nvml = self._nvml
        result = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            util = nvml.nvmlDeviceGetUtilizationRates(handle)
            result.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory": int(memory.total),
                    "memory_used": int(memory.used),
                    "util": float(util.gpu),
                    "temperature": int(
                        nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                    ),
                }
            )
        return result
