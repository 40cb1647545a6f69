"""The runner's side of the overlay without touching links: what it sends, how it reacts to
the host's reply, and its command-line checks (the links themselves: tests/netns/)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
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
    bridge = "river-br"

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
    assert member.registration_fields() == {
        "overlay_underlay_ip": "10.0.0.5",
        "overlay_direct": True,  # direct runner-to-runner paths unless --no-overlay-direct
    }
    lonely = OverlayMember("10.0.0.6", tmp_path, direct=False)
    assert lonely.registration_fields()["overlay_direct"] is False
    with pytest.raises(OverlaySpecError, match="--overlay-ip"):
        OverlayMember("runner-7", tmp_path)


def test_member_applies_the_assignment_on_every_registration(tmp_path: Path) -> None:
    links = FakeLinks()
    backend = SimpleNamespace(overlay_bridge=None)
    member = OverlayMember("10.0.0.5", tmp_path, links=links, backend=backend)  # type: ignore[arg-type]
    reply = {"overlay": assignment_json()}
    run(member.on_registered(reply))
    run(member.on_registered(reply))  # again after a host restart: repairs, no harm
    assert [a.index for a in links.applied] == [3, 3]
    assert member.assignment is not None and member.assignment.vxlan_id == 103
    assert member.error is None
    assert backend.overlay_bridge == "river-br"  # reserved process tasks attach to it
    links.fail = "Operation not permitted"
    run(member.on_registered(reply))
    assert backend.overlay_bridge is None


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


class FakeDockerTarget:
    """What OverlayMember needs of the docker backend: a client and overlay_network."""

    def __init__(self) -> None:
        self.client = object()
        self.overlay_network: str | None = None


def test_member_puts_the_docker_backend_on_the_overlay_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[int, Any]] = []
    monkeypatch.setattr(
        "river_runner.overlay.ensure_docker_network",
        lambda assignment, client: made.append((assignment.index, client)) or "net-id",
    )
    target = FakeDockerTarget()
    member = OverlayMember("10.0.0.5", tmp_path, docker=target, links=FakeLinks())  # type: ignore[arg-type]
    run(member.on_registered({"overlay": assignment_json()}))
    assert made == [(3, target.client)]  # on the backend's own daemon
    assert target.overlay_network == "river-overlay"
    failing = OverlayMember(
        "10.0.0.5", tmp_path, docker=target, links=FakeLinks("Operation not permitted")
    )  # type: ignore[arg-type]
    run(failing.on_registered({"overlay": assignment_json()}))
    assert target.overlay_network is None  # containers stay off a network that is not up


class FakeNetworks:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs

    def get(self, name: str) -> Any:
        return type("Network", (), {"attrs": self.attrs})()


class FakeClient:
    def __init__(self, attrs: dict[str, Any]) -> None:
        import docker

        self.networks = FakeNetworks(attrs)
        self.api = docker.APIClient(base_url="unix:///nonexistent", version="1.41")


def overlay_backend(tmp_path: Path, containers: dict[str, Any]) -> Any:
    from river_runner.backends.docker import DockerBackend

    attrs = {
        "IPAM": {
            "Config": [
                {
                    "Subnet": "10.128.64.0/18",
                    "IPRange": "10.128.64.0/19",
                    "Gateway": "10.128.64.2",
                    "AuxiliaryAddresses": {"river-host": "10.128.64.1"},
                }
            ]
        },
        "Containers": containers,
    }
    backend = DockerBackend(
        FakeClient(attrs),  # type: ignore[arg-type]
        runner_name="r",
        work_root=tmp_path / "work",
        gpu_runtime=False,
    )
    backend.overlay_network = "river-overlay"
    return backend


def test_docker_backend_puts_containers_on_the_overlay_network(tmp_path: Path) -> None:
    from river_runner.backends.base import TaskLaunch

    backend = overlay_backend(tmp_path, {})
    plain = backend.container_config(TaskLaunch(1, "command", ["true"]), tmp_path)
    assert plain["network"] == "river-overlay" and "networking_config" not in plain
    reserved = backend.container_config(
        TaskLaunch(2, "command", ["true"], overlay_ip="10.128.127.254"), tmp_path
    )
    assert reserved["environment"]["RIVER_OVERLAY_IP"] == "10.128.127.254"
    endpoint = reserved["networking_config"]["river-overlay"]
    assert endpoint["IPAMConfig"]["IPv4Address"] == "10.128.127.254"
    backend.overlay_network = None
    assert "network" not in backend.container_config(TaskLaunch(3, "command", ["true"]), tmp_path)
    with pytest.raises(RuntimeError, match="not up"):
        backend.container_config(
            TaskLaunch(4, "command", ["true"], overlay_ip="10.128.127.254"), tmp_path
        )


def test_docker_backend_picks_the_lowest_free_overlay_address(tmp_path: Path) -> None:
    used = {"c1": {"IPv4Address": "10.128.64.3/18"}, "c2": {"IPv4Address": "10.128.64.5/18"}}
    backend = overlay_backend(tmp_path, used)
    first = backend.overlay_addresses.claim("river-overlay", set())
    second = backend.overlay_addresses.claim("river-overlay", set())  # first still starting
    third = backend.overlay_addresses.claim("river-overlay", {"10.128.64.7"})
    assert (first, second, third) == ("10.128.64.4", "10.128.64.6", "10.128.64.8")
    backend.overlay_addresses.pending.clear()
    full = overlay_backend(
        tmp_path,
        {str(i): {"IPv4Address": f"10.128.{64 + i // 256}.{i % 256}/18"} for i in range(8192)},
    )
    with pytest.raises(RuntimeError, match="no free address"):
        full.overlay_addresses.claim("river-overlay", set())
