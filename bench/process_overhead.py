"""Submit -> running and submit -> completed through a real cluster (process backend),
against the floor of a bare fork/exec of the same command, interleaved.

    .venv/bin/python bench/process_overhead.py [-n 30]

The cluster is real: a Jupyter host with River and one runner process on loopback. Times
come from one event stream subscribed to all tasks, so no polling interval is measured.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measure import EventClock, describe  # noqa: E402
from tests.cluster import Cluster  # noqa: E402

COMMAND = ["echo", "hi"]


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
                _, running = clock.wait(task_id, {"running"})
                _, completed = clock.wait(task_id, {"completed"})
                if i >= 3:  # warm-up
                    floor.append(fork_exec)
                    to_running.append(running - submitted)
                    to_completed.append(completed - submitted)
            print(f"process backend, N={args.n}, command {' '.join(COMMAND)!r}")
            print(describe("floor: bare fork/exec", floor, width=28))
            print(describe("River submit -> running", to_running, width=28))
            print(describe("River submit -> completed", to_completed, width=28))
            overhead = statistics.median(to_completed) - statistics.median(floor)
            print(f"River overhead over the floor (median): {overhead * 1000:.1f} ms")
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
