"""A VM's tap device on the runner's overlay bridge: the VM's second NIC (issue 19).

A container joins the overlay through docker's network and a process task through a veth
into its namespace (river_runner/task_netns.py); a VM's NIC is a tap that QEMU opens. The
tap is made here, persistent and enslaved to the bridge before QEMU starts, so QEMU needs
no helper script (`-netdev tap,...,script=no`) and the link plumbing stays in pyroute2 like
the rest of the overlay (no `ip` subprocesses). A persistent tap outlives QEMU: the runner
removes it when the VM ends and re-creates it (idempotently) on restart and adoption.

pyroute2's synchronous API must not run inside the event loop: callers use
`asyncio.to_thread`. Needs CAP_NET_ADMIN, as the overlay itself does.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from river_runner.netlinks import OverlayError, delete_link, forget_neighbour, iproute, link_index
from river_runner.overlay import bridge_gateway, workload_interface


@dataclass(frozen=True)
class TapPlan:
    """What the guest's cloud-init needs for its overlay NIC, read off the bridge."""

    tap: str
    address: str  # the VM's reserved overlay address
    prefixlen: int
    gateway: str  # the runner's bridge address: the guest's way to the rest of the overlay
    mtu: int


def tap_name(root: str, vps_id: str) -> str:
    """A link name (15 characters at most) no other runner on this machine uses: runners
    differ by their VM root, VPSes by id."""
    digest = hashlib.sha1(f"{os.path.abspath(root)}:{vps_id}".encode()).hexdigest()[:11]
    return f"rvm{digest}"


def ensure_tap(name: str, address: str, bridge: str) -> TapPlan:
    """Make tap `name` (if missing) on `bridge`, up, with the bridge's MTU; check that
    `address` is a workload address of the bridge's subnet. Idempotent."""
    with iproute() as ipr:
        bridge_index, gateway, mtu = bridge_gateway(ipr, bridge)
        wanted = workload_interface(address, gateway, bridge)
        index = link_index(ipr, name)
        if index is None:
            ipr.link("add", ifname=name, kind="tuntap", mode="tap", no_pi=True)
            index = link_index(ipr, name)
        if index is None:
            raise OverlayError(f"could not create the tap {name}")
        ipr.link("set", index=index, master=bridge_index, mtu=mtu, state="up")
        forget_neighbour(ipr, bridge_index, str(wanted.ip))  # a reused address's old MAC
    return TapPlan(name, str(wanted.ip), wanted.network.prefixlen, str(gateway.ip), mtu)


def remove_tap(name: str) -> bool:
    """Remove the tap (True if it was there)."""
    with iproute() as ipr:
        return delete_link(ipr, name)
