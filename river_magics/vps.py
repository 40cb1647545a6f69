"""`%river vps ...`: persistent machines (see river_server/vps.py, docs/vps.md).

%river vps create [--image IMG | --vm [--disk 20G]] [-c CORES] [-m 8G] [--gpus N] [-t NODE]
                  [--name N] [--time 8h] [--ssh [--gen-key | --key FILE]]
%river vps list [--all] | status ID | stop ID | restart ID | pause ID | resume ID
%river vps snapshot ID | snapshots ID [--delete N] | delete ID
%river vps ssh ID | ssh-config ID            the SSH command / a ~/.ssh/config entry
%river vps jupyter ID [--port 8888]          start Jupyter in the VPS, show its link
%river vps tensorboard ID --logdir DIR [--port 6006]
%river open ID PORT [--absolute]             link to a port of a VPS or task
"""

from __future__ import annotations

import argparse
import html
import os
from collections.abc import Sequence
from typing import Any

from .client import Client
from .display import Bundle, show, table_bundle
from .vps_apps import (
    JUPYTER_PORT,
    TENSORBOARD_PORT,
    ssh_command,
    ssh_config,
    start_jupyter,
    start_tensorboard,
    terminal_url,
)

_COLUMNS = ("id", "name", "state", "node", "image", "address", "ssh", "snapshots")
ACTIONS = ("stop", "restart", "pause", "resume", "snapshot")


def add_vps_commands(
    sub: Any, count_arg: Any, memory_arg: Any, target_arg: Any, time_arg: Any
) -> None:
    vps = sub.add_parser(
        "vps",
        help="persistent machines: long-lived containers with snapshots and terminals",
        description="Create and drive VPSes: containers that live until deleted. Stop "
        "snapshots the filesystem (docker commit); restart starts from the newest snapshot.",
    )
    actions = vps.add_subparsers(dest="vps_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a VPS")
    create.add_argument("--image", metavar="IMG", help="image (default: the runner's)")
    create.add_argument("--name", default="", help="a label")
    create.add_argument("-c", "--cores", type=count_arg, default=1, help="CPU cores (default 1)")
    create.add_argument("-m", "--memory", type=memory_arg, metavar="SIZE", help="e.g. 8G")
    create.add_argument("--gpus", type=count_arg, default=0, metavar="N", help="GPU count")
    create.add_argument("-t", "--target", type=target_arg, metavar="NODE[:NUMA][::GPU,GPU]")
    create.add_argument(
        "--time",
        type=time_arg,
        metavar="LIMIT",
        help="time limit, e.g. 8h or 1d: at the limit the VPS is stopped with a snapshot",
    )
    create.add_argument(
        "--ip-token", metavar="TOKEN", help="a reserved overlay address (%%river ip reserve)"
    )
    create.add_argument(
        "--vm", action="store_true", help="a QEMU virtual machine instead of a container"
    )
    create.add_argument("--disk", metavar="SIZE", help="a VM's disk size, e.g. 20G (default 8G)")
    create.add_argument(
        "--priority", type=int, metavar="N", help="queue priority (higher first; role-bounded)"
    )
    create.add_argument(
        "--preemptible",
        action="store_true",
        help="let a higher-priority or under-share task displace it: snapshotted, queued, "
        "then restarted from the snapshot (same VPS, files kept; sessions end)",
    )
    create.add_argument(
        "--no-cull",
        action="store_true",
        help="never stop it for being idle (the host's idle culling); operators only",
    )
    create.add_argument("--ssh", action="store_true", help="enable SSH (key mode: none)")
    key = create.add_mutually_exclusive_group()
    key.add_argument("--gen-key", action="store_true", help="generate a key (printed once)")
    key.add_argument("--key", metavar="FILE", help="an OpenSSH public key file to authorise")
    listing = actions.add_parser("list", help="your VPSes (--all: everyone's, operators)")
    listing.add_argument("--all", action="store_true")
    for action, text in (("status", "show one VPS"), *((a, f"{a} a VPS") for a in ACTIONS)):
        actions.add_parser(action, help=text).add_argument("id", metavar="ID")
    actions.add_parser("delete", help="delete a VPS and its snapshots").add_argument(
        "id", metavar="ID"
    )
    snapshots = actions.add_parser("snapshots", help="list (or --delete N) a VPS's snapshots")
    snapshots.add_argument("id", metavar="ID")
    snapshots.add_argument("--delete", type=int, metavar="N", help="remove snapshot number N")
    for action, text in (
        ("ssh", "print the ssh command for a VPS"),
        ("ssh-config", "print a ~/.ssh/config entry for a VPS"),
        ("terminal", "link to a JupyterLab terminal into a VPS"),
    ):
        actions.add_parser(action, help=text).add_argument("id", metavar="ID")
    jupyter = actions.add_parser("jupyter", help="start Jupyter in a VPS and link to it")
    jupyter.add_argument("id", metavar="ID")
    jupyter.add_argument("--port", type=int, default=JUPYTER_PORT)
    board = actions.add_parser("tensorboard", help="start TensorBoard in a VPS, link to it")
    board.add_argument("id", metavar="ID")
    board.add_argument("--logdir", required=True, help="the run directory in the VPS")
    board.add_argument("--port", type=int, default=TENSORBOARD_PORT)
    opener = sub.add_parser("open", help="link to a port of a VPS or task (web UIs)")
    opener.add_argument("id", metavar="ID")
    opener.add_argument("port", type=int, metavar="PORT")
    opener.add_argument(
        "--absolute", action="store_true", help="keep the proxy prefix in the app's path"
    )


