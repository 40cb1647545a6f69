"""The overlay hub's bookkeeping (river_server/overlay.py) with the kernel links faked:
allocations that survive restarts, reservations, and tasks presenting their token.
The real links are exercised in tests/netns/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from river_runner.overlay_spec import OverlaySpecError
from river_runner.spec import SpecError
from river_server.overlay import IpReservation, OverlayError, OverlaySettings
from river_server.services import HostConfig, River
from river_server.tasks import TaskError

JOIN = "join-token"


class FakeLinks:
    def __init__(self) -> None:
        self.ensured: list[tuple[int, str]] = []
        self.removed: list[int] = []

    def ensure(self, assignment: Any) -> None:
        self.ensured.append((assignment.index, assignment.runner_underlay_ip))

    def remove(self, index: int) -> list[str]:
        self.removed.append(index)
        return []


def make_river(data_dir: Path, host: dict[str, Any] | None = None, **overlay: Any) -> River:
    settings = OverlaySettings(**{"enabled": True, "underlay_ip": "192.168.251.1", **overlay})
    river = River(
        HostConfig(
            data_dir=data_dir,
            db_url=f"sqlite:///{data_dir / 'river.db'}",
            runner_token=JOIN,
            overlay=settings,
            **(host or {}),
        )
    )
    river.overlay.links = FakeLinks()
    return river


@pytest.fixture(autouse=True)
def event_loop_for_wakeups() -> Iterator[None]:
    """Registration and submission wake the dispatcher (asyncio.ensure_future): give them a
    loop of their own, whatever earlier tests did to the thread's loop."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def river(tmp_path: Path) -> Iterator[River]:
    r = make_river(tmp_path)
    yield r
    r.engine.dispose()


def register(river: River, name: str, underlay: str | None, secret: str = JOIN) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "url": f"http://{name}:8001",
        "inbound_secret": "s",
        "cpus": [0, 1],
    }
    if underlay:
        body["overlay_underlay_ip"] = underlay
    return river.nodes.register(secret, body)


def test_registration_gets_stable_indexes(tmp_path: Path) -> None:
    river = make_river(tmp_path)
    a = register(river, "a", "192.168.251.2")["overlay"]
    b = register(river, "b", "192.168.251.3")["overlay"]
    assert (a["index"], a["vxlan_id"], a["subnet"]) == (1, 101, "10.128.64.0/18")
    assert (b["index"], b["subnet"], b["host_ip"]) == (2, "10.128.128.0/18", "10.128.128.1")
    assert b["host_underlay_ip"] == "192.168.251.1"
    assert river.overlay.links.ensured == [(1, "192.168.251.2"), (2, "192.168.251.3")]
    river.engine.dispose()

    # A new host process on the same DB: same indexes, links converged at start for both.
    again = make_river(tmp_path)
    allocations = again.overlay.overview()["allocations"]
    assert [(x["node"], x["index"], x["underlay_ip"]) for x in allocations] == [
        ("a", 1, "192.168.251.2"),
        ("b", 2, "192.168.251.3"),
    ]
    again.overlay._converge_all([again.overlay.assignment_for(x) for x in _rows(again)])
    assert sorted(again.overlay.links.ensured) == [(1, "192.168.251.2"), (2, "192.168.251.3")]
    # b comes back from another address: same index, its tunnel is pointed there.
    reply = again.overlay.on_register("b", {"overlay_underlay_ip": "192.168.251.9"})
    assert reply["overlay"]["index"] == 2
    assert reply["overlay"]["runner_underlay_ip"] == "192.168.251.9"
    assert again.overlay.links.ensured[-1] == (2, "192.168.251.9")
    again.engine.dispose()


def _rows(river: River) -> list[Any]:
    from sqlalchemy import select

    from river_server.overlay import OverlayAllocation

    with river.sessions() as session:
        return list(session.scalars(select(OverlayAllocation)))


def test_runner_without_underlay_address_is_told_why(river: River) -> None:
    reply = register(river, "a", None)
    assert reply["overlay"] is None
    assert "--overlay-ip" in reply["overlay_error"]
    bad = river.overlay.on_register("a", {"overlay_underlay_ip": "not-an-ip"})
    assert bad["overlay"] is None and "IPv4" in bad["overlay_error"]


