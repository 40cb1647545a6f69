"""Submit -> running and submit -> completed through a real cluster (process backend),
against the floor of a bare fork/exec of the same command, interleaved.

    .venv/bin/python bench/process_overhead.py [-n 30]

The cluster is real: a Jupyter host with River and one runner process on loopback. Times
come from one event stream subscribed to all tasks, so no polling interval is measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster import Cluster  # noqa: E402

COMMAND = ["echo", "hi"]


class EventClock:
    """Arrival time of each (task id, state) seen on the host's event stream."""

    def __init__(self, cluster: Cluster) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.ready = threading.Event()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, args=(cluster,), daemon=True).start()

    def _run(self, cluster: Cluster) -> None:
        url = f"{cluster.url}/river/api/events?tasks=all"
        with httpx.stream("GET", url, headers=cluster.headers, timeout=httpx.Timeout(10, read=None)) as response:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if kind == "hello":
                        self.ready.set()
                    elif kind == "task":
                        with self._cond:
                            self.seen.setdefault((data["task"]["id"], data["task"]["state"]), time.perf_counter())
                            self._cond.notify_all()

    def wait(self, task_id: str, state: str, timeout: float = 30.0) -> float:
        with self._cond:
            ok = self._cond.wait_for(lambda: (task_id, state) in self.seen, timeout)
        if not ok:
            raise TimeoutError(f"task {task_id} never reached {state}")
        return self.seen[(task_id, state)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def describe(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{name:<28} median {statistics.median(ms):7.1f} ms   p90 {percentile(ms, 0.9):7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="river-bench-") as root:
        cluster = Cluster(Path(root), heartbeat_interval=5.0)
        cluster.start_host()
        try:
            cluster.start_runner("bench", "--backend", "process")
            clock = EventClock(cluster)
            clock.ready.wait(10)
            client = httpx.Client(base_url=cluster.url, headers=cluster.headers, timeout=30)
            to_running, to_completed, floor = [], [], []
            for i in range(args.n + 3):
                started = time.perf_counter()
                subprocess.run(COMMAND, stdout=subprocess.DEVNULL, check=True)
                fork_exec = time.perf_counter() - started

                submitted = time.perf_counter()
                response = client.post("/river/api/tasks", json={"command": COMMAND, "cores": 1})
                task_id = response.json()["task"]["id"]
                running = clock.wait(task_id, "running")
                completed = clock.wait(task_id, "completed")
                if i >= 3:  # warm-up
                    floor.append(fork_exec)
                    to_running.append(running - submitted)
                    to_completed.append(completed - submitted)
            print(f"process backend, N={args.n}, command {' '.join(COMMAND)!r}")
            print(describe("floor: bare fork/exec", floor))
            print(describe("River submit -> running", to_running))
            print(describe("River submit -> completed", to_completed))
            overhead = statistics.median(to_completed) - statistics.median(floor)
            print(f"River overhead over the floor (median): {overhead * 1000:.1f} ms")
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
