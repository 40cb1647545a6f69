"""The notebook experience against live clusters: streaming into cells, push/pull, arrays
and several targets, the dashboard widget, the async client, blobs, and the shipped
notebooks (executed with nbclient, outputs checked)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nbformat
import psutil
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from river_magics import AsyncClient, Client, PayloadError, RiverError
from river_widgets import Dashboard
from tests.cluster import REPO, Cluster, wait_for


def execute(
    notebook: nbformat.NotebookNode, cluster: Cluster, client_class: type = NotebookClient
) -> NotebookClient:
    saved = {k: os.environ.get(k) for k in ("RIVER_URL", "RIVER_TOKEN")}
    os.environ.update(RIVER_URL=cluster.url, RIVER_TOKEN=cluster.token)
    try:
        runner = client_class(notebook, timeout=120, kernel_name="python3", allow_errors=True)
        runner.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return runner


def notebook_of(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    return new_notebook(cells=[new_code_cell(source, id=cell_id) for cell_id, source in cells])


def text_of(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    cell = next(c for c in notebook.cells if c.get("id") == cell_id)
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}\n" + "\n".join(output.traceback))
        elif "data" in output:
            parts.append(output.data.get("text/plain", "") + "\n")
    return "".join(parts)


def errors_of(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """Cells that failed: an error output, or IPython's one-line `UsageError: ...`."""
    failed = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                failed[cell.id] = f"{output.ename}: {output.evalue}"
            elif output.output_type == "stream" and output.text.startswith("UsageError:"):
                failed[cell.id] = output.text.strip()
    return failed


def started(handle: Any, timeout: float = 30) -> None:
    """Wait until a task runs and has printed (its process is set up to be killed)."""
    wait_for(handle.logs, timeout, what=f"task {handle.id} to print")


