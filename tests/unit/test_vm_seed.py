"""The VM's NoCloud network config and MACs (river_runner/backends/vm.py): pure parts."""

from __future__ import annotations

import yaml

from river_runner.backends.vm import USER_NET, mac_address, seed_files
from river_runner.vm_tap import TapPlan, tap_name

VPS = "254788367315632128"


def network(files: dict[str, str]) -> dict:
    return yaml.safe_load(files["network-config"])["ethernets"]


def test_without_the_overlay_the_user_mode_nic_keeps_its_gateway() -> None:
    nics = network(seed_files("h", "", "i", mac_address(VPS)))
    assert list(nics) == ["eth0"]
    assert nics["eth0"]["gateway4"] == USER_NET["gateway"]


def test_the_overlay_nic_gets_the_reserved_address_and_the_default_route() -> None:
    plan = TapPlan("rvmx", "10.128.127.254", 18, "10.128.64.2", 1450)
    nics = network(seed_files("h", "", "i", mac_address(VPS), plan, mac_address(VPS, 1)))
    assert nics["eth1"]["addresses"] == ["10.128.127.254/18"]
    assert nics["eth1"]["gateway4"] == "10.128.64.2" and nics["eth1"]["mtu"] == 1450
    assert nics["eth1"]["match"]["macaddress"] == mac_address(VPS, 1)
    assert "gateway4" not in nics["eth0"]  # one default route: the overlay's


def test_macs_differ_for_ids_that_share_their_low_bits() -> None:
    other = str(int(VPS) + (1 << 24))  # same snowflake sequence bits, another millisecond
    assert mac_address(VPS) != mac_address(other)
    assert mac_address(VPS) != mac_address(VPS, 1)
    assert mac_address(VPS).startswith("52:54:00:") and mac_address(VPS, 1).startswith("52:54:01:")


def test_tap_names_fit_a_link_name_and_differ_per_runner() -> None:
    name = tap_name("/var/lib/river/vms", VPS)
    assert len(name) <= 15 and name.startswith("rvm")
    assert name != tap_name("/var/lib/river2/vms", VPS)
