"""Idempotent pyroute2 link plumbing: bridges, VXLANs, addresses, routes, forwarding.

Both ends of the overlay converge links with these: the runner's spoke
(river_runner/overlay.py) and the host's hub (river_server/overlay.py). They live apart from
the runner's overlay module so the host can import them without the runner side (its
workload and docker-network code), keeping the host to the agent-free part of river_runner
(design.md section 8). Only the standard library and pyroute2 (imported on first use).

pyroute2's synchronous API cannot run inside a running asyncio loop: call these functions
from a worker thread (`asyncio.to_thread`), as the agent and the host do.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("river.overlay")


class OverlayError(RuntimeError):
    """The overlay could not be configured; the message says why."""


# ---- pyroute2 plumbing ----------------------------------------------------------------------


@contextlib.contextmanager
def iproute(netns: str | None = None) -> Iterator[Any]:
    """An IPRoute in this process's network namespace (or in `netns`, never creating it)."""
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise OverlayError(f"pyroute2 is needed for the overlay network ({exc})") from None
    kwargs: dict[str, Any] = {}
    if netns is not None:
        kwargs.update(netns=netns_path(netns), flags=0)
    ipr = IPRoute(**kwargs)
    try:
        yield ipr
    finally:
        ipr.close()


def netns_path(netns: str) -> str:
    return netns if "/" in netns else f"/var/run/netns/{netns}"


def netlink_error_code(exc: BaseException) -> int | None:
    return getattr(exc, "code", None)


def link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_facts(ipr: Any, index: int) -> dict[str, Any]:
    """kind, master, mtu, state and (for VXLAN) id/local/remote/port of one link."""
    link = ipr.get_links(index)[0]
    info = link.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info is not None else None
    facts: dict[str, Any] = {
        "name": link.get("IFLA_IFNAME"),
        "kind": kind,
        "master": link.get("IFLA_MASTER"),
        "mtu": link.get("IFLA_MTU"),
        "mac": link.get("IFLA_ADDRESS"),
        "up": bool(link["flags"] & 1),
    }
    data = info.get("IFLA_INFO_DATA") if info is not None else None
    if kind == "vxlan" and data is not None:
        facts.update(
            vxlan_id=data.get("IFLA_VXLAN_ID"),
            local=data.get("IFLA_VXLAN_LOCAL"),
            remote=data.get("IFLA_VXLAN_GROUP"),
            port=data.get("IFLA_VXLAN_PORT"),
        )
    return facts


def ipv4_addresses(ipr: Any, index: int) -> list[tuple[str, int]]:
    return [
        (a.get("IFA_ADDRESS"), a["prefixlen"])
        for a in ipr.get_addr(index=index, family=2)  # AF_INET
    ]


def ensure_bridge(ipr: Any, name: str, mtu: int, mac: str | None = None) -> int:
    """A bridge named `name`, up, with this MTU (and MAC). Refuses to adopt a non-bridge."""
    index = link_index(ipr, name)
    if index is not None:
        facts = link_facts(ipr, index)
        if facts["kind"] != "bridge":
            raise OverlayError(
                f"a {facts['kind'] or 'plain'} link named {name} exists; expected a bridge"
            )
        if mac and facts["mac"] != mac:
            ipr.link("set", index=index, address=mac)
    else:
        log.info("creating bridge %s", name)
        ipr.link("add", ifname=name, kind="bridge", **({"address": mac} if mac else {}))
        index = link_index(ipr, name)
        if index is None:  # pragma: no cover - the kernel just said yes
            raise OverlayError(f"bridge {name} vanished right after it was created")
    ipr.link("set", index=index, mtu=mtu, state="up")
    return index


def ensure_vxlan(
    ipr: Any,
    name: str,
    *,
    vxlan_id: int,
    local: str,
    remote: str,
    port: int,
    mtu: int,
    master: int,
) -> int:
    """A unicast VXLAN to `remote`, enslaved to `master`; recreated if its settings differ."""
    index = _ensure_vxlan_link(
        ipr,
        name,
        wanted={"vxlan_id": vxlan_id, "local": local, "remote": remote, "port": port},
        # a unicast group is the single remote end
        add_args={"vxlan_group": remote},
        other_kind_is_error=True,
    )
    ipr.link("set", index=index, master=master, mtu=mtu, state="up")
    return index


def ensure_direct_vxlan(
    ipr: Any, name: str, *, vxlan_id: int, local: str, port: int, mtu: int, mac: str
) -> int:
    """A VXLAN with no default remote and no learning: where each frame goes is decided by
    the static FDB entries River installs (one per peer runner); recreated if it differs."""
    index = _ensure_vxlan_link(
        ipr,
        name,
        wanted={"vxlan_id": vxlan_id, "local": local, "port": port},
        add_args={"address": mac},
        other_kind_is_error=False,
    )
    ipr.link("set", index=index, mtu=mtu, state="up")
    return index


