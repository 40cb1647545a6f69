"""No database query on the host's event loop on the hot paths (issue #15).

The host runs with c.RiverHost.db_loop_guard on: every statement executed while an asyncio
loop runs in the executing thread is logged with the handler or function that ran it
(river_server/loop_guard.py). The test drives runner registration, heartbeats and events,
task submit / list / get / kill / logs, an event stream and the scheduler's passes, then
reads the host's log: none of those may appear. An unconverted route is called once as a
control, so a guard that records nothing cannot pass the test by accident.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from tests.cluster import running_cluster, wait_for
from tests.integration.test_cluster_basics import read_events

GUARD = re.compile(r"river-db-on-loop: (\S+) \(")
# The routes and loop callbacks whose database work runs on the DB threads.
CONVERTED = (
    "RegisterHandler.",
    "HeartbeatHandler.",
    "RunnerEventsHandler.",
    "TasksHandler.",
    "TaskHandler.",
    "TaskActionHandler.",
    "TaskLogsHandler.",
    "EventsHandler.",
    "NodesHandler.",
    "dispatcher.py:",
    "nodes.py:",
    "tasks.py:",
    "auth.py:_user_for_any_token",
)


def guarded_sites(log: Path) -> set[str]:
    return set(GUARD.findall(log.read_text(errors="replace")))


def test_hot_paths_run_no_query_on_the_event_loop(tmp_path: Path) -> None:
    with running_cluster(
        tmp_path,
        ("alpha", "--cpus", "0"),
        heartbeat_interval=0.2,  # many beats, and reconciliations, within the test
        extra_host_args=["--RiverHost.db_loop_guard=True"],
    ) as cluster:
        cluster.wait_node("alpha", "online")
        task = cluster.submit(
            kind="python", cores=1, script="import time\nfor i in range(5): print('line', i)"
        )
        events: list = []
        stop = threading.Event()
        reader = threading.Thread(
            target=read_events, args=(cluster, f"task={task['id']}", stop, events), daemon=True
        )
        reader.start()
        try:
            # A second task waits behind the first (one core) and is killed while queued.
            queued = cluster.submit(command=["sleep", "30"], cores=1)
            cluster.ok("POST", f"/river/api/tasks/{queued['id']}/kill", json={})
            for _ in range(5):
                cluster.get("/river/api/tasks?all=true")
                cluster.get("/river/api/nodes")
            cluster.wait_task(task["id"], "completed")
            assert cluster.task(queued["id"])["state"] == "killed"
            assert [
                line["text"] for line in cluster.get(f"/river/api/tasks/{task['id']}/logs")["lines"]
            ] == [f"line {i}" for i in range(5)]
            wait_for(
                lambda: any(
                    k == "task" and d["task"]["state"] == "completed" for k, d, _ in events
                ),
                15,
                what="the completed state on the event stream",
            )
            assert [d["text"] for k, d, _ in events if k == "log"] == [
                f"line {i}" for i in range(5)
            ]
        finally:
            stop.set()
        # The control: the VPS list still queries on the loop, and the guard sees it.
        cluster.get("/river/api/vps")
        log = tmp_path / "host.log"
        wait_for(
            lambda: any(s.startswith("VpsListHandler.") for s in guarded_sites(log)),
            10,
            what="the guard's record of the unconverted /vps route",
        )
        # Let liveness checks and metric flushes run a few times too.
        wait_for(lambda: len(re.findall("river-db-on-loop", log.read_text())) >= 1, 5)
        offending = sorted(s for s in guarded_sites(log) if s.startswith(CONVERTED))
        assert offending == [], f"database work on the event loop: {offending}"
