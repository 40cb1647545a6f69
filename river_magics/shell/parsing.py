"""Argument parsing for the shell CLI: one-line usage errors (exit 2), never a traceback,
and the options every command shares (--url, --token, --json)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..usage import UsageError


class ShellParser(argparse.ArgumentParser):
    """Raises UsageError (one line: what is wrong and where help is) instead of printing the
    usage block; `--help` still prints and exits 0."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError((message or "invalid arguments").strip())
        raise SystemExit(0)


def connection_options(json_output: bool = True) -> ShellParser:
    """A parent parser: where the host is, and --json for scripts."""
    parent = ShellParser(add_help=False)
    parent.add_argument("--url", help="the River host (default: $RIVER_URL, then `river login`)")
    parent.add_argument("--token", help="an API token (default: $RIVER_TOKEN, then `river login`)")
    if json_output:
        parent.add_argument(
            "--json", action="store_true", help="print JSON for scripts instead of a table"
        )
    return parent


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Options before the first `--`, and the command after it (None without `--`)."""
    if "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]