def test_overlay_off_adds_nothing(tmp_path: Path) -> None:
    river = make_river(tmp_path, enabled=False)
    reply = register(river, "a", "192.168.251.2")
    assert "overlay" not in reply
    with pytest.raises(OverlayError, match="overlay_enabled"):
        river.overlay.reserve("admin", node="a")
    with pytest.raises(SpecError, match="overlay network is off"):
        river.tasks.submit("admin", {"command": ["true"], "ip_token": "rip_x"}, role="admin")
    river.engine.dispose()


def test_settings_are_validated() -> None:
    with pytest.raises(OverlaySpecError, match="overlay_underlay_ip is required"):
        OverlaySettings(enabled=True).validate()
    with pytest.raises(OverlaySpecError, match="must be 32"):
        OverlaySettings(subnet="10.128.0.0/12/6/6").validate()
    with pytest.raises(OverlaySpecError, match="MTU"):
        OverlaySettings(mtu=20).validate()


def test_full_overlay_refuses_with_a_reason(tmp_path: Path) -> None:
    river = make_river(tmp_path, subnet="10.128.0.0/28/1/3")  # room for one runner
    assert register(river, "a", "192.168.251.2")["overlay"]["index"] == 1
    reply = register(river, "b", "192.168.251.3")
    assert reply["overlay"] is None and "overlay is full" in reply["overlay_error"]
    river.engine.dispose()


def test_release_frees_the_index_and_links(river: River) -> None:
    register(river, "a", "192.168.251.2")
    register(river, "b", "192.168.251.3")
    with pytest.raises(OverlayError, match="online"):
        river.overlay.release("a")
    river.overlay.reserve("alice", node="a")
    released = river.overlay.release("a", force=True)
    assert released["index"] == 1
    assert river.overlay.links.removed == [1]
    assert river.overlay.reservations("alice") == []
    with pytest.raises(OverlayError, match="no overlay allocation"):
        river.overlay.release("a", force=True)
    # The freed index goes to the next runner that joins.
    assert register(river, "c", "192.168.251.4")["overlay"]["index"] == 1


def test_inactive_runners_are_released_after_the_configured_time(tmp_path: Path) -> None:
    river = make_river(tmp_path, release_after=60.0)
    register(river, "a", "192.168.251.2")
    register(river, "b", "192.168.251.3")
    river.nodes._connections.pop("a")  # a went offline
    now = max(r.registered_at for r in _rows(river))
    assert river.overlay.release_inactive(now + 30) == []
    assert river.overlay.release_inactive(now + 3600) == ["a"]  # b is online: kept
    assert [r.node for r in _rows(river)] == ["b"]
    assert river.overlay.links.removed == [1]
    river.engine.dispose()


def test_reservations_come_from_the_top_and_do_not_collide(river: River) -> None:
    register(river, "a", "192.168.251.2")
    first = river.overlay.reserve("alice", node="a", ttl=60)
    second = river.overlay.reserve("alice", ttl=60)  # node picked: the only online one
    assert first["ip"] == "10.128.127.254" and second["ip"] == "10.128.127.253"
    assert first["token"].startswith("rip_") and first["state"] == "reserved"
    chosen = river.overlay.reserve("bob", node="a", ip="10.128.64.10")
    assert chosen["ip"] == "10.128.64.10"
    with pytest.raises(OverlayError, match="already reserved"):
        river.overlay.reserve("bob", node="a", ip="10.128.64.10")
    with pytest.raises(OverlayError, match="not a workload address"):
        river.overlay.reserve("bob", node="a", ip="10.128.64.1")
    with pytest.raises(OverlayError, match="ttl"):
        river.overlay.reserve("bob", node="a", ttl=-1)
    with pytest.raises(OverlayError, match="has not joined"):
        river.overlay.reserve("bob", node="zz")
    # Tokens are stored only as digests.
    with river.sessions() as session:
        stored = {r.token_hash for r in session.query(IpReservation)}
    assert first["token"] not in stored and len(next(iter(stored))) == 128
    assert [r["ip"] for r in river.overlay.reservations("alice")] == [
        "10.128.127.254",
        "10.128.127.253",
    ]
    assert len(river.overlay.reservations("alice", everyone=True)) == 3
    # Release by id, or by token; not someone else's.
    with pytest.raises(OverlayError, match="no IP reservation"):
        river.overlay.release_reservation(first["id"], "bob", "user")
    river.overlay.release_reservation(first["id"], "alice", "user")
    river.overlay.release_reservation(second["token"], "alice", "user")
    assert river.overlay.reservations("alice") == []
    # A released address is free again.
    assert river.overlay.reserve("alice", node="a")["ip"] == "10.128.127.254"


