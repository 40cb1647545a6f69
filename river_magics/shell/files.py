"""`river put LOCAL ID:PATH` and `river get ID:PATH LOCAL`: files into and out of a running
task or VPS over the data plane (Client.put / Client.get_file; docs/cli.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..client import Client
from ..errors import RiverError
from ..file_copy import split_remote
from ..usage import UsageError
from . import config
from .parsing import ShellParser, connection_options


def _client(args: argparse.Namespace) -> Client:
    url, token = config.connection(args.url, args.token)
    return Client(url, token)


def _remote(spec: str) -> tuple[str, str]:
    try:
        return split_remote(spec)
    except RiverError as exc:
        raise UsageError(str(exc)) from None


def _copy_args(
    argv: list[str], name: str, description: str, operands: tuple[str, str]
) -> tuple[argparse.Namespace, str, str]:
    """Parse `river put|get`: the same options and operands, only their order differs.

    Returns the arguments with the remote operand split into (ID, PATH), so a bad ID:PATH
    is the same usage error for both directions.
    """
    parser = ShellParser(
        prog=f"river {name}",
        description=description,
        parents=[connection_options(json_output=False)],
    )
    metavars = {"local": "LOCAL", "remote": "ID:PATH"}
    for operand in operands:
        parser.add_argument(operand, metavar=metavars[operand])
    args = parser.parse_args(argv)
    ident, path = _remote(args.remote)
    return args, ident, path


def _put(argv: list[str]) -> int:
    """river put LOCAL ID:PATH"""
    args, ident, path = _copy_args(
        argv,
        "put",
        "Copy a file or directory into a running task or VPS (PATH relative "
        "to a process task's directory; any path in a container).",
        ("local", "remote"),
    )
    if not Path(args.local).exists():
        raise UsageError(f"no file or directory {args.local!r} here to put")
    with _client(args) as client:
        done = client.put(args.local, ident, path)
    print(
        f"river: put {args.local} ({done['size']} bytes) at {ident}:{done['path']}", file=sys.stderr
    )
    return 0


def _get(argv: list[str]) -> int:
    """river get ID:PATH LOCAL"""
    args, ident, path = _copy_args(
        argv,
        "get",
        "Copy a file or directory out of a running task or VPS to LOCAL "
        "(into LOCAL if it is a directory).",
        ("remote", "local"),
    )
    with _client(args) as client:
        done = client.get_file(ident, path, args.local)
    print(f"river: got {ident}:{path} ({done['size']} bytes) to {done['path']}", file=sys.stderr)
    return 0


COMMANDS = {"put": _put, "get": _get}
