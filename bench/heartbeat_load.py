"""The host under many runners: N simulated runners heartbeat every second while a client
measures API latency. Prints the host process's CPU share and API latency percentiles,
against the same API latency measured on an idle host in the same run (the floor).

    .venv/bin/python bench/heartbeat_load.py [--runners 500] [--seconds 20] [--db postgresql]

The simulated runners speak the real runner protocol over HTTP (register, then heartbeat
with metrics); they run no tasks, so the host never calls back into them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.databases import CHOICES, database  # noqa: E402
from bench.measure import percentile  # noqa: E402
from tests.cluster import JOIN_TOKEN, Cluster  # noqa: E402

METRICS = {
    "cpu_percent": 12.5,
    "memory_used": 2**33,
    "memory_total": 2**36,
    "load": [0.5, 0.4, 0.3],
}


async def register(client: httpx.AsyncClient, index: int, secret: str = JOIN_TOKEN) -> str:
    body = {
        "name": f"sim-{index:04d}",
        "url": f"http://127.0.0.1:9/{index}",  # never called: these runners get no tasks
        "inbound_secret": f"secret-{index}",
        "cpus": list(range(64)),
        "numa": [list(range(32)), list(range(32, 64))],
        "memory": 2**39,
        "gpus": [{"index": g, "name": "sim", "memory": 2**36} for g in range(8)],
        "backend": "process",
        "running": {},
    }
    response = await client.post(
        "/river/api/runner/register", json=body, headers={"Authorization": f"river-runner {secret}"}
    )
    response.raise_for_status()
    return response.json()["credential"] or secret


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost far less CPU than
    the host it loads (httpx spends ~1 ms per request; this a few tens of microseconds)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, authorization: str) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: {authorization}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def simulated_runner(
    client: httpx.AsyncClient, port: int, index: int, stop: asyncio.Event, errors: list, beats: list
) -> None:
    """Register, then beat once a second, registering again when the host asks to."""
    credential = await register(client, index)
    connection = RawConnection(port)
    body = json.dumps({"metrics": METRICS, "gpus": None, "running": {}}).encode()
    while not stop.is_set():
        started = time.monotonic()
        try:
            status = await connection.post(
                "/river/api/runner/heartbeat", body, f"river-runner {credential}"
            )
            if status == 200:
                beats.append(started)
            else:
                errors.append(status)
                if status == 404:
                    await register(client, index, credential)
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(type(exc).__name__)
            connection.writer = None
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


async def probe_latency(cluster: Cluster, seconds: float) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(
        base_url=cluster.url, headers=cluster.headers, timeout=30
    ) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for path in ("/river/api/tasks", "/river/api/nodes?limit=1"):
                started = time.perf_counter()
                response = await client.get(
                    path if "nodes" not in path else "/river/api/tasks?state=running"
                )
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)
    return latencies


async def run(cluster: Cluster, runners: int, seconds: float) -> None:
    host = psutil.Process(cluster.host_process.pid)
    idle = await probe_latency(cluster, 3)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30, limits=limits) as client:
        stop, errors, beats = asyncio.Event(), [], []
        runners_ = []
        for index in range(runners):
            runners_.append(
                asyncio.ensure_future(
                    simulated_runner(client, cluster.port, index, stop, errors, beats)
                )
            )
            await asyncio.sleep(1.0 / runners)  # spread registrations and beats over a second
        await asyncio.sleep(2)
        errors.clear()
        cpu_before, wall_before = host.cpu_times(), time.monotonic()
        loaded = await probe_latency(cluster, seconds)
        cpu_after, wall_after = host.cpu_times(), time.monotonic()
        stop.set()
        await asyncio.gather(*runners_)
    window = [b for b in beats if wall_before <= b <= wall_after]
    rate = len(window) / (wall_after - wall_before)
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / (
        wall_after - wall_before
    )
    print(f"{runners} simulated runners heartbeating every 1 s for {seconds:.0f} s")
    print(f"heartbeats answered: {rate:.0f}/s (target {runners}/s)")
    print(f"host process CPU: {cpu * 100:.1f}% of one core")
    print(f"heartbeat errors: {len(errors)} {sorted(set(map(str, errors)))[:5]}")
    for name, values in (("idle host (floor)", idle), ("under load", loaded)):
        ms = [v * 1000 for v in values]
        print(
            f"API latency {name:<18} p50 {statistics.median(ms):6.1f} ms  p99 {percentile(ms, 0.99):6.1f} ms  (n={len(ms)})"
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runners", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--db", choices=CHOICES, default="sqlite")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="river-bench-") as root,
        database(args.db, Path(root)) as url,
    ):
        print(f"database: {args.db}")
        # Offline detection at its default (6 x 5 s) would never fire during the run.
        cluster = Cluster(Path(root), heartbeat_interval=1.0, db_url=url)
        cluster.start_host()
        try:
            asyncio.run(run(cluster, args.runners, args.seconds))
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