def link_bundle(url: str, text: str) -> Bundle:
    return {
        "text/plain": f"{text}: {url}",
        "text/html": f'<a href="{html.escape(url)}" target="_blank">{html.escape(text)}</a>',
    }


def _row(vps: dict[str, Any]) -> list[str]:
    snapshots = vps.get("snapshots") or []
    return [
        str(vps.get("id")),
        str(vps.get("name") or "-"),
        str(vps.get("state")),
        str(vps.get("node") or "-"),
        str(vps.get("running_image") or vps.get("image") or "(default)"),
        str(vps.get("overlay_ip") or "-"),  # its overlay address, container or VM
        str(vps.get("ssh") or "disabled"),
        str(len(snapshots)),
    ]


def vps_bundle(items: Sequence[dict[str, Any]]) -> Bundle:
    if not items:
        text = "no VPSes (create one with %river vps create)"
        return {"text/plain": text, "text/html": f"<p>{html.escape(text)}</p>"}
    return table_bundle(_COLUMNS, [_row(v) for v in items], state_col=_COLUMNS.index("state"))


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"cores": args.cores, "gpus": args.gpus, "name": args.name}
    if args.image:
        body["image"] = args.image
    if args.memory:
        body["memory"] = args.memory
    if args.target:
        body["target"] = args.target
    if args.ip_token:
        body["ip_token"] = args.ip_token
    if args.vm:
        body["vm"] = True
    if args.disk:
        body["disk"] = args.disk
    if getattr(args, "time", None) is not None:
        body["time_limit"] = args.time
    if getattr(args, "priority", None) is not None:
        body["priority"] = args.priority
    if getattr(args, "preemptible", False):
        body["preemptible"] = True
    if getattr(args, "no_cull", False):
        body["no_cull"] = True
    if args.gen_key:
        body["ssh"] = "generate"
    elif args.key:
        with open(os.path.expanduser(args.key)) as handle:
            body["ssh"], body["public_key"] = "upload", handle.read().strip()
    elif args.ssh:
        body["ssh"] = "none"
    return body


def run_vps_command(client: Client, args: argparse.Namespace) -> dict[str, Any] | None:
    """Carry out one parsed `%river vps ACTION ...` line."""
    action = args.vps_command
    if getattr(args, "id", None) is not None:  # a unique prefix or a name will do
        args.id = client.resolve_vps(args.id)
    if action == "list":
        show(vps_bundle(client.vps_list(all_users=args.all)))
        return None
    if action == "create":
        vps = client.vps_create(**_create_body(args))
        print(
            f"VPS {vps['id']}: {vps['state']} (stop keeps its files: %river vps stop {vps['id']})"
        )
        if vps.get("private_key"):
            print("Private key (shown once; save it now, River does not keep it):")
            print(vps["private_key"])
        return None
    if action == "status":
        show(vps_bundle([client.vps(args.id)]))
        return None
    if action == "delete":
        client.vps_delete(args.id)
        print(f"VPS {args.id}: deleted, with its snapshots")
        return None
    if action == "snapshots":
        if args.delete is not None:
            client.vps_delete_snapshot(args.id, args.delete)
        found = client.vps_snapshots(args.id)
        names = ", ".join(f"{s['number']} ({s['image']})" for s in found) or "none"
        print(f"VPS {args.id} snapshots, oldest first: {names}")
        return None
    if action in ("ssh", "ssh-config"):
        vps = client.vps(args.id)
        print(ssh_command(client, vps) if action == "ssh" else ssh_config(client, vps))
        return None
    if action == "terminal":
        client.vps(args.id)  # it exists and is yours: a clear error here, not in the tab
        show(link_bundle(terminal_url(client, args.id), f"terminal into VPS {args.id}"))
        return None
    if action == "jupyter":
        show(link_bundle(start_jupyter(client, args.id, args.port), f"Jupyter in VPS {args.id}"))
        return None
    if action == "tensorboard":
        url = start_tensorboard(client, args.id, args.logdir, args.port)
        show(link_bundle(url, f"TensorBoard in VPS {args.id}"))
        return None
    vps = client.vps_action(args.id, action)
    if action == "snapshot":
        print(f"VPS {args.id}: snapshots {', '.join(vps.get('snapshots') or [])}")
    elif action == "stop":
        newest = (vps.get("snapshots") or ["-"])[-1]
        print(f"VPS {args.id}: stopping; its filesystem is saved as {newest}")
    else:
        print(f"VPS {args.id}: {action} requested ({vps.get('state')})")
    return None


def run_open_command(client: Client, args: argparse.Namespace) -> None:
    """`%river open ID PORT`: a link to that port through the host's proxy."""
    url = client.proxy_url(args.id, args.port, absolute=args.absolute)
    show(link_bundle(url, f"port {args.port} of {args.id}"))
