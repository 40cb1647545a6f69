"""`river ssh ID`: SSH into a VPS through the host's SSH proxy, from any shell.

Reads the host and token like the notebook client (RIVER_URL, RIVER_TOKEN, or --url and
--token), asks the host for the VPS's proxy port and your user name, and runs
`ssh -p PORT you+ID@host` (with `--print`, prints it; with `--config`, prints a
~/.ssh/config entry instead). Options for ssh itself go after `--`:
`river ssh 123 -- -L 8888:localhost:8888`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from .client import Client
from .errors import RiverError
from .vps_apps import ssh_command, ssh_config


def ssh_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="river ssh", description="SSH into a VPS through the River host's SSH proxy."
    )
    parser.add_argument("id", metavar="VPS_ID")
    parser.add_argument("--url", help="the River host (default: $RIVER_URL)")
    parser.add_argument("--token", help="an API token (default: $RIVER_TOKEN)")
    parser.add_argument("--print", action="store_true", help="print the command, do not run it")
    parser.add_argument("--config", action="store_true", help="print a ~/.ssh/config entry")
    parser.add_argument("ssh_args", nargs="*", help="after --: passed on to ssh")
    args = parser.parse_args(argv)
    try:
        with Client(args.url, args.token) as client:
            vps = client.vps(args.id)
            if args.config:
                print(ssh_config(client, vps))
                return 0
            command = ssh_command(client, vps).split() + list(args.ssh_args)
    except RiverError as exc:
        print(f"river ssh: {exc}", file=sys.stderr)
        return 1
    if args.print:
        print(" ".join(command))
        return 0
    if shutil.which("ssh") is None:
        print(f"river ssh: no ssh client here; the command is: {' '.join(command)}")
        return 1
    os.execvp("ssh", command)
    return 0  # pragma: no cover
