"""Measuring helpers shared by the benchmarks: event-stream timestamps and percentiles."""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tests.cluster import Cluster


class EventClock:
    """Arrival time of each (task id, state) seen on the host's event stream."""

    def __init__(self, cluster: Cluster) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.ready = threading.Event()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, args=(cluster,), daemon=True).start()

    def _run(self, cluster: Cluster) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the host stops at the end
            self._follow(cluster)

    def _follow(self, cluster: Cluster) -> None:
        url = f"{cluster.url}/river/api/events?tasks=all"
        timeout = httpx.Timeout(10, read=None)
        with httpx.stream("GET", url, headers=cluster.headers, timeout=timeout) as response:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if kind == "hello":
                        self.ready.set()
                    elif kind == "task":
                        key = (data["task"]["id"], data["task"]["state"])
                        with self._cond:
                            self.seen.setdefault(key, time.perf_counter())
                            self._cond.notify_all()

    def wait(self, task_id: str, states: set[str], timeout: float = 60.0) -> tuple[str, float]:
        def found() -> tuple[str, float] | None:
            for state in states:
                if (task_id, state) in self.seen:
                    return state, self.seen[(task_id, state)]
            return None

        with self._cond:
            result = self._cond.wait_for(found, timeout)
        if not result:
            raise TimeoutError(f"task {task_id} never reached {sorted(states)}")
        return result


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def describe(name: str, values: list[float], width: int = 34) -> str:
    ms = [v * 1000 for v in values]
    return f"{name:<{width}} median {statistics.median(ms):7.1f} ms   p90 {percentile(ms, 0.9):7.1f} ms"
