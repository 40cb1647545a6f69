"""The runner's side of the overlay without touching links: what it sends, how it reacts to
the host's reply, and its command-line checks (the links themselves: tests/netns/)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from river_runner.cli import runner_command
from river_runner.overlay import OverlayMember
from river_runner.overlay_spec import OverlayAssignment, OverlaySpec, OverlaySpecError


def run(coroutine: Any) -> Any:
    """Run on a private loop (asyncio.run would leave the thread without one)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


class FakeLinks:
    def __init__(self, fail: str | None = None) -> None:
        self.applied: list[OverlayAssignment] = []
        self.fail = fail

    def apply(self, assignment: OverlayAssignment) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError(self.fail)
        self.applied.append(assignment)
        return {}


def assignment_json() -> dict[str, Any]:
    return (
        OverlaySpec.parse(None)
        .assignment(3, host_underlay_ip="10.0.0.1", runner_underlay_ip="10.0.0.5")
        .to_json()
    )


def test_member_sends_its_underlay_address_only_when_configured(tmp_path: Path) -> None:
    assert OverlayMember(None, tmp_path).registration_fields() == {}
    member = OverlayMember("10.0.0.5", tmp_path)
    assert member.registration_fields() == {"overlay_underlay_ip": "10.0.0.5"}
    with pytest.raises(OverlaySpecError, match="--overlay-ip"):
        OverlayMember("runner-7", tmp_path)


def test_member_applies_the_assignment_on_every_registration(tmp_path: Path) -> None:
    links = FakeLinks()
    member = OverlayMember("10.0.0.5", tmp_path, links=links)  # type: ignore[arg-type]
    reply = {"overlay": assignment_json()}
    run(member.on_registered(reply))
    run(member.on_registered(reply))  # again after a host restart: repairs, no harm
    assert [a.index for a in links.applied] == [3, 3]
    assert member.assignment is not None and member.assignment.vxlan_id == 103
    assert member.error is None


def test_member_records_why_it_is_not_on_the_overlay(tmp_path: Path) -> None:
    links = FakeLinks()
    member = OverlayMember("10.0.0.5", tmp_path, links=links)  # type: ignore[arg-type]
    run(member.on_registered({"overlay": None, "overlay_error": "the overlay is full"}))
    assert member.error == "the overlay is full" and not links.applied
    run(member.on_registered({}))
    assert "no overlay network" in (member.error or "")
    run(member.on_registered({"overlay": {**assignment_json(), "host_ip": "1.2.3.4"}}))
    assert "not in 10.128.192.0/18" in (member.error or "") and not links.applied
    failing = OverlayMember("10.0.0.5", tmp_path, links=FakeLinks("Operation not permitted"))  # type: ignore[arg-type]
    run(failing.on_registered({"overlay": assignment_json()}))
    assert "Operation not permitted" in (failing.error or "")
    # A runner without --overlay-ip ignores the overlay altogether.
    off = OverlayMember(None, tmp_path, links=links)  # type: ignore[arg-type]
    run(off.on_registered({"overlay": assignment_json()}))
    assert not links.applied and off.error is None


def test_cli_refuses_a_bad_overlay_address(capsys: pytest.CaptureFixture[str]) -> None:
    code = runner_command(["--host", "http://h:1", "--token", "t", "--overlay-ip", "eth0"])
    assert code == 2
    assert "--overlay-ip must be an IPv4 address" in capsys.readouterr().err
