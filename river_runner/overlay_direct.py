"""Direct runner-to-runner overlay forwarding (the runner side): no hairpin through the hub.

On the hub alone, a packet from runner A's subnet to runner B's crosses two tunnels and is
routed by the host (A -> host -> B), which halves the bandwidth and doubles the latency.
Here each runner also has `river-dx`: one VXLAN (id = vxlan_base, unused by the per-runner
tunnels, which start at base + 1) with no default remote and no learning. For every peer
the host names in its heartbeat reply (`overlay_peers`), the runner installs

    fdb    PEER_MAC dst PEER_UNDERLAY          (where that MAC lives)
    neigh  PEER_GATEWAY lladdr PEER_MAC        (no ARP over the tunnel)
    route  PEER_SUBNET via PEER_GATEWAY dev river-dx onlink

The peer route is more specific than the hub's overlay-wide route, so it wins; dropping it
(the peer is gone or not directly reachable) falls back to the hub at once. PEER_MAC is
derived from the peer's index (`direct_mac`), so nothing has to be learnt or asked. The
host only pairs runners that both declared they reach each other directly
(river_server/overlay.py), so the paths are symmetric and reverse-path filters pass.

Synchronous pyroute2: call from a worker thread, as the rest of the overlay code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from river_runner.netlinks import (
    delete_link,
    drop_peer,
    ensure_direct_vxlan,
    ensure_peer,
    iproute,
    set_forwarding,
)
from river_runner.overlay_spec import OverlayAssignment

log = logging.getLogger("river.overlay")

DIRECT_VXLAN = "river-dx"


def direct_mac(index: int) -> str:
    """The fixed MAC of runner `index`'s river-dx (locally administered, role byte 2)."""
    return f"02:72:76:02:{index >> 8:02x}:{index & 0xFF:02x}"


@dataclass(frozen=True)
class Peer:
    """A runner this one reaches directly: what the host sends (`overlay_peers`)."""

    index: int
    underlay_ip: str
    subnet: str
    runner_ip: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Peer:
        return cls(
            int(data["index"]),
            str(data["underlay_ip"]),
            str(data["subnet"]),
            str(data["runner_ip"]),
        )


class DirectLinks:
    """Converges river-dx and its peer entries to what the host last sent."""

    def __init__(self, name: str = DIRECT_VXLAN) -> None:
        self.name = name
        self.applied: frozenset[Peer] = frozenset()

    def apply(self, assignment: OverlayAssignment, peers: frozenset[Peer]) -> None:
        """Install entries for `peers`, drop those of runners no longer listed; no peers:
        remove river-dx (everything goes through the hub). Safe to repeat."""
        if not peers:
            with iproute() as ipr:
                delete_link(ipr, self.name)  # its routes, neighbours and FDB go with it
            self.applied = frozenset()
            return
        vxlan_base = assignment.vxlan_id - assignment.index
        with iproute() as ipr:
            index = ensure_direct_vxlan(
                ipr,
                self.name,
                vxlan_id=vxlan_base,
                local=assignment.runner_underlay_ip,
                port=assignment.port,
                mtu=assignment.mtu,
                mac=direct_mac(assignment.index),
            )
            for gone in self.applied - peers:
                drop_peer(
                    ipr,
                    index,
                    mac=direct_mac(gone.index),
                    gateway=gone.runner_ip,
                    subnet=gone.subnet,
                )
            for peer in peers:
                ensure_peer(
                    ipr,
                    index,
                    mac=direct_mac(peer.index),
                    underlay=peer.underlay_ip,
                    gateway=peer.runner_ip,
                    subnet=peer.subnet,
                )
        set_forwarding(self.name)  # frames from peers are forwarded on to river-br
        if peers != self.applied:
            log.info("overlay: direct paths to runner indexes %s", sorted(p.index for p in peers))
        self.applied = peers
