"""Overlay subnet math (river_runner/overlay_spec.py) and the docker network it implies."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from river_runner.overlay import docker_network_options, ensure_docker_network
from river_runner.overlay_spec import (
    DEFAULT_SPEC,
    OverlayAssignment,
    OverlaySpec,
    OverlaySpecError,
    check_ipv4,
    check_vxlan_base,
)


def test_default_layout() -> None:
    spec = OverlaySpec.parse(None)
    assert str(spec) == DEFAULT_SPEC
    assert str(spec.network) == "10.128.0.0/12"
    assert spec.subnet_prefix == 18
    assert spec.max_runners == 63
    assert spec.workloads_per_runner == 16380
    assert str(spec.subnet(1)) == "10.128.64.0/18"
    assert str(spec.host_ip(1)) == "10.128.64.1"
    assert str(spec.runner_ip(1)) == "10.128.64.2"
    first, last = spec.workload_range(1)
    assert (str(first), str(last)) == ("10.128.64.3", "10.128.127.254")
    assert str(spec.subnet(63)) == "10.143.192.0/18"
    assert spec.subnet(63).broadcast_address == spec.network.broadcast_address


def test_subnets_are_disjoint_and_inside_the_overlay() -> None:
    spec = OverlaySpec.parse("10.0.0.0/8/8/16")
    subnets = [spec.subnet(i) for i in range(1, spec.max_runners + 1)]
    assert spec.max_runners == 255
    assert all(s.subnet_of(spec.network) for s in subnets)
    assert len({s.network_address for s in subnets}) == 255
    assert str(spec.subnet(1)) == "10.1.0.0/16"
    assert not any(subnets[i].overlaps(subnets[i + 1]) for i in range(len(subnets) - 1))


def test_index_of_and_workload_ip() -> None:
    spec = OverlaySpec.parse(DEFAULT_SPEC)
    assert spec.index_of("10.128.64.77") == 1
    assert spec.index_of("10.128.128.1") == 2
    assert spec.index_of("10.128.0.5") is None  # the host's own range (index 0)
    assert spec.index_of("192.168.1.1") is None
    assert spec.is_workload_ip(1, "10.128.64.3")
    assert spec.is_workload_ip(1, "10.128.127.254")
    for address in ("10.128.64.0", "10.128.64.1", "10.128.64.2", "10.128.127.255", "10.128.128.9"):
        assert not spec.is_workload_ip(1, address), address


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("10.128.0.0/12/6", "BASE/PREFIX/NODE_BITS/SUBNET_BITS"),
        ("10.128.0.0/12/6/13", "must be 32 (12 + 6 + 13 = 31)"),
        ("10.128.0.0/12/8/14", "must be 32 (12 + 8 + 14 = 34)"),
        ("10.129.0.0/12/6/14", "not aligned to /12; did you mean 10.128.0.0/12/6/14"),
        ("10.128.0/12/6/14", "is not an IPv4 address"),
        ("10.128.0.0/x/6/14", "PREFIX must be a whole number"),
        ("10.128.0.0/12/0/20", "NODE_BITS must be at least 1"),
        ("10.128.0.0/28/2/2", "SUBNET_BITS must be at least 3"),
        ("0.0.0.0/0/16/16", "PREFIX must be 1-29"),
    ],
)
def test_bad_specs_say_what_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(OverlaySpecError) as info:
        OverlaySpec.parse(text)
    assert fragment in str(info.value)


def test_index_bounds() -> None:
    spec = OverlaySpec.parse(DEFAULT_SPEC)
    for bad in (0, 64, -1):
        with pytest.raises(OverlaySpecError, match="outside 1-63"):
            spec.subnet(bad)


def test_vxlan_ids_fit_in_24_bits() -> None:
    spec = OverlaySpec.parse(DEFAULT_SPEC)
    assert check_vxlan_base(100, spec) == 100
    assert (
        spec.assignment(5, host_underlay_ip="1.1.1.1", runner_underlay_ip="1.1.1.2").vxlan_id == 105
    )
    with pytest.raises(OverlaySpecError, match="exceeds the largest VXLAN id"):
        check_vxlan_base(2**24 - 10, spec)


def test_underlay_addresses_checked() -> None:
    assert check_ipv4(" 192.168.1.5 ", "x") == "192.168.1.5"
    for bad in ("host.example", "224.0.0.1", "0.0.0.0", "1.2.3"):
        with pytest.raises(OverlaySpecError):
            check_ipv4(bad, "--overlay-ip")


def _assignment(index: int = 1) -> OverlayAssignment:
    return OverlaySpec.parse(DEFAULT_SPEC).assignment(
        index, host_underlay_ip="192.168.251.1", runner_underlay_ip="192.168.251.2"
    )


def test_assignment_round_trip_and_validation() -> None:
    assignment = _assignment(2)
    assert OverlayAssignment.from_json(assignment.to_json()) == assignment
    assert assignment.prefixlen == 18
    tampered = {**assignment.to_json(), "host_ip": "10.128.64.1"}  # runner 1's subnet
    with pytest.raises(OverlaySpecError, match="not in 10.128.128.0/18"):
        OverlayAssignment.from_json(tampered)
    with pytest.raises(OverlaySpecError, match="malformed"):
        OverlayAssignment.from_json({"index": 1})
    with pytest.raises(OverlaySpecError, match="MTU"):
        OverlayAssignment.from_json({**assignment.to_json(), "mtu": 100})


def test_docker_network_keeps_host_and_reservations_out_of_its_pool() -> None:
    options = docker_network_options(_assignment(1))
    assert options["subnet"] == "10.128.64.0/18"
    assert options["gateway"] == "10.128.64.2"  # the runner's bridge
    assert options["aux_addresses"] == {"river-host": "10.128.64.1"}
    pool = ipaddress.IPv4Network(options["iprange"])
    assert pool == ipaddress.IPv4Network("10.128.64.0/19")
    # Reservations are handed out from the top of the subnet: outside docker's pool.
    assert ipaddress.IPv4Address("10.128.127.254") not in pool
    assert options["options"]["com.docker.network.bridge.name"] == "river-br"
    assert options["options"]["com.docker.network.driver.mtu"] == "1450"


class _FakeNetwork:
    def __init__(self, client: _FakeDocker, name: str, attrs: dict[str, Any]) -> None:
        self.client, self.name, self.attrs, self.id = client, name, attrs, f"id-{name}"

    def remove(self) -> None:
        self.client.removed.append(self.name)
        self.client.networks_by_name.pop(self.name)


class _FakeDocker:
    def __init__(self) -> None:
        self.networks_by_name: dict[str, _FakeNetwork] = {}
        self.created: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.networks = self

    def get(self, name: str) -> _FakeNetwork:
        import docker.errors

        if name not in self.networks_by_name:
            raise docker.errors.NotFound(name)
        return self.networks_by_name[name]

    def create(self, name: str, **kwargs: Any) -> _FakeNetwork:
        self.created.append({"name": name, **kwargs})
        pool = kwargs["ipam"]["Config"][0]
        attrs = {
            "Options": kwargs["options"],
            "IPAM": {"Config": [{"Subnet": pool["Subnet"], "Gateway": pool["Gateway"]}]},
        }
        network = _FakeNetwork(self, name, attrs)
        self.networks_by_name[name] = network
        return network


def test_docker_network_is_created_once_and_recreated_on_change() -> None:
    client = _FakeDocker()
    first = ensure_docker_network(_assignment(1), client)
    assert first == "id-river-overlay"
    (call,) = client.created
    pool = call["ipam"]["Config"][0]
    assert pool["Subnet"] == "10.128.64.0/18"
    assert pool["IPRange"] == "10.128.64.0/19"
    assert pool["AuxiliaryAddresses"] == {"river-host": "10.128.64.1"}
    assert call["options"]["com.docker.network.bridge.name"] == "river-br"
    ensure_docker_network(_assignment(1), client)  # already right: untouched
    assert len(client.created) == 1 and not client.removed
    ensure_docker_network(_assignment(3), client)  # the runner got another subnet
    assert client.removed == ["river-overlay"]
    assert client.created[-1]["ipam"]["Config"][0]["Subnet"] == "10.128.192.0/18"
