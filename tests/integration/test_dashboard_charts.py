"""`%river dashboard` draws the host's history (issue #21): in a real kernel, after tasks
ran, the node sparklines, the cluster utilisation chart and the usage chart are bqplot
Lines whose data hold points; a plain user's usage chart has only their own series and
the cluster's total (the host filters; the dashboard draws what it is given).

The kernel is a real one run by nbclient, and the chart data are read twice: from the
dashboard's `get_state()` inside the kernel, and from the widget models nbclient saved
(what a frontend receives), decoding bqplot's binary `y` buffers."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests.cluster import Cluster, as_user, running_cluster
from tests.integration.test_notebook_experience import errors_of, notebook_of, text_of


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path_factory.mktemp("dashboard-charts"),
        ("n1", "--cpus", "0"),
        extra_host_args=["--RiverHost.history_step=0.5"],
    ) as started:
        yield started


def _run_task(cluster: Cluster, token: str | None = None) -> None:
    auth = as_user(token) if token else {}
    response = cluster.request("POST", "/river/api/tasks", json={"command": ["sleep", "1"]}, **auth)
    assert response.status_code == 201, response.text
    cluster.wait_task(response.json()["task"]["id"], "completed")


def _execute(notebook: nbformat.NotebookNode, cluster: Cluster, token: str) -> None:
    saved = {k: os.environ.get(k) for k in ("RIVER_URL", "RIVER_TOKEN")}
    os.environ.update(RIVER_URL=cluster.url, RIVER_TOKEN=token)
    try:
        NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=True).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# The cell waits (bounded) for the charts' first refresh with two points per line, then
# prints what they hold.
WAIT_AND_REPORT = """
import json, time
deadline = time.monotonic() + 60
def ready(state):
    charts = state["charts"]
    lines = [charts["cluster"], charts["usage"], *charts["nodes"].values()]
    return charts["nodes"] and all(c["points"] and min(c["points"]) >= 2 for c in lines)
while not ready(dash.get_state()) and time.monotonic() < deadline:
    time.sleep(0.2)
dash.refresh()  # also sends every chart's whole state to the frontend (and to nbclient)
print(json.dumps(dash.get_state()["charts"]))
dash.stop()
"""


def _lines_models(notebook: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The bqplot Lines models nbclient saved, with `y` decoded from its binary buffer."""
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    found = []
    for model in state.values():
        if model.get("model_name") != "LinesModel":
            continue
        values = dict(model["state"])
        for buffer in model.get("buffers", []):
            if buffer["path"] == ["y", "value"]:
                meta = values["y"]
                raw = base64.b64decode(buffer["data"])
                values["y"] = np.frombuffer(raw, dtype=meta["dtype"]).reshape(meta["shape"])
        found.append(values)
    return found


def test_a_plain_users_dashboard_charts_hold_points_and_only_their_own_usage(
    cluster: Cluster,
) -> None:
    alice = cluster.make_users("alice")["alice"]
    _run_task(cluster)  # the admin's run: in the total, not in alice's series
    _run_task(cluster, alice)
    notebook = notebook_of(
        ("connect", "%load_ext river_magics\n%river connect"),
        ("dashboard", "dash = %river dashboard --refresh 0.5\ndash"),
        ("report", WAIT_AND_REPORT),
    )
    _execute(notebook, cluster, alice)
    assert not errors_of(notebook), errors_of(notebook)

    charts = json.loads(text_of(notebook, "report").strip().splitlines()[-1])
    assert charts["nodes"]["n1"]["labels"] == ["CPU %", "Mem %"]
    assert min(charts["nodes"]["n1"]["points"]) >= 2, charts
    assert min(charts["cluster"]["points"]) >= 2, charts
    assert charts["usage"]["labels"] == ["cluster total", "alice"], charts
    assert min(charts["usage"]["points"]) >= 2, charts

    # What the frontend was sent: Lines models whose y hold the points.
    lines = _lines_models(notebook)
    by_labels = {tuple(line["labels"]): line for line in lines}
    usage = by_labels[("cluster total", "alice")]
    assert not any("admin" in line["labels"] for line in lines)
    total, mine = usage["y"]
    assert len(total) >= 2 and total[0] > mine[0] > 0  # the total includes the admin's run
    percent = [line for line in lines if line["labels"] == ["CPU %", "Mem %"]]
    assert len(percent) == 2  # the node's sparkline and the cluster chart
    for line in percent:
        assert line["y"].shape[0] == 2 and line["y"].shape[1] >= 2
        assert np.all((line["y"] >= 0) & (line["y"] <= 100))


def test_an_operators_usage_chart_has_every_users_series(cluster: Cluster) -> None:
    """In-process (the same widgets): above user, the host sends every user's series."""
    from river_magics import Client
    from river_widgets import Dashboard

    olga = cluster.make_users("olga", role="operator")["olga"]
    bob = cluster.make_users("bob")["bob"]
    _run_task(cluster)
    _run_task(cluster, bob)
    with Client(cluster.url, token=olga) as client:
        dashboard = Dashboard(client, refresh=60, start=False)
        try:
            dashboard.refresh()
            usage = dashboard.get_state()["charts"]["usage"]
        finally:
            dashboard.close()
    assert usage["labels"][0] == "cluster total"
    assert {"admin", "bob"} <= set(usage["labels"][1:]), usage
    assert min(usage["points"]) >= 2, usage
