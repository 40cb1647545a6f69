"""Node facts (CPUs, NUMA layout, memory) and live metrics, read with psutil."""

from __future__ import annotations

import glob
import os
import re
from typing import Any

import psutil


def usable_cpus() -> list[int]:
    """CPU ids this runner may hand out (its own affinity mask, not the machine's count)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(psutil.cpu_count() or 1))


def _parse_cpulist(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            start, end = part.split("-")
            cpus.extend(range(int(start), int(end) + 1))
        else:
            cpus.append(int(part))
    return cpus


def numa_layout(cpus: list[int]) -> list[list[int]]:
    """CPU ids per NUMA node from sysfs, restricted to `cpus`; one group when unknown."""
    allowed = set(cpus)
    groups = []
    paths = glob.glob("/sys/devices/system/node/node[0-9]*/cpulist")
    for path in sorted(paths, key=lambda p: int(re.findall(r"node(\d+)", p)[-1])):
        with open(path) as handle:
            members = [c for c in _parse_cpulist(handle.read()) if c in allowed]
        if members:
            groups.append(members)
    return groups or [list(cpus)]


def parse_cpu_list(text: str) -> list[int]:
    """Parse '0-3,6' (the --cpus flag and sysfs format)."""
    try:
        return sorted(set(_parse_cpulist(text)))
    except ValueError:
        raise ValueError(f"CPU list must look like 0-3,6, not {text!r}") from None


def sample() -> dict[str, Any]:
    """Live metrics for a heartbeat; cheap enough to call every second."""
    memory = psutil.virtual_memory()
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover
        load = []
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_used": memory.total - memory.available,
        "memory_total": memory.total,
        "load": load,
    }
