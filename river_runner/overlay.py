"""VXLAN overlay links with pyroute2: the runner's spoke (runner side only).

Everything here converges the kernel to a wanted state and may be re-run at any time
(idempotent): a link that exists with the wanted settings is left alone, one with other
settings is corrected or recreated, a missing one is created. Only links with River's own
names are ever touched.

Runner side (one per runner), from the assignment in the host's registration reply:

    river-vx  VXLAN id = base + index, local = runner underlay IP, remote = host underlay
              IP, UDP 4789, enslaved to river-br
    river-br  bridge with the runner's address on its subnet (runner_ip/prefix); the
              workloads' default gateway; forwarding on (this interface only)
    route     overlay network via the host's address on this subnet

Workloads: docker containers on the `river-overlay` network (which uses river-br; the
docker backend puts task containers on it instead of the default bridge once the agent has
made it), or, for the process backend and tests, a network namespace attached to river-br
by a veth (`attach_namespace`).

The link plumbing both ends use (bridges, VXLANs, addresses, forwarding) is in
river_runner/netlinks.py, which the host's hub imports instead of this module.

pyroute2's synchronous API cannot run inside a running asyncio loop: call these functions
from a worker thread (`asyncio.to_thread`), as the agent does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from river_runner.netlinks import (
    OverlayError,
    delete_link,
    ensure_bridge,
    ensure_only_address,
    ensure_route,
    ensure_vxlan,
    forget_neighbour,
    iproute,
    ipv4_addresses,
    link_facts,
    link_index,
    netns_path,
    set_forwarding,
)
from river_runner.overlay_direct import DirectLinks, Peer
from river_runner.overlay_spec import (
    FIRST_WORKLOAD_OFFSET,
    OverlayAssignment,
    OverlaySpecError,
    check_ipv4,
    gateway_mac,
)

log = logging.getLogger("river.overlay")

BRIDGE = "river-br"
VXLAN = "river-vx"
DOCKER_NETWORK = "river-overlay"
STATE_FILE = "overlay.json"
IFNAMSIZ = 15


# ---- runner side ---------------------------------------------------------------------------


class RunnerOverlay:
    """The runner's spoke: river-vx + river-br + route, from an OverlayAssignment."""

    def __init__(
        self, data_dir: Path | None = None, bridge: str = BRIDGE, vxlan: str = VXLAN
    ) -> None:
        self.data_dir = data_dir
        self.bridge = bridge
        self.vxlan = vxlan

    @property
    def state_path(self) -> Path | None:
        return self.data_dir / STATE_FILE if self.data_dir else None

    def apply(self, assignment: OverlayAssignment) -> dict[str, Any]:
        """Converge the links to `assignment`; returns status(). Safe to repeat."""
        with iproute() as ipr:
            bridge = ensure_bridge(
                ipr, self.bridge, assignment.mtu, gateway_mac("runner", assignment.index)
            )
            ensure_only_address(ipr, bridge, assignment.runner_ip, assignment.prefixlen)
            ensure_vxlan(
                ipr,
                self.vxlan,
                vxlan_id=assignment.vxlan_id,
                local=assignment.runner_underlay_ip,
                remote=assignment.host_underlay_ip,
                port=assignment.port,
                mtu=assignment.mtu,
                master=bridge,
            )
            ensure_route(ipr, assignment.network, assignment.host_ip, bridge)
        set_forwarding(self.bridge)
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(assignment.to_json(), indent=1))
            os.replace(tmp, self.state_path)
        return self.status()

    def teardown(self) -> list[str]:
        """Remove the runner's overlay links (routes go with them); returns what was removed."""
        removed = []
        with iproute() as ipr:
            for name in (self.vxlan, self.bridge):
                if delete_link(ipr, name):
                    removed.append(name)
        if self.state_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
        return removed

    def saved_assignment(self) -> OverlayAssignment | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            return OverlayAssignment.from_json(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return None

    def status(self) -> dict[str, Any]:
        with iproute() as ipr:
            links = {}
            for name in (self.vxlan, self.bridge):
                index = link_index(ipr, name)
                if index is not None:
                    facts = link_facts(ipr, index)
                    facts["addresses"] = [f"{a}/{n}" for a, n in ipv4_addresses(ipr, index)]
                    links[name] = facts
        saved = self.saved_assignment()
        return {"links": links, "assignment": saved.to_json() if saved else None}


class OverlayMember:
    """What the agent keeps about the overlay: its underlay address and the last result.

    `docker` is the docker backend (or True: the environment's daemon) when tasks run in
    containers: once the links are up the docker network `river-overlay` is made on the
    backend's daemon (its `client`), and the backend's `overlay_network` is set to that
    network's name (None again when a later setup fails), which puts task containers on it.
    `backend` (any backend) gets `overlay_bridge` set the same way: the process backend
    attaches tasks with reserved addresses to that bridge.
    """

    def __init__(
        self,
        underlay_ip: str | None,
        data_dir: Path | None,
        *,
        docker: Any = None,
        backend: Any = None,
        links: RunnerOverlay | None = None,
        direct: bool = True,
    ) -> None:
        self.direct = direct  # this node's underlay reaches the other runners' directly
        self.direct_links = DirectLinks()
        self.underlay_ip = check_ipv4(underlay_ip, "--overlay-ip") if underlay_ip else None
        self.docker = docker
        self.backend = backend
        self.links = links or RunnerOverlay(data_dir)
        self.assignment: OverlayAssignment | None = None
        self.error: str | None = None

    def registration_fields(self) -> dict[str, Any]:
        if not self.underlay_ip:
            return {}
        return {"overlay_underlay_ip": self.underlay_ip, "overlay_direct": self.direct}

    async def on_heartbeat(self, reply: dict[str, Any]) -> None:
        """Converge the direct paths (river_runner/overlay_direct.py) to the reply's
        `overlay_peers` when they changed; never raises (the hub path still works)."""
        peers_json = reply.get("overlay_peers")
        if peers_json is None or self.assignment is None:
            return
        try:
            peers = frozenset(Peer.from_json(p) for p in peers_json)
            if peers != self.direct_links.applied:
                await asyncio.to_thread(self.direct_links.apply, self.assignment, peers)
        except Exception as exc:
            log.error("overlay: direct paths not set up (the hub still carries): %s", exc)

    async def on_registered(self, reply: dict[str, Any]) -> None:
        """Set up (or repair) the spoke from the reply's `overlay`; never raises."""
        if not self.underlay_ip:
            return
        data = reply.get("overlay")
        if not data:
            why = reply.get("overlay_error") or "the host has no overlay network enabled"
            if self.error != why:
                log.warning("not joining the overlay: %s", why)
            self.error = why
            return
        try:
            assignment = OverlayAssignment.from_json(data)
            await asyncio.to_thread(self.links.apply, assignment)
            if self.docker:
                client = getattr(self.docker, "client", None)
                await asyncio.to_thread(ensure_docker_network, assignment, client)
                self._set_docker_network(DOCKER_NETWORK)
        except Exception as exc:
            self.error = f"overlay setup failed: {exc}"
            log.error("%s", self.error)
            self._set_docker_network(None)
            self._set_bridge(None)
            return
        self._set_bridge(self.links.bridge)
        if assignment != self.assignment:
            log.info(
                "overlay up: index %d, subnet %s, VXLAN %d to %s",
                assignment.index,
                assignment.subnet,
                assignment.vxlan_id,
                assignment.host_underlay_ip,
            )
        self.assignment = assignment
        self.error = None

    def _set_docker_network(self, name: str | None) -> None:
        if self.docker and hasattr(self.docker, "overlay_network"):
            self.docker.overlay_network = name

    def _set_bridge(self, bridge: str | None) -> None:
        if self.backend is not None:
            self.backend.overlay_bridge = bridge


# ---- workloads --------------------------------------------------------------------------


def workload_veth(netns: str) -> str:
    return "rvw" + hashlib.sha1(netns_path(netns).encode()).hexdigest()[: IFNAMSIZ - 3]


def workload_interface(
    address: str, gateway: ipaddress.IPv4Interface, bridge: str
) -> ipaddress.IPv4Interface:
    """`address` on the bridge's subnet, checked to be a workload address (past the
    reserved low range, not the gateway or broadcast): what a namespace's veth or a VM's
    tap may be given."""
    try:
        wanted = ipaddress.IPv4Interface(f"{address}/{gateway.network.prefixlen}")
    except ValueError:
        raise OverlayError(f"{address!r} is not an IPv4 address") from None
    first = gateway.network.network_address + FIRST_WORKLOAD_OFFSET
    if not first <= wanted.ip < gateway.network.broadcast_address or wanted.ip == gateway.ip:
        raise OverlayError(
            f"{address} is not a workload address on {gateway.network} (bridge {bridge})"
        )
    return wanted


def bridge_gateway(ipr: Any, bridge: str) -> tuple[int, ipaddress.IPv4Interface, int]:
    """(index, address/prefix, mtu) of the overlay bridge, or OverlayError if it is not up."""
    index = link_index(ipr, bridge)
    if index is None:
        raise OverlayError(f"no overlay bridge {bridge} here: has this runner joined the overlay?")
    addresses = ipv4_addresses(ipr, index)
    if not addresses:
        raise OverlayError(f"overlay bridge {bridge} has no IPv4 address yet")
    address, prefixlen = addresses[0]
    return index, ipaddress.IPv4Interface(f"{address}/{prefixlen}"), link_facts(ipr, index)["mtu"]


def attach_namespace(
    netns: str, address: str, *, bridge: str = BRIDGE, ifname: str = "eth0"
) -> str:
    """Attach an existing network namespace to the overlay bridge as a workload.

    A veth pair joins them: the namespace's end is `ifname` with `address` on the bridge's
    subnet, the bridge's MTU and a default route via the bridge (the runner), which routes
    the rest of the overlay through the host. Returns the bridge-side veth name. Idempotent.
    """
    host_if = workload_veth(netns)
    path = netns_path(netns)
    if not os.path.exists(path):
        raise OverlayError(f"no network namespace at {path}")
    with iproute() as ipr:
        bridge_index, gateway, mtu = bridge_gateway(ipr, bridge)
        wanted = workload_interface(address, gateway, bridge)
        index = link_index(ipr, host_if)
        if index is None:
            fd = os.open(path, os.O_RDONLY)
            try:
                ipr.link(
                    "add",
                    ifname=host_if,
                    kind="veth",
                    peer={"ifname": ifname, "net_ns_fd": fd},
                )
            finally:
                os.close(fd)
            index = link_index(ipr, host_if)
        ipr.link("set", index=index, master=bridge_index, mtu=mtu, state="up")
        forget_neighbour(ipr, bridge_index, str(wanted.ip))  # a reused address's old MAC
    with iproute(netns) as inner:
        lo = link_index(inner, "lo")
        if lo is not None:
            inner.link("set", index=lo, state="up")
        inside = link_index(inner, ifname)
        if inside is None:
            raise OverlayError(f"{ifname} is missing in {netns} (a stale {host_if}?)")
        inner.link("set", index=inside, mtu=mtu, state="up")
        ensure_only_address(inner, inside, str(wanted.ip), wanted.network.prefixlen)
        inner.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(gateway.ip), oif=inside)
    return host_if


