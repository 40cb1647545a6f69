"""The dashboard shows a multi-node job as one row with its members (issue #16)."""

from __future__ import annotations

from river_magics.client import Client
from river_widgets import Dashboard


def member(task_id: str, rank: int, state: str, node: str) -> dict:
    job = {"id": "900", "rank": rank, "size": 3, "network": "host"}
    return {"id": task_id, "name": "train", "state": state, "node": node, "job": job}


def test_a_job_is_one_row_with_its_members() -> None:
    dashboard = Dashboard(Client("http://127.0.0.1:9", token="unused"), start=False)
    dashboard._apply_tasks(
        [
            member("11", 0, "running", "r1"),
            member("12", 1, "running", "r2"),
            member("13", 2, "assigning", "r3"),
            {"id": "20", "name": "single", "state": "running", "node": "r1"},
        ]
    )
    rows = dashboard.get_state()["rows"]
    assert sorted(rows) == ["11", "20"]  # the job's row stands on rank 0's id
    label = rows["11"]["label"]
    assert "job 900" in label and "3 nodes, host" in label and "running" in label
    for rank, (task_id, node) in enumerate((("11", "r1"), ("12", "r2"), ("13", "r3"))):
        assert f"rank {rank} <code>{task_id}</code>" in label and f"on {node}" in label
    assert not rows["11"]["kill_disabled"]
    dashboard._apply_tasks([member(t, r, "killed", "r1") for r, t in enumerate(("11", "12", "13"))])
    row = dashboard.get_state()["rows"]["11"]
    assert "killed" in row["label"] and row["kill_disabled"]
