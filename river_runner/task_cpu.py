"""Per-task CPU use for heartbeats: what the host's idle culler judges a VPS by.

The host culls VPSes whose CPU stayed low (river_server/idle_cull.py), so the runner, which
sits next to the workloads, reports each running task's CPU as a percentage of one core
(100 = one core busy, as `docker stats` counts). A container is read from its cgroup's
counter (cgroup v1 or v2, one small file: cheaper and more exact than `docker stats`,
which takes a second per container); a process task from its process tree (psutil). The
percentage is the counter's growth between two beats, so the first beat after a start
reports nothing. At most MAX_REPORTED tasks go in one beat (a heartbeat stays small).
"""

from __future__ import annotations

import glob
import time
from collections.abc import Mapping

import psutil

MAX_REPORTED = 256
# Where dockerd puts a container's cgroup: cgroupfs and systemd drivers, cgroup v1 and v2.
_CGROUP_V1 = (
    "/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage",
    "/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage",
    "/sys/fs/cgroup/cpuacct/system.slice/docker-{id}.scope/cpuacct.usage",
    "/sys/fs/cgroup/cpu,cpuacct/system.slice/docker-{id}.scope/cpuacct.usage",
)
_CGROUP_V2 = (
    "/sys/fs/cgroup/docker/{id}/cpu.stat",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat",
)


def container_cpu_seconds(container_id: str) -> float | None:
    """CPU seconds a container has used (all its processes), from its cgroup; None when
    its cgroup is not found (another driver layout, or the container is gone)."""
    for pattern in _CGROUP_V1:
        try:
            with open(pattern.format(id=container_id)) as handle:
                return int(handle.read().strip()) / 1e9
        except (OSError, ValueError):
            continue
    for pattern in _CGROUP_V2:
        for path in glob.glob(pattern.format(id=container_id)):
            try:
                with open(path) as handle:
                    for line in handle:
                        key, _, value = line.partition(" ")
                        if key == "usage_usec":
                            return int(value) / 1e6
            except (OSError, ValueError):
                continue
    return None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and its descendants (children they reaped included)."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.Error:  # ended while we looked
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


class CpuMeter:
    """Turns cumulative CPU seconds per task into percentages between two readings."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}  # task id -> (cpu seconds, when)

    def percents(
        self, readings: Mapping[int, float | None], now: float | None = None
    ) -> dict[str, float]:
        """{task id: CPU percent of one core} for tasks read twice; forgets ended tasks."""
        now = time.monotonic() if now is None else now
        out: dict[str, float] = {}
        seen: dict[int, tuple[float, float]] = {}
        for task_id, used in readings.items():
            if used is None:
                continue
            seen[task_id] = (used, now)
            previous = self._last.get(task_id)
            if previous is not None and now > previous[1] and len(out) < MAX_REPORTED:
                rate = max(0.0, used - previous[0]) / (now - previous[1])
                out[str(task_id)] = round(100.0 * rate, 1)
        self._last = seen
        return out
