"""Fair share (issue #20): decayed usage orders the queue between users (pure parts)."""

from __future__ import annotations

import pytest

from river_runner.spec import ResourceRequest
from river_server.fairshare import Usage, charges, group_charges, order, table
from river_server.quotas import Limit, QuotaPolicy, Want, admit
from river_server.scheduler import NodeView, QueuedTask, Scheduler

DAY = 86400.0
HALF_LIFE = 7 * DAY


def one_core_node() -> list[NodeView]:
    return [NodeView(name="n1", cpus=[0], memory=0, gpus=[], numa=[])]


def test_a_light_user_goes_before_a_heavy_one() -> None:
    heavy_first = QueuedTask(1, ResourceRequest(cores=1), 100.0, "heavy")
    light_later = QueuedTask(2, ResourceRequest(cores=1), 200.0, "light")
    usage = {"heavy": Usage(core_seconds=10_000, at=0.0), "light": Usage(core_seconds=5, at=0.0)}
    charged = charges(usage, 300.0, HALF_LIFE, 10.0)
    plan = Scheduler().plan(
        order([heavy_first, light_later], charged), one_core_node(), [], now=300.0
    )
    assert list(plan.placements) == [2]  # the single core goes to the light user
    assert 1 in plan.waiting
    # Without fair share the older task (the heavy user's) would have it.
    assert list(
        Scheduler().plan([heavy_first, light_later], one_core_node(), [], 300.0).placements
    ) == [1]


def test_fifo_within_one_user_and_unknown_users_first() -> None:
    tasks = [
        QueuedTask(i, ResourceRequest(cores=1), float(i), owner)
        for i, owner in enumerate(["a", "b", "a", "new", "b", "a"])
    ]
    charged = {"a": 50.0, "b": 10.0}
    assert [t.id for t in order(tasks, charged)] == [3, 1, 4, 0, 2, 5]


def test_gpu_seconds_weigh_in() -> None:
    usage = {"cpu": Usage(core_seconds=100, at=0.0), "gpu": Usage(gpu_seconds=20, at=0.0)}
    charged = charges(usage, 0.0, HALF_LIFE, gpu_weight=10.0)
    assert charged == {"cpu": 100.0, "gpu": 200.0}


def test_usage_halves_after_one_half_life() -> None:
    clock = 1_000.0  # an injected clock: the module never reads the time itself
    usage = Usage(core_seconds=800.0, gpu_seconds=40.0, at=clock)
    later = usage.decayed(clock + HALF_LIFE, HALF_LIFE)
    assert later.core_seconds == pytest.approx(400.0)
    assert later.gpu_seconds == pytest.approx(20.0)
    assert usage.decayed(clock + 2 * HALF_LIFE, HALF_LIFE).core_seconds == pytest.approx(200.0)
    # Adding a run decays what was there first, then adds the new core-seconds.
    grown = usage.plus(cores=4, gpus=0, seconds=10, now=clock + HALF_LIFE, half_life=HALF_LIFE)
    assert grown.core_seconds == pytest.approx(440.0)
    assert grown.at == clock + HALF_LIFE


def test_decay_lets_yesterdays_heavy_user_catch_up() -> None:
    usage = {
        "old": Usage(core_seconds=1000, at=0.0),
        "recent": Usage(core_seconds=300, at=3 * HALF_LIFE),
    }
    charged = charges(usage, 3 * HALF_LIFE, HALF_LIFE, 10.0)
    assert charged["old"] == pytest.approx(125.0)
    tasks = [
        QueuedTask(1, ResourceRequest(), 0.0, "recent"),
        QueuedTask(2, ResourceRequest(), 1.0, "old"),
    ]
    assert [t.id for t in order(tasks, charged)] == [2, 1]


def test_quotas_still_cap_a_light_user() -> None:
    # The dispatcher applies quotas first (river_server/quotas.py), then fair-share order:
    # being light never lets a user past its quota.
    rules = QuotaPolicy(users={"light": Limit("user", "light", max_cores=1)})
    wants = [Want(1, "heavy", 1, 0), Want(2, "light", 1, 0), Want(3, "light", 1, 0)]
    admitted, waiting = admit(wants, {}, rules)
    assert admitted == [1, 2] and "user light may hold at most 1 core" in waiting[3]
    tasks = {
        1: QueuedTask(1, ResourceRequest(), 0.0, "heavy"),
        2: QueuedTask(2, ResourceRequest(), 1.0, "light"),
    }
    ordered = order([tasks[i] for i in admitted], {"heavy": 1e6, "light": 0.0})
    assert [t.id for t in ordered] == [2, 1]


def test_share_table_ranks_lightest_first() -> None:
    rows = table({"a": Usage(300, 0, 0.0), "b": Usage(100, 0, 0.0)}, 0.0, HALF_LIFE, 10.0)
    assert [(r.user, r.priority) for r in rows] == [("b", 1), ("a", 2)]
    assert rows[0].share == pytest.approx(0.25)


def test_a_light_group_goes_before_a_heavy_groups_light_member() -> None:
    # ann has used little, but her group (with alice) has used much; bob's group little.
    tasks = [
        QueuedTask(i, ResourceRequest(cores=1), float(i), owner)
        for i, owner in enumerate(["alice", "ann", "bob", "solo"])
    ]
    charged = {"alice": 900.0, "ann": 10.0, "bob": 50.0, "solo": 30.0}
    groups = group_charges(charged, {"vision": ["alice", "ann"], "nlp": ["bob"]})
    assert groups == {"alice": 910.0, "ann": 910.0, "bob": 50.0}
    # solo (no group: a group of one, 30) < bob's group (50) < vision (910): ann before alice.
    assert [t.owner for t in order(tasks, charged, group=groups)] == [
        "solo",
        "bob",
        "ann",
        "alice",
    ]
    # Per user alone, ann (10) would have gone first.
    assert order(tasks, charged)[0].owner == "ann"


def test_the_heaviest_of_a_users_groups_counts() -> None:
    charged = {"eve": 5.0, "heavy": 500.0, "light": 1.0}
    groups = group_charges(charged, {"big": ["eve", "heavy"], "small": ["eve", "light"]})
    assert groups["eve"] == 505.0  # joining a light group does not escape a heavy one
    assert groups["light"] == 6.0


def test_group_charges_are_read_from_the_groups_table() -> None:
    from river_server import db, usage

    engine = db.make_engine("sqlite://")
    try:
        sessions = db.make_sessionmaker(engine)
        with sessions.begin() as session:
            users = {n: db.User(name=n, password_hash="x") for n in ("alice", "ann", "bob")}
            session.add_all(users.values())
            vision = db.Group(name="vision")
            session.add(vision)
            session.flush()
            session.add_all(
                db.GroupMember(group_id=vision.id, user_id=users[n].id) for n in ("alice", "ann")
            )
        with sessions() as session:
            got = usage.group_charges(session, {"alice": 900.0, "ann": 10.0, "bob": 50.0})
        assert got == {"alice": 910.0, "ann": 910.0}  # bob is in no group: his own charge
    finally:
        engine.dispose()
