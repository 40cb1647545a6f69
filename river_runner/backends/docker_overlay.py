"""Addresses for task containers on the runner's VXLAN overlay network.

Why a module of its own: picking an address is a small protocol with its own lock and state
(addresses picked for containers that have not started yet), separate from watching
containers. The docker backend (river_runner.backends.docker) holds one `OverlayAddresses`
and hands it the containers that join the overlay network.

A task that presented an IP reservation gets exactly that address (`set_address`); any
other gets the lowest free address of the docker network's range (`claim`), picked here
rather than by docker's IPAM so that RIVER_OVERLAY_IP can be set before the start. Another
daemon client may take the picked address meanwhile; `start` then tries the next one.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import Any

import docker

from river_runner.overlay_spec import FIRST_WORKLOAD_OFFSET

log = logging.getLogger("river.runner.docker")

OVERLAY_ENV = "RIVER_OVERLAY_IP"  # the container's address on the overlay, when it has one
OVERLAY_START_ATTEMPTS = 3  # a picked address someone else took meanwhile: try the next one

# Create and start a container from its config (blocking): (container id, paused).
StartContainer = Callable[[dict[str, Any], int], tuple[str, bool]]


class OverlayAddresses:
    """Picks and sets containers' addresses on a docker network of the overlay."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self.pending: set[str] = set()  # picked, container not started yet

    def set_address(self, config: dict[str, Any], address: str) -> None:
        """Put the container of `config` (for `containers.create`, its `network` set) at
        `address`, and tell the task its address in the environment."""
        config["environment"][OVERLAY_ENV] = address
        config["networking_config"] = {
            config["network"]: self.client.api.create_endpoint_config(ipv4_address=address)
        }

    def claim(self, network_name: str, skip: set[str]) -> str:
        """The lowest free address of the overlay network's range (blocking); held in
        `pending` until the caller releases it (after the container started).

        Free: not the gateway or an auxiliary address, not used by a container on the
        network, not picked for a container still starting, not in `skip`."""
        network = self.client.networks.get(network_name)
        attrs = network.attrs or {}
        pools = (attrs.get("IPAM") or {}).get("Config") or []
        if not pools:
            raise RuntimeError(f"docker network {network_name} has no IPv4 subnet")
        pool = pools[0]
        subnet = ipaddress.IPv4Network(pool["Subnet"])
        pick_from = ipaddress.IPv4Network(pool.get("IPRange") or pool["Subnet"])
        taken = set(skip)
        if pool.get("Gateway"):
            taken.add(pool["Gateway"])
        taken.update((pool.get("AuxiliaryAddresses") or {}).values())
        for endpoint in (attrs.get("Containers") or {}).values():
            address = (endpoint.get("IPv4Address") or "").split("/")[0]
            if address:
                taken.add(address)
        first = max(
            int(pick_from.network_address), int(subnet.network_address) + FIRST_WORKLOAD_OFFSET
        )
        last = min(int(pick_from.broadcast_address), int(subnet.broadcast_address) - 1)
        with self._lock:
            for number in range(first, last + 1):
                address = str(ipaddress.IPv4Address(number))
                if address not in taken and address not in self.pending:
                    self.pending.add(address)
                    return address
        raise RuntimeError(f"docker network {network_name}: no free address in {pick_from}")

    def release(self, address: str) -> None:
        with self._lock:
            self.pending.discard(address)

    def start(
        self, config: dict[str, Any], task_id: int, start_container: StartContainer
    ) -> tuple[str, bool]:
        """Create and start a container at a picked overlay address (blocking), with
        `start_container`; (container id, paused)."""
        skip: set[str] = set()
        for attempt in range(1, OVERLAY_START_ATTEMPTS + 1):
            address = self.claim(config["network"], skip)
            try:
                self.set_address(config, address)
                return start_container(config, task_id)
            except RuntimeError as exc:
                if "already in use" not in str(exc).lower() or attempt == OVERLAY_START_ATTEMPTS:
                    raise
                log.info("task %s: overlay address %s is taken; trying another", task_id, address)
                skip.add(address)
            finally:
                self.release(address)
        raise AssertionError("unreachable")  # pragma: no cover