def detach_namespace(netns: str) -> bool:
    """Remove the veth that attach_namespace made for `netns` (both ends go)."""
    with iproute() as ipr:
        return delete_link(ipr, workload_veth(netns))


# ---- docker --------------------------------------------------------------------------------


def docker_network_options(assignment: OverlayAssignment, bridge: str = BRIDGE) -> dict[str, Any]:
    """Arguments for docker's networks.create: the runner's subnet on river-br.

    Docker hands out addresses from the lower half of the subnet (its `iprange`); IP
    reservations come from the top down, so the two never meet until the subnet is full.
    The host's address is an auxiliary (never handed out) address; the gateway is the
    runner's bridge address, which docker finds already on the bridge.
    """
    subnet = ipaddress.IPv4Network(assignment.subnet)
    lower_half = next(subnet.subnets(prefixlen_diff=1))
    return {
        "driver": "bridge",
        "subnet": str(subnet),
        "iprange": str(lower_half),
        "gateway": assignment.runner_ip,
        "aux_addresses": {"river-host": assignment.host_ip},
        "options": {
            "com.docker.network.bridge.name": bridge,
            "com.docker.network.driver.mtu": str(assignment.mtu),
        },
        "labels": {"river.overlay.index": str(assignment.index)},
    }


def ensure_docker_network(
    assignment: OverlayAssignment,
    client: Any = None,
    name: str = DOCKER_NETWORK,
    bridge: str = BRIDGE,
) -> str:
    """The docker network `name` on the overlay bridge for `assignment`; returns its id.

    For the docker backend: containers that join this network get addresses on the
    runner's subnet (a reserved one with `ipv4_address=`). Recreated when the subnet
    changed (only possible while no container uses it)."""
    import docker
    import docker.errors
    from docker.types import IPAMConfig, IPAMPool

    own_client = client is None
    client = client or docker.from_env(version="auto", timeout=10)
    try:
        wanted = docker_network_options(assignment, bridge)
        try:
            network = client.networks.get(name)
        except docker.errors.NotFound:
            network = None
        if network is not None:
            attrs = network.attrs or {}
            options = attrs.get("Options") or {}
            pools = (attrs.get("IPAM") or {}).get("Config") or []
            subnets = {p.get("Subnet") for p in pools}
            if (
                options.get("com.docker.network.bridge.name") == bridge
                and subnets == {wanted["subnet"]}
                and {p.get("Gateway") for p in pools} == {wanted["gateway"]}
            ):
                return network.id
            log.info("docker network %s does not match %s; recreating it", name, wanted)
            network.remove()
        pool = IPAMPool(
            subnet=wanted["subnet"],
            iprange=wanted["iprange"],
            gateway=wanted["gateway"],
            aux_addresses=wanted["aux_addresses"],
        )
        created = client.networks.create(
            name,
            driver=wanted["driver"],
            ipam=IPAMConfig(pool_configs=[pool]),
            options=wanted["options"],
            labels=wanted["labels"],
        )
        return created.id
    finally:
        if own_client:
            client.close()


# ---- command line: python -m river_runner.overlay ---------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m river_runner.overlay",
        description="Inspect or change this machine's River overlay links.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="the runner's overlay links and saved assignment")
    status.add_argument("--data-dir", type=Path)
    teardown = sub.add_parser("teardown", help="remove the runner's overlay links")
    teardown.add_argument("--data-dir", type=Path)
    attach = sub.add_parser("attach", help="attach a network namespace as a workload")
    attach.add_argument("netns", help="namespace name (under /var/run/netns) or path")
    attach.add_argument("address", help="its address on this runner's overlay subnet")
    detach = sub.add_parser("detach", help="detach a namespace attached with `attach`")
    detach.add_argument("netns")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    try:
        if args.command == "status":
            print(json.dumps(RunnerOverlay(args.data_dir).status(), indent=1))
        elif args.command == "teardown":
            print(json.dumps({"removed": RunnerOverlay(args.data_dir).teardown()}))
        elif args.command == "attach":
            print(json.dumps({"veth": attach_namespace(args.netns, args.address)}))
        elif args.command == "detach":
            print(json.dumps({"removed": detach_namespace(args.netns)}))
    except (OverlayError, OverlaySpecError) as exc:
        print(f"overlay: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
