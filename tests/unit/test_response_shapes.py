"""The overlay's answers (overview, allocations, reservations) match their response
models. They need the overlay on, which the live-cluster check
(tests/docker/test_response_models.py) cannot turn on without network namespaces; here the
real overlay service runs on a real SQLite database with only the kernel links faked, as in
tests/unit/test_overlay_host.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from river_runner.wire import responses
from river_server.services import River
from tests.unit.test_overlay_host import event_loop_for_wakeups, make_river, register

__all__ = ["event_loop_for_wakeups"]  # the loop fixture, used by every test here


@pytest.fixture
def river(tmp_path: Path) -> Iterator[River]:
    r = make_river(tmp_path)
    yield r
    r.engine.dispose()


def test_overlay_answers_match_their_models(river: River) -> None:
    register(river, "a", "192.168.251.2")
    made = river.overlay.reserve("alice", node="a", ttl=60)
    responses.Reservation.model_validate(made)
    assert made["token"].startswith("rip_")  # the field only this answer carries
    task = river.tasks.submit("alice", {"command": ["true"], "ip_token": made["token"]})
    responses.Task.model_validate(river.tasks.to_json(task))
    river.overlay.reserve("alice", node="a", ttl=60)
    listed = river.overlay.reservations("alice")
    assert {r["state"] for r in listed} == {"in_use", "reserved"}
    for reservation in listed:
        responses.Reservation.model_validate(reservation)
    overview = river.overlay.overview()
    assert overview["allocations"], "an allocation to check"
    responses.Overlay.model_validate(overview)
    released = river.overlay.release("a", force=True)
    responses.OverlayAllocation.model_validate(released)
