"""`river up` stops its whole cluster on SIGTERM and SIGHUP, as on Ctrl+C (issue #14):
the Jupyter server, the embedded runner, its task supervisors and tasks, and kernels."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import psutil
import pytest

from river_server.up_tasks import alive
from tests.cluster import _kill_leftover_tasks, start_river_up, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_river_up_leaves_no_process_of_its_cluster(tmp_path: Path, sig: int) -> None:
    up, cluster, data_dir = start_river_up(tmp_path)
    cluster_pids: set[int] = set()
    try:
        task = cluster.submit(command=["sleep", "300"], cores=1)
        cluster.wait_task(task["id"], "running")
        kernel = cluster.ok("POST", "/api/kernels", json={"name": "python3"})

        def kernel_process() -> list[int]:
            return [
                p.pid
                for p in psutil.Process(up.pid).children(recursive=True)
                if kernel["id"] in " ".join(p.cmdline())
            ]

        wait_for(kernel_process, 60, what="the kernel's process")
        task_dir = data_dir / "runners" / "local" / "tasks" / task["id"]
        task_pids = [int((task_dir / name).read_text()) for name in ("supervisor.pid", "child.pid")]
        cluster_pids.update(p.pid for p in psutil.Process(up.pid).children(recursive=True))
        cluster_pids.update(task_pids)
        names = {pid: psutil.Process(pid).name() for pid in cluster_pids if alive(pid)}
        assert len(names) >= 5, names  # server, runner, zygote, kernel, supervisor, task

        up.send_signal(sig)
        wait_for(lambda: up.poll() is not None, 60, what="river up to exit")
        wait_for(
            lambda: not [pid for pid in cluster_pids if alive(pid)],
            30,
            what=f"no process of the cluster left (were {names})",
        )
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        for pid in cluster_pids:  # what a failed run left: the test's own processes
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        _kill_leftover_tasks(data_dir)
