"""Pushed files of a task (`river run --push NAME=FILE`, `Client.submit(files=...)`).

Why this shape: a file travels as a data-plane blob like a pushed value (content-addressed,
fetched once per runner into the digest cache by `DataCache.fetch`), and is placed under
its relative NAME before the task starts, so a command reads it as a plain file:
- process tasks: copied into the task's own directory (its scratch directory, owned by
  the task's account; else `<task dir>/files`), which is the working directory unless the
  task names one; RIVER_FILES_DIR says where in either case. A copy, not a link: the
  cached blob is shared by tasks and must stay unchanged.
- docker tasks: each cached blob bind-mounted read-only at NAME under the container's
  working directory (the task's workdir, else the image's): no copy at all.
NAMEs are checked by `check_file_name` (relative, no `..`) on the client, host and here.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path
from typing import Any

from river_runner.wire.requests import check_file_name

ENV_FILES_DIR = "RIVER_FILES_DIR"


async def fetch_files(
    cache: Any, http: Any, headers: dict[str, str], task_id: int, files: dict, base: str
) -> dict[str, str]:
    """NAME -> the cached blob's path on this runner (fetched from the host if needed)."""
    paths: dict[str, str] = {}
    for name, ref in files.items():
        paths[check_file_name(name)] = str(
            await cache.fetch(http, headers, task_id, ref["digest"], base)
        )
    return paths


def place_files(files: dict[str, str], directory: Path, owner: tuple[int, int] | None) -> None:
    """Copy each cached blob to directory/NAME (parents made), owned by `owner` if given.
    The directory is the task's fresh own one: nothing else writes there yet."""
    for name, source in files.items():
        target = directory / check_file_name(name)
        made = []
        parent = target.parent
        while not parent.exists():
            made.append(parent)
            parent = parent.parent
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
        if owner is not None and owner[0] != os.geteuid():
            for path in [target, *made]:
                os.chown(path, *owner)


def container_mounts(files: dict[str, str], workdir: str) -> list[str]:
    """Read-only bind mounts of the cached blobs at NAME under `workdir` (absolute)."""
    base = workdir if workdir.startswith("/") else "/"
    return [
        f"{source}:{posixpath.join(base, check_file_name(name))}:ro"
        for name, source in files.items()
    ]
