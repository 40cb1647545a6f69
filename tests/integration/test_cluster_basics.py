"""End to end through a real host and real runner processes: placement, output, queueing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from river_runner.ids import timestamp_ms
from tests.cluster import Cluster, running_cluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host for the module with a one-core runner `alpha` and a two-core `beta`: every
    test ends with its tasks ended, and best fit (a 2-core task goes to beta), pinning and
    a 2-core queue (pinned to beta) need no host of their own. A host start per test cost
    10-15 s on CI's loaded cores."""
    root = tmp_path_factory.mktemp("basics")
    with running_cluster(root, ("alpha", "--cpus", "0"), ("beta", "--cpus", "0-1")) as c:
        yield c


def read_events(cluster: Cluster, query: str, stop: threading.Event, into: list) -> None:
    """Collect (kind, data, arrival time) from the SSE stream until `stop` is set."""
    try:
        with httpx.stream(
            "GET",
            f"{cluster.url}/river/api/events?{query}",
            headers=cluster.headers,
            timeout=httpx.Timeout(30, read=60),
        ) as response:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    into.append((kind, json.loads(line[6:]), time.monotonic()))
                if stop.is_set():
                    return
    except httpx.HTTPError:
        if not stop.is_set():
            raise


def test_task_runs_on_the_picked_node_and_streams_output(cluster: Cluster) -> None:
    # Best fit: a 2-core task can only go to beta; a pinned task goes where it is told.
    two = cluster.submit(
        kind="python", cores=2, script="import os\nprint('cpus', sorted(os.sched_getaffinity(0)))"
    )
    assert int(two["id"]) > 0 and abs(timestamp_ms(int(two["id"])) / 1000 - time.time()) < 60
    pinned = cluster.submit(command=["sh", "-c", "echo on $RIVER_TASK_ID; exit 3"], target="alpha")

    done = cluster.wait_task(two["id"], "completed")
    assert done["node"] == "beta" and done["exit_code"] == 0 and len(done["cpus"]) == 2
    lines = cluster.get(f"/river/api/tasks/{two['id']}/logs")["lines"]
    assert [line["text"] for line in lines] == [f"cpus {sorted(done['cpus'])}"]

    failed = cluster.wait_task(pinned["id"], "failed")
    assert failed["node"] == "alpha" and failed["exit_code"] == 3
    assert (
        cluster.get(f"/river/api/tasks/{pinned['id']}/logs")["lines"][0]["text"]
        == f"on {pinned['id']}"
    )


def test_event_stream_delivers_lines_before_the_task_ends(cluster: Cluster) -> None:
    task = cluster.submit(
        kind="python",
        script="import time, sys\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.3)\nprint('oops', file=sys.stderr)",
    )
    stop, events = threading.Event(), []
    reader = threading.Thread(
        target=read_events, args=(cluster, f"task={task['id']}", stop, events), daemon=True
    )
    reader.start()
    wait_for(
        lambda: any(k == "task" and d["task"]["state"] == "completed" for k, d, _ in events),
        30,
        what="completed event",
    )
    stop.set()
    logs = [(d["stream"], d["text"]) for k, d, _ in events if k == "log"]
    assert logs == [
        ("stdout", "line 0"),
        ("stdout", "line 1"),
        ("stdout", "line 2"),
        ("stderr", "oops"),
    ]
    first_line_at = next(t for k, d, t in events if k == "log")
    completed_at = next(
        t for k, d, t in events if k == "task" and d["task"]["state"] == "completed"
    )
    assert completed_at - first_line_at > 0.5  # the first line arrived while the task still ran
    states = [d["task"]["state"] for k, d, _ in events if k == "task"]
    assert states[-1] == "completed" and "running" in states


def test_queue_holds_tasks_until_cores_free(cluster: Cluster) -> None:
    gate = cluster.root / "gate"
    # Each task holds its core until the test opens the gate (bounded by its own deadline).
    script = (
        "import os, time\n"
        "deadline = time.time() + 60\n"
        f"while not os.path.exists({str(gate)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
        "print('done')\n"
    )
    tasks = [cluster.submit(kind="python", cores=1, script=script, target="beta") for _ in range(6)]

    # All six were accepted; two hold beta's cores and four wait, each with a position and
    # reason.
    def settled() -> dict | None:
        listing = {t["id"]: t for t in cluster.get("/river/api/tasks")["tasks"]}
        states = [listing[t["id"]]["state"] for t in tasks]
        return listing if states.count("running") == 2 and states.count("queued") == 4 else None

    listing = wait_for(settled, 30, what="two running and four queued")
    waiting = sorted(
        (listing[t["id"]] for t in tasks if listing[t["id"]]["state"] == "queued"),
        key=lambda t: t["queue_position"],
    )
    assert [w["queue_position"] for w in waiting] == [1, 2, 3, 4]
    assert all("core" in (w["wait_reason"] or "") for w in waiting)

    gate.touch()
    finished = [cluster.wait_task(t["id"], "completed", timeout=60) for t in tasks]
    intervals = sorted((f["started_at"], f["finished_at"]) for f in finished)
    for start, _ in intervals:
        concurrent = sum(1 for s, e in intervals if s <= start < e)
        assert concurrent <= 2, f"{concurrent} tasks ran at once on a 2-core node"
    cpus = {tuple(f["cpus"]) for f in finished}
    assert cpus <= {(0,), (1,)}


def test_python_client_submits_streams_and_waits(cluster: Cluster) -> None:
    from river_magics import Client

    client = Client(cluster.url, cluster.token)
    handle = client.submit(
        script="for i in range(3):\n    print('n', i)\nraise SystemExit(2)", cores=2
    )
    lines = [line["text"] for line in handle.stream()]
    final = handle.wait(timeout=30)
    assert lines == ["n 0", "n 1", "n 2"]
    assert final["state"] == "failed" and final["exit_code"] == 2 and final["node"] == "beta"
    assert {n["name"]: n["state"] for n in client.nodes()} == {"alpha": "online", "beta": "online"}
    ok = client.submit(["sh", "-c", "echo fine"], target="alpha").wait(timeout=30)
    assert ok["state"] == "completed" and ok["node"] == "alpha"
    assert [t["id"] for t in client.tasks()][:2] == [ok["id"], final["id"]]
