"""Event-stream line latency while clients hammer the API, against the idle floor.

A real host (River in Jupyter) and one process runner on core 0 run a task that prints N
lines, each stamped with time.time() when written; this process reads them from the host's
event stream (TaskHandle.stream) and records written -> seen. First on an idle host (the
floor, same run), then while `--clients` threads loop submit -> list -> kill against the
API (each submission queues behind the printing task, so it costs the scheduler a pass).
With database work on the event loop each of those queries delays every stream; with it
on the DB threads (river_server/dbwork.py) the stream should stay near its floor.

Usage: .venv/bin/python bench/event_latency_under_load.py [--db sqlite|postgresql]
           [-n 200] [--interval 0.02] [--clients 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.databases import CHOICES, database  # noqa: E402
from bench.log_latency import SCRIPT, written_at  # noqa: E402
from bench.measure import percentile  # noqa: E402
from river_magics import Client  # noqa: E402
from tests.cluster import Cluster  # noqa: E402


def stream_latencies(client: Client, script: str) -> list[float]:
    handle = client.submit(script=script, name="latency", cores=1)
    latencies = []
    for line in handle.stream(timeout=300):
        at = written_at(line["text"])
        if at is not None:
            latencies.append(time.time() - at)
    return latencies


def hammer(cluster: Cluster, stop: threading.Event, timings: list[float], errors: list) -> None:
    """submit -> list -> kill until `stop`; the duration of every call into `timings`."""
    with httpx.Client(base_url=cluster.url, headers=cluster.headers, timeout=60) as http:
        while not stop.is_set():
            try:
                start = time.perf_counter()
                task = http.post("/river/api/tasks", json={"command": ["true"], "cores": 1})
                timings.append(time.perf_counter() - start)
                task.raise_for_status()
                start = time.perf_counter()
                http.get("/river/api/tasks", params={"limit": 50}).raise_for_status()
                timings.append(time.perf_counter() - start)
                start = time.perf_counter()
                http.post(f"/river/api/tasks/{task.json()['task']['id']}/kill", json={})
                timings.append(time.perf_counter() - start)
            except httpx.HTTPError as exc:
                errors.append(exc)


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name:<18} n={len(ms):<5} p50 {percentile(ms, 0.5):7.1f} ms  "
        f"p99 {percentile(ms, 0.99):7.1f} ms  max {max(ms):7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=CHOICES, default="sqlite")
    parser.add_argument("-n", type=int, default=200, help="lines per run (default 200)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between lines")
    parser.add_argument("--clients", type=int, default=8, help="API-hammering threads")
    args = parser.parse_args()
    script = SCRIPT.format(n=args.n, interval=args.interval)
    with tempfile.TemporaryDirectory(prefix="river-bench-") as tmp:
        root = Path(tmp)
        with database(args.db, root) as url:
            cluster = Cluster(root, db_url=url)
            cluster.start_host()
            try:
                cluster.start_runner("solo", "--cpus", "0")
                cluster.wait_node("solo", "online")
                client = Client(cluster.url, token=cluster.token)
                idle = stream_latencies(client, script)
                stop, timings, errors = threading.Event(), [], []
                threads = [
                    threading.Thread(target=hammer, args=(cluster, stop, timings, errors))
                    for _ in range(args.clients)
                ]
                for thread in threads:
                    thread.start()
                try:
                    time.sleep(1.0)  # let the load reach its steady state
                    loaded = stream_latencies(client, script)
                finally:
                    stop.set()
                    for thread in threads:
                        thread.join()
            finally:
                cluster.close()
    print(f"database: {args.db}; {args.n} lines every {args.interval}s; {args.clients} clients")
    print(summary("idle stream", idle))
    print(summary("loaded stream", loaded))
    print(summary("API calls (load)", timings))
    print(f"API errors under load: {len(errors)} {sorted(set(map(str, errors)))[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
