"""Metrics and usage history (issue #21): bounded, downsampled, and shown by role.

The storage half runs on a real SQLite database at the code's schema (river_server/
history.py with synthetic timestamps: a day of points in milliseconds); the API half on a
real host and process runner, whose heartbeats fill the history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from river_server import db, history
from river_server.history import COARSE, FINE, HistorySettings, Sample
from tests.cluster import Cluster, as_user, running_cluster, wait_for

SMALL = HistorySettings(
    step=10.0, fine_keep=600.0, coarse_step=120.0, coarse_keep=3600.0, usage_keep=7200.0
)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[db.sessionmaker]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        yield db.make_sessionmaker(engine)
    finally:
        engine.dispose()


def _rows(session: db.Session, node: str, tier: int) -> list[db.NodeHistory]:
    return list(
        session.scalars(
            select(db.NodeHistory)
            .where(db.NodeHistory.node == node, db.NodeHistory.tier == tier)
            .order_by(db.NodeHistory.at)
        )
    )


def test_old_points_are_averaged_into_coarse_buckets_and_rows_stay_bounded(sessions) -> None:
    start = 1_000_000.0 - 1_000_000.0 % SMALL.coarse_step  # a coarse bucket boundary
    # Two hours of a point every 10 s, compacting as the leader would every minute.
    for i in range(720):
        at = start + i * SMALL.step
        cpu = float(i % 12)  # 0..11 within each 120 s bucket: mean 5.5
        point = Sample(at, cpu, 50.0, ((100.0 - cpu, 25.0),))
        with sessions.begin() as session:
            history.record(session, {"n1": point, "n2": point})
            if i % 6 == 5:
                history.compact(session, at, SMALL)
    now = start + 719 * SMALL.step
    with sessions() as session:
        fine, coarse = _rows(session, "n1", FINE), _rows(session, "n1", COARSE)
        # Fine points only within fine_keep; coarse ones only within coarse_keep.
        assert fine and min(r.at for r in fine) >= now - SMALL.fine_keep
        assert len(fine) <= SMALL.max_fine
        assert coarse and min(r.at for r in coarse) >= now - SMALL.coarse_keep
        assert len(coarse) <= SMALL.max_coarse
        # A full coarse bucket averages its 12 samples exactly, GPUs included.
        full = [r for r in coarse if r.samples == 12]
        assert full, [r.samples for r in coarse]
        assert all(r.cpu == 5.5 and r.memory == 50.0 for r in full)
        assert all(r.gpus == [[94.5, 25.0]] for r in full)
        # Buckets sit on coarse_step boundaries, one row each.
        assert all(r.at % SMALL.coarse_step == 0 for r in coarse)
        assert len({r.at for r in coarse}) == len(coarse)
        # The history before compaction would be 1440 rows; both nodes are bounded alike.
        total = session.scalar(select(func.count()).select_from(db.NodeHistory))
        assert total <= 2 * (SMALL.max_fine + SMALL.max_coarse)


def test_the_hard_bound_holds_when_points_come_faster_than_the_step(sessions) -> None:
    """A clock jump or a shrunk setting: the oldest rows beyond the cap go."""
    now = 5_000_000.0
    with sessions.begin() as session:
        for i in range(3 * SMALL.max_fine):
            history.record(session, {"n1": Sample(now - i, 1.0, 1.0, ())})
    with sessions.begin() as session:
        history.compact(session, now, SMALL)
    with sessions() as session:
        kept = _rows(session, "n1", FINE)
        assert len(kept) == SMALL.max_fine
        assert max(r.at for r in kept) == now  # the newest are kept


def test_resampled_answers_are_capped_in_points(sessions) -> None:
    now = 9_000_000.0
    with sessions.begin() as session:
        for i in range(5000):
            history.record(session, {"n1": Sample(now - i * 0.5, 10.0, 20.0, ())})
    with sessions() as session:
        answer = history.node_json(session, "n1", now - 2500, 0.001, now, SMALL)
    assert answer["step"] >= SMALL.step
    assert len(answer["points"]) <= history.MAX_POINTS
    assert all(p["cpu"] == 10.0 and p["memory"] == 20.0 for p in answer["points"])


def test_usage_is_split_at_hour_boundaries(sessions) -> None:
    hour = 3600.0 * 1000
    with sessions.begin() as session:
        history.charge_hours(session, "alice", 2.0, 1.0, hour - 600, hour + 1200)
    with sessions() as session:
        answer = history.usage_json(session, hour - 3600, 3600, hour + 3600, None)
    cells = {p["at"]: (p["core_seconds"], p["gpu_seconds"]) for p in answer["total"]}
    assert cells == {hour - 3600: (1200.0, 600.0), hour: (2400.0, 1200.0)}


# ---- the API, on a real cluster --------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path_factory.mktemp("history"),
        ("n1", "--cpus", "0"),
        extra_host_args=["--RiverHost.history_step=0.5"],
    ) as started:
        yield started


def test_viewers_read_a_nodes_history_filled_by_heartbeats(cluster: Cluster) -> None:
    viewer = cluster.make_users("watcher", role="viewer")["watcher"]

    def points() -> list[dict]:
        answer = cluster.ok("GET", "/river/api/nodes/n1/history?step=0.5", **as_user(viewer))
        return answer["history"]["points"] if len(answer["history"]["points"]) >= 3 else []

    found = wait_for(points, 30, what="three history points of n1")
    assert all(p["cpu"] is not None and 0 <= p["memory"] <= 100 for p in found)
    assert [p["at"] for p in found] == sorted(p["at"] for p in found)
    missing = cluster.request("GET", "/river/api/nodes/nope/history")
    assert missing.status_code == 404 and "no node named 'nope'" in missing.json()["message"]
    bad = cluster.request("GET", "/river/api/nodes/n1/history?step=0")
    assert bad.status_code == 400 and "'step'" in bad.json()["message"]


def test_users_see_their_own_usage_and_the_total_operators_everyones(cluster: Cluster) -> None:
    tokens = cluster.make_users("alice", "bob")
    ops = cluster.make_users("olga", role="operator")["olga"]
    for token in tokens.values():
        response = cluster.request(
            "POST", "/river/api/tasks", json={"command": ["sleep", "1"]}, **as_user(token)
        )
        assert response.status_code == 201, response.text
        cluster.wait_task(response.json()["task"]["id"], "completed")

    def usage(token: str) -> dict:
        return cluster.ok("GET", "/river/api/usage/history", **as_user(token))["usage"]

    seen = usage(tokens["alice"])
    assert [u["user"] for u in seen["users"]] == ["alice"]
    mine = sum(p["core_seconds"] for p in seen["users"][0]["points"])
    total = sum(p["core_seconds"] for p in seen["total"])
    assert mine >= 0.9 and total >= 2 * 0.9 and total > mine
    everyone = {u["user"] for u in usage(ops)["users"]}
    assert {"alice", "bob"} <= everyone
    assert seen["step"] == 3600
