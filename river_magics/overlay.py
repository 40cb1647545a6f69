"""`%river overlay` and `%river ip reserve|list|release`: the VXLAN overlay from a notebook.

%river overlay                                   the layout and each runner's subnet
%river ip reserve [--node N] [--ttl S] [--ip A]  hold an overlay address; prints its token
%river ip list [--all]                           your reservations (and their state)
%river ip release ID|TOKEN                       give one back
%%river submit --ip-token TOKEN                  the task gets the reserved address
                                                 (RIVER_OVERLAY_IP) on that address's node
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from .client import Client
from .display import Bundle, _message, show, table_bundle


def add_overlay_commands(sub: Any, seconds_arg: Any) -> None:
    """Register `overlay` and `ip` on the %river parser."""
    sub.add_parser(
        "overlay",
        help="the overlay network: each runner's subnet, VXLAN id and state",
        description="Show the VXLAN overlay: its layout and the subnet each runner was given.",
    )
    ip = sub.add_parser(
        "ip",
        help="reserve overlay addresses for tasks (--ip-token)",
        description="Reserve an overlay address before launch (e.g. a distributed job's "
        "master), then give the token to the task with --ip-token.",
    )
    actions = ip.add_subparsers(dest="ip_command", metavar="ACTION", required=True)
    reserve = actions.add_parser("reserve", help="hold an address; prints its token once")
    reserve.add_argument("--node", metavar="NODE", help="the runner (default: most free cores)")
    reserve.add_argument(
        "--ttl",
        type=seconds_arg,
        metavar="SECONDS",
        help="how long the token stays good before a task uses it (default 600)",
    )
    reserve.add_argument("--ip", metavar="ADDRESS", help="a particular address on that runner")
    listing = actions.add_parser("list", help="your reservations")
    listing.add_argument("-a", "--all", action="store_true", help="everyone's (operators)")
    release = actions.add_parser("release", help="give a reservation back")
    release.add_argument("key", metavar="ID|TOKEN", help="the reservation's id or its token")


def _when(ts: Any) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(float(ts)).strftime("%H:%M:%S")


def overlay_bundle(overlay: Mapping[str, Any]) -> Bundle:
    if not overlay.get("enabled"):
        return _message(
            "the overlay network is off on this host (an operator sets c.RiverHost.overlay_enabled)"
        )
    title = (
        f"overlay {overlay.get('subnet')} ({overlay.get('network')}), host "
        f"{overlay.get('host_underlay_ip')}, MTU {overlay.get('mtu')}"
    )
    if overlay.get("problem"):
        title += f"; problem: {overlay['problem']}"
    allocations = overlay.get("allocations") or []
    if not allocations:
        text = f"{title}\nno runner has joined yet (river runner ... --overlay-ip ADDRESS)"
        return _message(text)
    rows = [
        [
            str(a.get("node")),
            "online" if a.get("online") else "offline",
            str(a.get("index")),
            str(a.get("vxlan_id")),
            str(a.get("subnet")),
            str(a.get("host_ip")),
            " - ".join(a.get("workload_range") or []),
            str(a.get("underlay_ip")),
            str(a.get("host_links")),
        ]
        for a in allocations
    ]
    headers = [
        "node",
        "state",
        "index",
        "vxlan",
        "subnet",
        "host",
        "workloads",
        "underlay",
        "links",
    ]
    table = table_bundle(headers, rows, state_col=1)
    return {
        "text/plain": f"{title}\n{table['text/plain']}",
        "text/html": f"<p>{title}</p>{table['text/html']}",
    }


def reservations_bundle(reservations: Sequence[Mapping[str, Any]]) -> Bundle:
    if not reservations:
        return _message("no IP reservations (make one with %river ip reserve)")
    rows = [
        [
            str(r.get("id")),
            str(r.get("ip")),
            str(r.get("node")),
            str(r.get("state")),
            str(r.get("task_id") or "-"),
            _when(r.get("expires_at")),
            str(r.get("owner")),
        ]
        for r in reservations
    ]
    headers = ["id", "ip", "node", "state", "task", "expires", "owner"]
    return table_bundle(headers, rows, state_col=-1)


def run_overlay_command(client: Client, args: argparse.Namespace) -> None:
    show(overlay_bundle(client.overlay()))


def run_ip_command(client: Client, args: argparse.Namespace) -> None:
    action = args.ip_command
    if action == "reserve":
        held = client.reserve_ip(node=args.node, ttl=args.ttl, ip=args.ip)
        print(
            f"reserved {held['ip']} on {held['node']} until {_when(held.get('expires_at'))} "
            f"(id {held['id']})\ntoken (shown once): {held['token']}\n"
            f"give it to the task: %%river submit --ip-token {held['token']}"
        )
    elif action == "list":
        show(reservations_bundle(client.ip_reservations(all=args.all)))
    elif action == "release":
        released = client.release_ip(args.key)
        print(f"released {released['ip']} on {released['node']} (id {released['id']})")
