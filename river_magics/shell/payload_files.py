"""`--push NAME=FILE` and `--pull NAME[=FILE]` for `river submit` / `river run`.

A shell has no notebook variables, so the magic's `--push x` / `--pull y` (river_magics/
launch.py) become files here, on the same client arguments (`Client.submit(push=, pull=)`
and `handle.result()`): a pushed file is the remote script's variable NAME, as bytes; a
pulled variable is written to FILE (default NAME) after the task completed: bytes and text
as they are, any other value pickled (what the magic's wire carries anyway). A command
(no Python script to hold variables) gets `--push NAME=FILE` as a file at NAME instead.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

from river_runner.spec import SpecError
from river_runner.wire.requests import check_file_name

from ..usage import UsageError


def _split(spec: str, option: str, file_required: bool) -> tuple[str, str]:
    name, sep, file = spec.partition("=")
    if not name.isidentifier() or (file_required and not (sep and file)):
        form = "NAME=FILE" if file_required else "NAME[=FILE]"
        raise UsageError(f"{option} takes {form} with NAME a Python variable name, not {spec!r}")
    return name, file or name


def push_files(specs: list[str]) -> dict[str, bytes]:
    """The remote script's variables: each FILE's bytes under its NAME."""
    values: dict[str, bytes] = {}
    for spec in specs:
        name, file = _split(spec, "--push", file_required=True)
        try:
            values[name] = Path(file).read_bytes()
        except OSError as exc:
            raise UsageError(f"--push {spec}: cannot read {file}: {exc.strerror}") from None
    return values


def file_pushes(specs: list[str]) -> dict[str, str]:
    """A command's pushed files: relative NAME -> local FILE (sent over the data plane and
    placed at NAME in the task's directory before it starts; Client.submit(files=))."""
    files: dict[str, str] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not (name and sep and file):
            raise UsageError(f"--push takes NAME=FILE (NAME a relative path), not {spec!r}")
        try:
            name = check_file_name(name)
        except SpecError as exc:
            raise UsageError(f"--push {spec}: {exc}") from None
        if not Path(file).is_file():
            raise UsageError(f"--push {spec}: no file {file!r} here")
        files[name] = file
    return files


def pull_targets(specs: list[str]) -> dict[str, str]:
    """NAME -> the local file its value is written to."""
    return dict(_split(spec, "--pull", file_required=False) for spec in specs)


def write_pulled(values: dict[str, Any], targets: dict[str, str]) -> None:
    """Write each pulled variable to its file; a note per file on stderr."""
    for name, file in targets.items():
        value = values[name]
        if isinstance(value, bytes):
            data, how = value, "bytes"
        elif isinstance(value, str):
            data, how = value.encode(), "text"
        else:
            data, how = pickle.dumps(value), f"pickled {type(value).__name__}"
        Path(file).write_bytes(data)
        print(f"river: pulled {name} ({how}, {len(data)} bytes) to {file}", file=sys.stderr)
