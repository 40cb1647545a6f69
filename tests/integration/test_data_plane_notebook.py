"""The data plane seen from a notebook (issue #17): a transfer over a second shows an
ipywidgets progress bar in the cell, and interrupting the kernel during a push cancels it
with nothing left on the host. Real kernels (nbclient, jupyter_client), real host+runner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from tests.cluster import Cluster, running_cluster, wait_for
from tests.integration.test_notebook_experience import execute, notebook_of, text_of

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("data-nb"))
    with running_cluster(root, ("n1", "--cpus", "0")) as made:
        yield made


def _data(cluster: Cluster, part: str) -> list[Path]:
    return [p for p in (cluster.root / "host" / "data" / part).rglob("*") if p.is_file()]


def test_a_push_longer_than_the_bar_wait_shows_a_widget_progress_bar(cluster: Cluster) -> None:
    notebook = notebook_of(
        ("connect", "%load_ext river_magics\n%river connect"),
        # A 512 MiB push may now take under the second after which a bar appears: the
        # notebook shortens that wait, so the bar is shown whatever this machine's speed.
        (
            "make",
            "import numpy as np\nimport river_magics.progress as progress\n"
            "progress.SHOW_AFTER = 0.05\nx = np.ones(2**26)  # 512 MiB",
        ),
        ("push", "%%river submit --push x --pull s\ns = float(x.sum())"),
        ("show", "print('sum', s)"),
    )
    execute(notebook, cluster)
    push = next(c for c in notebook.cells if c.get("id") == "push")
    widgets = [o for o in push.outputs if WIDGET in o.get("data", {})]
    assert widgets, push.outputs
    assert "\r" not in text_of(notebook, "push")  # no text bar besides the widget
    assert f"sum {float(2**26)}" in text_of(notebook, "show"), text_of(notebook, "show")


def _outputs_until_idle(kernel: Any, msg_id: str, deadline: float) -> list[dict[str, Any]]:
    found = []
    while time.monotonic() < deadline:
        message = kernel.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        found.append(message)
        content = message["content"]
        if message["msg_type"] == "status" and content["execution_state"] == "idle":
            return found
    raise AssertionError(f"the cell did not finish: {found}")


def test_interrupting_a_push_cancels_it_and_leaves_nothing_on_the_host(cluster: Cluster) -> None:
    objects_before = _data(cluster, "objects")
    manager, kernel = start_new_kernel(
        kernel_name="python3",
        env={**os.environ, "RIVER_URL": cluster.url, "RIVER_TOKEN": cluster.token},
    )
    try:
        kernel.execute_interactive("%load_ext river_magics\n%river connect", timeout=30)
        kernel.execute_interactive("import numpy as np\nx = np.full(2**27, 3.0)", timeout=60)
        msg_id = kernel.execute("%%river submit --push x --name cut\ny = x.sum()")
        # The bar appears once the upload has run a second: then the host holds a partial
        # upload in its temp directory.
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not any(WIDGET in m["content"].get("data", {}) for m in seen):
            message = kernel.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if message["parent_header"].get("msg_id") == msg_id:
                seen.append(message)
        assert _data(cluster, "tmp"), "no upload in progress on the host"
        manager.interrupt_kernel()
        seen += _outputs_until_idle(kernel, msg_id, time.monotonic() + 30)
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
    text = "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
    assert "Interrupted: the push was cancelled" in text, text
    assert not [m for m in seen if m["msg_type"] == "error"], "a traceback instead of a note"
    wait_for(lambda: not _data(cluster, "tmp"), 10, what="the partial upload to be dropped")
    assert _data(cluster, "objects") == objects_before
    names = [t["name"] for t in cluster.get("/river/api/tasks?all=1")["tasks"]]
    assert "cut" not in names, names
