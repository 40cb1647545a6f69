"""Crash the host in the middle of real work and check that nothing is lost or run twice."""

from __future__ import annotations

import collections
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, wait_for

TERMINAL = {"completed", "failed", "killed", "killed_oom", "lost"}


@pytest.fixture
def ledger() -> Iterator[Path]:
    """A folder every task can write to: under a root runner tasks run as `nobody`, which
    cannot reach the test's own (0700) temporary directory."""
    folder = Path(tempfile.mkdtemp(prefix="river-ledger-"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_host_killed_with_50_tasks_in_flight(cluster: Cluster, ledger: Path) -> None:
    cluster.start_runner("r1", "--cpus", "0-1")
    cluster.start_runner("r2", "--cpus", "0-1")
    # Each run appends its task id to a ledger file: a task that ran twice shows twice.
    script = (
        "import os, time\n"
        "with open(os.path.join(os.environ['LEDGER'], os.environ['RIVER_TASK_ID']), 'a') as f:\n"
        "    f.write('ran\\n')\n"
        "time.sleep(0.2)\n"
        "raise SystemExit(int(os.environ['RIVER_TASK_ID']) % 3 == 0)\n"
    )
    tasks = [
        cluster.submit(kind="python", script=script, cores=1, env={"LEDGER": str(ledger)})
        for _ in range(50)
    ]
    wait_for(lambda: len(list(ledger.iterdir())) >= 8, 60, what="some tasks to have run")
    cluster.stop_host(signal.SIGKILL)
    cluster.start_host()

    def all_final() -> dict[str, dict] | None:
        listing = {t["id"]: t for t in cluster.get("/river/api/tasks?all=1")["tasks"]}
        return listing if all(listing[t["id"]]["state"] in TERMINAL for t in tasks) else None

    final = wait_for(all_final, 120, interval=0.5, what="every task to end")
    states = collections.Counter(final[t["id"]]["state"] for t in tasks)
    assert set(states) <= {"completed", "failed"}, states
    for task in tasks:
        record = final[task["id"]]
        runs = (ledger / task["id"]).read_text().count("ran")
        assert runs == 1, f"task {task['id']} ran {runs} times"
        expected = "failed" if int(task["id"]) % 3 == 0 else "completed"
        assert record["state"] == expected, record