def test_task_presenting_a_token_gets_the_address(river: River) -> None:
    register(river, "a", "192.168.251.2")
    register(river, "b", "192.168.251.3")
    held = river.overlay.reserve("alice", node="b", ttl=60)
    task = river.tasks.submit("alice", {"command": ["true"], "ip_token": held["token"]})
    assert task.spec["overlay_ip"] == held["ip"]
    assert task.spec["env"]["RIVER_OVERLAY_IP"] == held["ip"]
    assert task.request["target"] == "b"  # pinned to the reservation's runner
    assert river.dispatcher.launch_body(task)["overlay_ip"] == held["ip"]
    assert river.tasks.to_json(task)["overlay_ip"] == held["ip"]
    (listed,) = river.overlay.reservations("alice")
    assert listed["state"] == "in_use" and listed["task_id"] == str(task.id)
    # The address stays taken while the task lives, and cannot be released under it.
    assert river.overlay.reserve("alice", node="b")["ip"] != held["ip"]
    with pytest.raises(OverlayError, match="in use by task"):
        river.overlay.release_reservation(held["id"], "alice", "user")
    # A token works once.
    with pytest.raises(SpecError, match="already used by task"):
        river.tasks.submit("alice", {"command": ["true"], "ip_token": held["token"]})


def test_bad_tokens_are_refused_clearly(river: River) -> None:
    register(river, "a", "192.168.251.2")
    register(river, "b", "192.168.251.3")
    held = river.overlay.reserve("alice", node="a", ttl=60)
    with pytest.raises(SpecError, match="unknown IP reservation token"):
        river.tasks.submit("alice", {"command": ["true"], "ip_token": "rip_nope"})
    with pytest.raises(TaskError, match="belongs to alice"):
        river.tasks.submit("bob", {"command": ["true"], "ip_token": held["token"]})
    with pytest.raises(SpecError, match="is on node a, but the task targets b"):
        river.tasks.submit("alice", {"command": ["true"], "ip_token": held["token"], "target": "b"})
    with river.sessions.begin() as session:
        row = session.get(IpReservation, int(held["id"]))
        row.expires_at = row.created_at - 5
    with pytest.raises(SpecError) as info:
        river.tasks.submit("alice", {"command": ["true"], "ip_token": held["token"]})
    message = str(info.value)
    assert "expired" in message and "10.128.127.254" in message and "%river ip reserve" in message
    # Nothing was stored by the refused submissions, and an expired address is free again.
    with river.sessions() as session:
        from river_server import db

        assert session.query(db.Task).count() == 0
    assert river.overlay.reserve("alice", node="a")["ip"] == "10.128.127.254"


def test_one_user_holds_at_most_the_reservation_bound(tmp_path: Path) -> None:
    """A hostile user reserving addresses in a loop is stopped at the bound (429 naming
    it), while others still reserve; releasing one frees a slot."""
    river = make_river(tmp_path, host={"max_reservations_per_user": 3})
    try:
        register(river, "a", "192.168.251.2")
        held = [river.overlay.reserve("mallory", node="a", ttl=60) for _ in range(3)]
        with pytest.raises(OverlayError, match="max_reservations_per_user = 3") as refused:
            river.overlay.reserve("mallory", node="a", ttl=60)
        assert refused.value.status == 429
        assert river.overlay.reserve("alice", node="a", ttl=60)["state"] == "reserved"
        river.overlay.release_reservation(held[0]["id"], "mallory", "user")
        assert river.overlay.reserve("mallory", node="a", ttl=60)["state"] == "reserved"
    finally:
        river.engine.dispose()


def test_cleanup_forgets_old_reservations(river: River) -> None:
    register(river, "a", "192.168.251.2")
    held = river.overlay.reserve("alice", node="a", ttl=1)
    assert river.overlay.cleanup_reservations() == 0
    expires = float(held["expires_at"])
    assert river.overlay.cleanup_reservations(now=expires + 10) == 0  # kept: explainable
    assert river.overlay.cleanup_reservations(now=expires + 7200) == 1
    assert river.overlay.reservations("alice") == []
