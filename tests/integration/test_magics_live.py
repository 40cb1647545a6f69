"""Magics in a real kernel against a live cluster: streaming and interrupt-to-cancel."""

from __future__ import annotations

import time

import psutil
from jupyter_client.manager import start_new_kernel

from tests.cluster import Cluster, wait_for


def test_interrupting_a_waiting_cell_kills_the_task(solo_cluster: Cluster) -> None:
    cluster = solo_cluster
    manager, kernel = start_new_kernel(
        kernel_name="python3", env={"RIVER_URL": cluster.url, "RIVER_TOKEN": cluster.token}
    )
    try:
        kernel.execute_interactive("%load_ext river_magics\n%river connect", timeout=30)
        outputs: list[str] = []

        def collect(message: dict) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                outputs.append(content["text"])
            elif message["msg_type"] in ("display_data", "update_display_data", "execute_result"):
                outputs.append(content["data"].get("text/plain", ""))

        cell = "%%river submit\nimport time\nprint('working', flush=True)\ntime.sleep(60)\n"
        msg_id = kernel.execute(cell)
        # Wait until the remote task really runs and has printed.
        task = wait_for(
            lambda: next(
                iter(
                    t for t in cluster.get("/river/api/tasks")["tasks"] if t["state"] == "running"
                ),
                None,
            ),
            30,
            what="the cell's task to run",
        )
        wait_for(
            lambda: cluster.get(f"/river/api/tasks/{task['id']}/logs")["lines"],
            10,
            what="first line",
        )
        interrupted_at = time.monotonic()
        manager.interrupt_kernel()
        killed = cluster.wait_task(task["id"], "killed", timeout=5)
        assert time.monotonic() - interrupted_at < 2.0 + 0.5  # host saw the kill within ~2 s
        # The reply arrives, the cell says what happened, and the process is gone.
        while True:
            message = kernel.get_iopub_msg(timeout=10)
            if message["parent_header"].get("msg_id") == msg_id:
                collect(message)
                if (
                    message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"
                ):
                    break
        text = "".join(outputs)
        assert "working" in text and f"task {task['id']} killed" in text, text
        assert killed["finished_at"] is not None
        assert not any(
            "time.sleep(60)" in " ".join(p.info["cmdline"] or [])
            or str(task["id"]) in " ".join(p.info["cmdline"] or [])
            for p in psutil.process_iter(["cmdline"])
        )
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
