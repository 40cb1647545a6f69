"""Many concurrent clients against one host: every line arrives, nothing errors, memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.cluster import Cluster

CLIENTS = int(os.environ.get("RIVER_LOAD_CLIENTS", "200"))
# 30 s: every client still does several rounds (785 tasks by 200 clients here); 60 s, as
# measured in docs/performance.md, added half a minute to CI and no new kind of load.
SECONDS = float(os.environ.get("RIVER_LOAD_SECONDS", "30"))
LINES = 20
COMMAND = f"for i in $(seq 1 {LINES}); do echo line $i; done"


async def one_client(client: httpx.AsyncClient, deadline: float, results: dict) -> None:
    """Submit, stream the task's events to its end, check its lines; repeat until the deadline."""
    while time.monotonic() < deadline:
        response = await client.post("/river/api/tasks", json={"command": COMMAND, "cores": 0})
        if response.status_code != 201:
            results["errors"].append(f"submit {response.status_code}: {response.text[:200]}")
            return
        task_id = response.json()["task"]["id"]
        lines, state, reason = [], None, None
        async with client.stream("GET", f"/river/api/events?task={task_id}") as stream:
            kind = None
            async for raw in stream.aiter_lines():
                if raw.startswith("event: "):
                    kind = raw[7:]
                elif raw.startswith("data: "):
                    data = json.loads(raw[6:])
                    if kind == "log":
                        lines.append(data["text"])
                    elif kind == "task" and data["task"]["id"] == task_id:
                        state, reason = data["task"]["state"], data["task"]["reason"]
                        if state in ("completed", "failed", "killed", "lost"):
                            break
        if state != "completed" or lines != [f"line {i}" for i in range(1, LINES + 1)]:
            results["errors"].append(f"task {task_id}: {state} ({reason}), {len(lines)} lines")
        results["tasks"] += 1


async def run_load(cluster: Cluster) -> dict:
    results: dict = {"errors": [], "tasks": 0}
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    async with httpx.AsyncClient(
        base_url=cluster.url, headers=cluster.headers, limits=limits, timeout=httpx.Timeout(120)
    ) as client:
        deadline = time.monotonic() + SECONDS
        await asyncio.gather(*(one_client(client, deadline, results) for _ in range(CLIENTS)))
    return results


@pytest.mark.slow
def test_concurrent_clients_submit_and_stream(tmp_path: Path) -> None:
    # Heartbeats at 2 s (offline after 12 s; production default is 5 s): the suite's 0.5 s
    # is tuned for fast failure tests, and this test saturates both cores on purpose.
    # All clients are one user here, and each holds an event stream: the per-user bound on
    # streams (docs/security.md, default 32) is raised, since this test measures the host
    # under many clients, not that bound (tests/security/test_limits.py does).
    cluster = Cluster(
        tmp_path,
        heartbeat_interval=2.0,
        extra_host_args=[f"--RiverHost.max_event_streams_per_user={CLIENTS * 2}"],
    )
    cluster.start_host()
    try:
        check_load(cluster)
    finally:
        cluster.close()


def check_load(cluster: Cluster) -> None:
    cluster.start_runner("busy")
    host = psutil.Process(cluster.host_process.pid)
    rss_before = host.memory_info().rss
    results = asyncio.run(run_load(cluster))
    rss_after = host.memory_info().rss
    assert not results["errors"], results["errors"][:10]
    assert results["tasks"] >= CLIENTS, results
    # The host holds no per-line state: its memory grows far less than what passed through.
    assert rss_after - rss_before < 300 * 2**20, (rss_before, rss_after)
    print(
        f"{results['tasks']} tasks by {CLIENTS} clients in {SECONDS:.0f}s; host RSS "
        f"{rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
    )
