"""`%river env ...`: container environments from a notebook (see river_server/environments.py).

%river env create NAME --image IMG     start a container on the host from IMG
%river env exec NAME -- COMMAND        run a shell command in it (pip install ...)
%river env export NAME                 save it to shared storage for the runners
%river env list | delete NAME [--tarball]
%%river submit --environment NAME      run a cell in it on any docker node
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from typing import Any

from river_runner.spec import format_memory

from .client import Client
from .display import Bundle, show, table_bundle

_COLUMNS = ("name", "owner", "image", "container", "exported")


def _exported(env: dict[str, Any]) -> str:
    exported = env.get("exported")
    if not exported:
        return "-"
    return f"{format_memory(int(exported.get('size') or 0))} ({exported.get('path')})"


def _row(env: dict[str, Any]) -> list[str]:
    state = env.get("state")
    container = f"{env.get('container')} {state}" if state else "-"
    return [
        str(env.get("name")),
        str(env.get("owner") or "-"),
        str(env.get("image") or "-"),
        container,
        _exported(env),
    ]


def environments_bundle(envs: Sequence[dict[str, Any]]) -> Bundle:
    """The `%river env list` table: HTML for JupyterLab, aligned text elsewhere."""
    if not envs:
        text = "no environments (create one with %river env create NAME --image IMG)"
        return {"text/plain": text, "text/html": f"<p>{html.escape(text)}</p>"}
    return table_bundle(_COLUMNS, [_row(e) for e in envs], state_col=-1)


def run_env_command(client: Client, args: argparse.Namespace) -> None:
    """Carry out one parsed `%river env ACTION ...` line."""
    action = args.env_command
    if action == "list":
        show(environments_bundle(client.environments()))
    elif action == "create":
        env = client.create_environment(args.name, args.image)
        print(
            f"environment {env['name']} running (container {env.get('container')}, from "
            f"{env.get('image')}); shape it with %river env exec {env['name']} -- COMMAND, "
            f"then %river env export {env['name']}"
        )
    elif action == "exec":
        result = client.exec_environment(args.name, args.shell_command)
        output = result.get("output") or ""
        if output:
            sys.stdout.write(output if output.endswith("\n") else output + "\n")
        code = result.get("exit_code")
        if code:
            print(f"exit code {code}", file=sys.stderr)
    elif action == "export":
        env = client.export_environment(args.name)
        exported = env.get("exported") or {}
        print(
            f"environment {env['name']} exported to {exported.get('path')} "
            f"({format_memory(int(exported.get('size') or 0))}); "
            f"use it with --environment {env['name']}"
        )
    elif action == "delete":
        result = client.delete_environment(args.name, tarball=args.tarball)
        removed = " and ".join(result.get("removed") or []) or "nothing"
        print(f"environment {args.name}: removed {removed}")