def max_overlap(tasks: list[dict[str, Any]]) -> int:
    """Most tasks running at one moment, from the host's started/finished times."""
    edges = sorted(
        [(t["started_at"], 1) for t in tasks] + [(t["finished_at"], -1) for t in tasks],
        key=lambda edge: (edge[0], edge[1]),
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def pair_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes with two (fake) GPUs and two cores each; blobs limited to 64 KiB."""
    cluster = Cluster(
        tmp_path_factory.mktemp("pair"), extra_host_args=["--RiverHost.blob_max_bytes=65536"]
    )
    cluster.start_host()
    try:
        for name in ("gpu-a", "gpu-b"):
            cluster.start_runner(name, "--cpus", "0-1", "--fake-gpus", "2")
        yield cluster
    finally:
        cluster.close()


# ---- live streaming ------------------------------------------------------------------------


class TimedClient(NotebookClient):
    """Records when each iopub message reached the client (and the kernel's send time)."""

    received: list[tuple[float, dict[str, Any]]]

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.received.append((time.time(), msg))
        return super().process_message(msg, cell, cell_index)


def test_lines_reach_the_cell_live_and_in_order(solo_cluster: Cluster) -> None:
    notebook = notebook_of(
        ("connect", "%load_ext river_magics\n%river connect"),
        (
            "stream",
            "%%river submit --name three-lines\nimport time\n"
            "for i in range(1, 4):\n    print('line', i, flush=True)\n    time.sleep(0.3)\n",
        ),
    )
    TimedClient.received = []
    execute(notebook, solo_cluster, TimedClient)
    arrivals = {}
    for at, msg in TimedClient.received:
        if msg["msg_type"] == "stream":
            for i in range(1, 4):
                if f"line {i}" in msg["content"]["text"]:
                    arrivals.setdefault(i, (at, msg["header"]["date"].timestamp()))
    assert sorted(arrivals) == [1, 2, 3], text_of(notebook, "stream")
    text = text_of(notebook, "stream")
    assert text.index("line 1") < text.index("line 2") < text.index("line 3")
    assert text.count("line 1") == 1 and "completed (exit 0)" in text
    task = next(
        t for t in solo_cluster.get("/river/api/tasks")["tasks"] if t["name"] == "three-lines"
    )
    # The first line is in the cell well before the task ends (it sleeps 0.6 s more).
    assert arrivals[1][0] < task["finished_at"] - 0.3, (arrivals, task["finished_at"])
    assert arrivals[1][1] < arrivals[2][1] < arrivals[3][1]
    assert arrivals[3][0] - arrivals[1][0] > 0.45  # they were not delivered in one burst


def test_status_line_follows_the_queue_position(solo_cluster: Cluster) -> None:
    client = Client(solo_cluster.url, solo_cluster.token)
    blocker = client.submit(script="import time; time.sleep(60)", name="blocker")
    ahead = client.submit(script="print('ahead')", name="ahead")
    waiter = client.submit(script="print('waiter')", name="waiter")
    try:
        positions: list[int | None] = []
        started = time.monotonic()
        for kind, data in waiter.watch(timeout=30):
            if kind == "task":
                positions.append(data.get("queue_position"))
                if positions[-1] == 2:
                    ahead.kill()  # leaving the queue sends the waiter no event of its own
                if positions[-1] == 1:
                    break
        assert positions[:1] == [2] and positions[-1] == 1, positions
        assert time.monotonic() - started < 10
        assert waiter.status == "queued"
    finally:
        for handle in (blocker, ahead, waiter):
            # A task that ends as it is killed makes its runner answer "not running here"
            # before the host has the end (a known race, see the issue note): cleanup only.
            with contextlib.suppress(RiverError):
                handle.kill() if handle.status not in ("killed", "completed") else None
        client.close()


def test_interrupting_an_array_kills_every_task(solo_cluster: Cluster) -> None:
    cluster = solo_cluster
    manager, kernel = start_new_kernel(
        kernel_name="python3",
        env={**os.environ, "RIVER_URL": cluster.url, "RIVER_TOKEN": cluster.token},
    )
    try:
        kernel.execute_interactive("%load_ext river_magics\n%river connect", timeout=30)
        msg_id = kernel.execute(
            "%%river submit --array 0-2 --name interrupted\nimport time\n"
            "print('working', flush=True)\ntime.sleep(60)\n"
        )

        def mine() -> list[dict[str, Any]]:
            return [
                t for t in cluster.get("/river/api/tasks")["tasks"] if t["name"] == "interrupted"
            ]

        wait_for(lambda: len(mine()) == 3 and any(t["state"] == "running" for t in mine()), 30)
        running = next(t for t in mine() if t["state"] == "running")
        wait_for(lambda: cluster.get(f"/river/api/tasks/{running['id']}/logs")["lines"], 10)
        interrupted = time.monotonic()
        manager.interrupt_kernel()
        wait_for(lambda: all(t["state"] == "killed" for t in mine()), 10, what="all killed")
        took = time.monotonic() - interrupted
        assert took < 2.5, (took, [(t["state"], t["finished_at"]) for t in mine()])
        outputs = []
        while True:
            message = kernel.get_iopub_msg(timeout=10)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            content = message["content"]
            if message["msg_type"] == "stream":
                outputs.append(content["text"])
            elif message["msg_type"] in ("display_data", "update_display_data"):
                outputs.append(content["data"].get("text/plain", ""))
            elif message["msg_type"] == "status" and content["execution_state"] == "idle":
                break
        text = "".join(outputs)
        assert "[0] working" in text and "Interrupted: 3 tasks ended (3 killed)" in text, text
        assert not any(
            "time.sleep(60)" in " ".join(p.info["cmdline"] or [])
            for p in psutil.process_iter(["cmdline"])
        )
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)


# ---- push / pull ---------------------------------------------------------------------------


def test_push_and_pull_round_trip_and_name_what_fails(solo_cluster: Cluster) -> None:
    tasks_before = len(solo_cluster.get("/river/api/tasks")["tasks"])
    notebook = notebook_of(
        ("connect", "%load_ext river_magics\n%river connect"),
        (
            "data",
            "import numpy as np, threading\n"
            "config = {'name': 'run-1', 'scales': [1, 2, 3], 'nested': {'a': (1, 2)}}\n"
            "matrix = np.arange(12, dtype=np.float32).reshape(3, 4)\n"
            "lock = threading.Lock()",
        ),
        (
            "round-trip",
            "%%river submit --push config,matrix --pull report,result\n"
            "import numpy as np\n"
            "result = matrix * config['scales'][2]\n"
            "report = {**config, 'shape': result.shape, 'dtype': str(result.dtype)}\n"
            "print('remote sum', float(result.sum()))",
        ),
        (
            "check",
            "assert report == {**config, 'shape': (3, 4), 'dtype': 'float32'}, report\n"
            "assert isinstance(result, np.ndarray) and result.dtype == np.float32\n"
            "np.testing.assert_array_equal(result, matrix * 3)\n"
            "print('round trip ok')",
        ),
        ("unpicklable", "%%river submit --push config,lock\nprint('never runs')"),
        ("missing-push", "%%river submit --push nothing_here\nprint('never runs')"),
        ("missing-pull", "%%river submit --pull absent\nx = 1"),
        ("unpicklable-pull", "%%river submit --pull gen\ngen = (i for i in range(3))"),
    )
    execute(notebook, solo_cluster)
    assert "remote sum 198.0" in text_of(notebook, "round-trip")
    assert "pulled report (dict), result (ndarray)" in text_of(notebook, "round-trip")
    assert "round trip ok" in text_of(notebook, "check")
    errors = errors_of(notebook)
    assert set(errors) == {"unpicklable", "missing-push"}, errors
    assert "cannot push 'lock'" in errors["unpicklable"] and "pickled" in errors["unpicklable"]
    assert errors["unpicklable"].startswith("UsageError")
    assert "no variable named nothing_here" in errors["missing-push"]
    for cell_id in ("unpicklable", "missing-push"):
        assert "Traceback" not in text_of(notebook, cell_id)
    # Refused before anything was sent: only the three cells that ran made tasks.
    assert len(solo_cluster.get("/river/api/tasks")["tasks"]) == tasks_before + 3
    missing = text_of(notebook, "missing-pull")
    assert "cannot pull 'absent': the cell did not define absent" in missing
    assert "failed (exit 1)" in missing and "Traceback" not in missing
    assert "cannot pull 'gen': this generator cannot be pickled" in text_of(
        notebook, "unpicklable-pull"
    )


# ---- arrays and several targets ------------------------------------------------------------


def test_array_limit_grid_and_one_task_per_target(pair_cluster: Cluster) -> None:
    notebook = notebook_of(
        ("connect", "%load_ext river_magics\n%river connect"),
        (
            "array",
            "%%river submit --array 0-3%1 --name limited --pull square\nimport os, time\n"
            "index = int(os.environ['RIVER_ARRAY_INDEX'])\n"
            "print('index', index, 'of', os.environ['RIVER_ARRAY_SIZE'])\n"
            "square = index * index\ntime.sleep(0.3)",
        ),
        ("pulled", "print(sorted(square.items()))"),
        (
            "targets",
            "%%river submit -t gpu-a -t gpu-b --name both\nimport os\n"
            "print('task', os.environ['RIVER_TASK_ID'])",
        ),
        ("bad", "%%river submit --array 0-3 -t gpu-a -t gpu-b\nprint(1)"),
        ("bad-spec", "%%river submit --array 3-1\nprint(1)"),
    )
    execute(notebook, pair_cluster)
    text = text_of(notebook, "array")
    assert "array 0-3%1 (4 tasks): 4 completed" in text, text
    for i in range(4):
        assert f"[{i}] index {i} of 4" in text
    assert "[(0, 0), (1, 1), (2, 4), (3, 9)]" in text_of(notebook, "pulled")
    tasks = pair_cluster.get("/river/api/tasks")["tasks"]
    limited = [t for t in tasks if t["name"] == "limited"]
    assert len(limited) == 4 and {t["array"]["limit"] for t in limited} == {1}
    # Four free cores on two nodes, yet never more than one member ran at a time.
    assert max_overlap(limited) == 1
    both = [t for t in tasks if t["name"] == "both"]
    assert sorted(t["node"] for t in both) == ["gpu-a", "gpu-b"]
    targets = text_of(notebook, "targets")
    assert "2 targets: 2 completed" in targets
    for task in both:
        assert f"[{task['node']}] task {task['id']}" in targets
    errors = errors_of(notebook)
    assert "either --array or several -t" in errors["bad"]
    assert "empty range" in errors["bad-spec"]


# ---- dashboard -----------------------------------------------------------------------------


def test_dashboard_follows_nodes_and_a_task_through_its_states(solo_cluster: Cluster) -> None:
    client = Client(solo_cluster.url, solo_cluster.token)
    dashboard = Dashboard(client, refresh=0.3)
    try:
        state = dashboard.get_state()
        assert [n["name"] for n in state["nodes"]] == ["solo"] and state["running"]
        assert state["nodes"][0]["bars"]["cpu"] == state["nodes"][0]["cpu_percent"]
        blocker = client.submit(script="import time; print('blocking', flush=True); time.sleep(1)")
        task = client.submit(script="print('dashboard task')", name="watched")
        wait_for(
            lambda: any(q["id"] == task.id for q in dashboard.get_state()["queue"]),
            10,
            what="the task in the dashboard's queue",
        )
        task.wait(30)
        wait_for(
            lambda: dashboard.get_state()["transitions"].get(task.id, [])[-1:] == ["completed"],
            10,
            what="the dashboard to see the task complete",
        )
        state = dashboard.get_state()
        seen = state["transitions"][task.id]
        assert seen[0] == "queued" and "running" in seen and seen[-1] == "completed", seen
        assert seen.index("queued") < seen.index("running") < seen.index("completed")
        assert state["events"] >= 3  # from the event stream, not only from refreshes
        assert "completed" in state["rows"][task.id]["label"]
        assert state["rows"][task.id]["kill_disabled"]
        wait_for(lambda: len(dashboard.get_state()["nodes"][0]["history"]) >= 3, 10)
        # The buttons, clicked as a user would.
        lines = dashboard.show_logs(blocker.id)
        assert [line["text"] for line in lines] == ["blocking"]
        assert "blocking" in dashboard.logs_html.value
        victim = client.submit(
            script="import time; print('started', flush=True); time.sleep(60)", name="victim"
        )
        started(victim)
        wait_for(lambda: victim.id in dashboard.get_state()["rows"], 10)
        dashboard._task_rows[victim.id].kill.click()
        assert victim.wait(10)["state"] == "killed"
        wait_for(lambda: dashboard.get_state()["transitions"][victim.id][-1] == "killed", 10)
    finally:
        dashboard.stop()
        client.close()
    assert not dashboard.running


# ---- the async client ----------------------------------------------------------------------


def test_async_client_streams_pulls_and_kills(solo_cluster: Cluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(solo_cluster.url, solo_cluster.token) as client:
            assert [n["name"] for n in await client.nodes()] == ["solo"]
            handle = await client.submit(
                script="for i in range(3):\n    print(i, flush=True)\ny = x + [3]",
                push={"x": [1, 2]},
                pull=["y"],
            )
            lines = [line["text"] async for line in handle.stream(timeout=30)]
            assert lines == ["0", "1", "2"]
            assert await handle.status == "completed"
            assert await handle.result() == {"y": [1, 2, 3]}
            group = await client.submit_array(
                "0-1", script="import os\nprint(os.environ['RIVER_ARRAY_INDEX'])"
            )
            finals = await group.wait(timeout=30)
            assert [f["state"] for f in finals] == ["completed", "completed"]
            long = await client.submit(
                script="import time\nprint('up', flush=True)\ntime.sleep(60)"
            )
            async for _line in long.stream(timeout=30):
                break  # it runs and has printed
            await long.kill()
            assert (await long.wait(timeout=10))["state"] == "killed"
            failed = await client.submit(script="x = 1", pull=["missing"])
            with pytest.raises(PayloadError, match="cannot pull 'missing'"):
                await failed.result(timeout=30)

    asyncio.run(scenario())


# ---- blobs ---------------------------------------------------------------------------------


def test_blobs_are_owned_and_limited(pair_cluster: Cluster) -> None:
    cluster = pair_cluster
    client = Client(cluster.url, cluster.token)
    handle = client.submit(script="import os\nbig = os.urandom(100_000)", pull=["big"])
    assert handle.wait(30)["state"] == "completed"
    # Pulled values travel on the data plane (bounded by c.RiverHost.data_task_max_bytes),
    # not as a per-task blob: the 64 KiB blob bound below is not theirs.
    assert len(handle.result()["big"]) == 100_000
    assert client.put_blob(handle.id, "notes.txt", b"hello")["size"] == 5
    assert client.get_blob(handle.id, "notes.txt") == b"hello"
    assert [b["name"] for b in client.blobs(handle.id)] == ["notes.txt"]
    response = cluster.request(
        "PUT", f"/river/api/tasks/{handle.id}/blobs/huge", content=b"x" * 70_000
    )
    assert response.status_code == 413
    assert "at most 64.0 KiB per blob (c.RiverHost.blob_max_bytes)" in response.json()["message"]
    reserved = cluster.request(
        "PUT", f"/river/api/tasks/{handle.id}/blobs/river-pull", content=b"x"
    )
    assert reserved.status_code == 403
    # Another user cannot even see that the task's blobs exist.
    from river_server import db
    from river_server.auth import create_token, ensure_user

    engine = db.make_engine(cluster.db_url)
    sessions = db.make_sessionmaker(engine)
    ensure_user(sessions, "bob", "user")
    bob = {"Authorization": f"token {create_token(sessions, 'bob')}"}
    engine.dispose()
    for path in ("blobs", "blobs/notes.txt"):
        answer = httpx.get(f"{cluster.url}/river/api/tasks/{handle.id}/{path}", headers=bob)
        assert answer.status_code == 404, answer.text
    assert (
        httpx.put(
            f"{cluster.url}/river/api/tasks/{handle.id}/blobs/mine", headers=bob, content=b"x"
        ).status_code
        == 404
    )
    client.close()


# ---- the shipped notebooks -----------------------------------------------------------------


def test_gpu_sweep_notebook(pair_cluster: Cluster) -> None:
    notebook = nbformat.read(REPO / "notebooks" / "gpu_sweep.ipynb", as_version=4)
    execute(notebook, pair_cluster)
    assert not errors_of(notebook), errors_of(notebook)
    assert "training on GPU" in text_of(notebook, "one")
    assert "pulled weights (ndarray), loss (float)" in text_of(notebook, "one")
    assert "weights [1. 2. 3. 4. 5. 6. 7. 8.]" in text_of(notebook, "one-check")
    sweep = text_of(notebook, "sweep")
    assert "array 0-3%2 (4 tasks): 4 completed" in sweep
    assert "pulled result from 4 of 4 tasks" in sweep
    assert "best lr =" in text_of(notebook, "best")
    assert "completed {'loss':" in text_of(notebook, "detach-result")
    tasks = pair_cluster.get("/river/api/tasks")["tasks"]
    sweep_tasks = [t for t in tasks if t["name"] == "sweep"]
    assert len(sweep_tasks) == 4 and all(len(t["gpus"]) == 1 for t in sweep_tasks)
    assert max_overlap(sweep_tasks) <= 2  # the %2 limit, with four GPUs free


def test_dashboard_tour_notebook(solo_cluster: Cluster) -> None:
    notebook = nbformat.read(REPO / "notebooks" / "dashboard_tour.ipynb", as_version=4)
    execute(notebook, solo_cluster)
    assert not errors_of(notebook), errors_of(notebook)
    assert "nodes: ['solo']" in text_of(notebook, "state")
    went = text_of(notebook, "state")
    assert "short task went through: queued ->" in went and went.strip().endswith("completed")
    assert "True" in text_of(notebook, "logs")
    assert "long task: killed" in text_of(notebook, "kill")
    # nbclient saved the widgets' state: the dashboard showed the node and the tasks.
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [str(model["state"].get("value", "")) for model in state.values()]
    assert any("<b>solo</b>" in v and "online" in v for v in values)
    assert any("tour-short" in v and "completed" in v for v in values), [
        v for v in values if "tour" in v
    ]
    dashboard_cell = next(c for c in notebook.cells if c.id == "dashboard")
    assert any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        for o in dashboard_cell.outputs
    )