def _ensure_vxlan_link(
    ipr: Any,
    name: str,
    *,
    wanted: dict[str, Any],
    add_args: dict[str, Any],
    other_kind_is_error: bool,
) -> int:
    """Find, compare, recreate or create one VXLAN link: the shape both tunnels share.

    `wanted` are the facts (as `link_facts` reads them) the link must have; a link of
    another kind under the name is an error for the hub tunnel (someone else's link) and
    replaced for the direct one (River's own earlier layout)."""
    index = link_index(ipr, name)
    if index is not None:
        facts = link_facts(ipr, index)
        if facts["kind"] != "vxlan" and other_kind_is_error:
            raise OverlayError(
                f"a {facts['kind'] or 'plain'} link named {name} exists; expected a VXLAN"
            )
        if facts["kind"] != "vxlan" or any(facts.get(k) != v for k, v in wanted.items()):
            log.info("link %s has %s; recreating it as a VXLAN with %s", name, facts, wanted)
            ipr.link("del", index=index)
            index = None
    if index is None:
        log.info("creating VXLAN %s %s", name, wanted)
        ipr.link(
            "add",
            ifname=name,
            kind="vxlan",
            vxlan_id=wanted["vxlan_id"],
            vxlan_local=wanted["local"],
            vxlan_port=wanted["port"],
            vxlan_learning=0,
            **add_args,
        )
        index = link_index(ipr, name)
        if index is None:  # pragma: no cover
            raise OverlayError(f"VXLAN {name} vanished right after it was created")
    return index


def ensure_peer(
    ipr: Any, index: int, *, mac: str, underlay: str, gateway: str, subnet: str
) -> None:
    """Reach a peer runner's `subnet` directly: a static FDB entry (its MAC lives at its
    underlay address), a permanent neighbour (its gateway address has that MAC), a link
    route to that gateway and a route to the subnet via it, more specific than the hub's
    overlay-wide route."""
    ipr.fdb("replace", ifindex=index, lladdr=mac, dst=underlay, state=NUD_PERMANENT, flags=NTF_SELF)
    ipr.neigh("replace", ifindex=index, dst=gateway, lladdr=mac, state=NUD_PERMANENT)
    ipr.route("replace", dst=gateway, dst_len=32, oif=index, scope=SCOPE_LINK)
    net = ipaddress.IPv4Network(subnet)
    ipr.route(
        "replace", dst=str(net.network_address), dst_len=net.prefixlen, gateway=gateway, oif=index
    )


def drop_peer(ipr: Any, index: int, *, mac: str, gateway: str, subnet: str) -> None:
    """Undo ensure_peer: that subnet goes through the hub again."""
    net = ipaddress.IPv4Network(subnet)
    for undo in (
        lambda: ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen, oif=index),
        lambda: ipr.route("del", dst=gateway, dst_len=32, oif=index, scope=SCOPE_LINK),
        lambda: ipr.neigh("del", ifindex=index, dst=gateway, lladdr=mac),
        lambda: ipr.fdb("del", ifindex=index, lladdr=mac, flags=NTF_SELF),
    ):
        try:
            undo()
        except Exception as exc:  # already gone: ESRCH, ENOENT
            log.debug("dropping a peer entry: %s", exc)


def forget_neighbour(ipr: Any, index: int, address: str) -> bool:
    """Drop the neighbour entry for `address` on link `index`, if any; whether one was there.

    A workload address is reused (the lowest free one is handed out again) by a new
    namespace or container with a new MAC. The runner's entry for the old MAC stays
    REACHABLE for up to ~45 s and then takes a probe cycle, and until then every packet to
    the address goes to a MAC nobody has: the new workload is unreachable for ~30 s. With
    the entry gone the kernel asks by ARP on the next packet."""
    try:
        ipr.neigh("del", ifindex=index, dst=address)
    except Exception as exc:  # no entry: ENOENT
        log.debug("no neighbour %s to forget: %s", address, exc)
        return False
    return True


def ensure_only_address(ipr: Any, index: int, address: str, prefixlen: int) -> None:
    """`address/prefixlen` is the link's one IPv4 address (others are River's stale ones)."""
    present = ipv4_addresses(ipr, index)
    for other, other_len in present:
        if (other, other_len) != (address, prefixlen):
            log.info("removing stale address %s/%s", other, other_len)
            ipr.addr("del", index=index, address=other, prefixlen=other_len)
    if (address, prefixlen) not in present:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)


def ensure_route(ipr: Any, network: str, gateway: str, oif: int) -> None:
    net = ipaddress.IPv4Network(network)
    ipr.route(
        "replace",
        dst=str(net.network_address),
        dst_len=net.prefixlen,
        gateway=gateway,
        oif=oif,
    )


NUD_PERMANENT = 0x80  # static neighbour / FDB entries
NTF_SELF = 0x02  # an FDB entry of the VXLAN device itself (not of a bridge it is in)
SCOPE_LINK = 253


def set_forwarding(ifname: str, on: bool = True) -> None:
    """IPv4 forwarding for one interface only (the machine-wide setting is left alone).

    Linux decides whether to forward a packet by the flag of the interface it came in on,
    so the host's overlay bridges and the runner's bridge are enough."""
    path = Path("/proc/sys/net/ipv4/conf") / ifname / "forwarding"
    try:
        path.write_text("1\n" if on else "0\n")
    except OSError as exc:
        raise OverlayError(f"cannot enable forwarding on {ifname} ({path}): {exc}") from None


def delete_link(ipr: Any, name: str) -> bool:
    index = link_index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except Exception as exc:
        if netlink_error_code(exc) != 19:  # ENODEV: gone meanwhile
            raise
    return True


CAP_NET_ADMIN = 12


def has_net_admin() -> bool:
    """Whether this process may change links (CAP_NET_ADMIN in its effective set)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def check_permission() -> None:
    """Fail early, with a clear message, where links cannot be changed."""
    if not has_net_admin():
        raise OverlayError("the overlay needs root (CAP_NET_ADMIN) to configure links")
    try:
        with iproute() as ipr:
            ipr.get_links()
    except OverlayError:
        raise
    except Exception as exc:
        raise OverlayError(f"netlink is unavailable here: {exc}") from None
