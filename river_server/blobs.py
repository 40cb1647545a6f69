"""Per-task blobs: small files the host keeps with a task (e.g. the values a cell `--pull`s).

Blobs live in `<data_dir>/blobs/<task id>/<name>`, written atomically (temp file + rename),
each at most `max_bytes` (`c.RiverHost.blob_max_bytes`). Clients read and write them through
`/river/api/tasks/{id}/blobs/{name}`; names starting with `river-` are written only by the
host.

The host fills the `river-pull` blob itself from a task's output: a `--pull` epilogue prints
its pickled results as marker lines (see river_runner.protocol.PULL_MARKER), so the values
come back through the log channel every backend already has, without the task needing a
network route or a credential. `append_log` takes such lines out of the log before it is
stored and streamed, and assembles their parts here.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from river_runner.protocol import LOG_STREAM_RIVER, PULL_BLOB, PULL_ERROR_MARKER, PULL_MARKER
from river_server.private import make_private, open_private

if TYPE_CHECKING:
    from river_server.logstore import LogStore

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESERVED_PREFIX = "river-"
_PART = re.compile(r"(\d+)/(\d+):(.*)", re.DOTALL)


class BlobError(Exception):
    """A blob request that cannot be served; `status` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def format_size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def check_name(name: str, *, writing: bool = False) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise BlobError(
            400,
            f"bad blob name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, "
            "not starting with a dot or dash)",
        )
    if writing and name.startswith(RESERVED_PREFIX):
        raise BlobError(403, f"blob names starting with {RESERVED_PREFIX!r} are the host's")


class BlobStore:
    def __init__(self, root: Path, max_bytes: int, user_max_bytes: int = 1024**3) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.user_max_bytes = user_max_bytes  # all blobs of one user's tasks together
        make_private(root)

    def _dir(self, task_id: int) -> Path:
        return self.root / str(int(task_id))

    def too_large(self, name: str, size: int) -> BlobError:
        return BlobError(
            413,
            f"blob {name!r} is {format_size(size)}; this host keeps at most "
            f"{format_size(self.max_bytes)} per blob (c.RiverHost.blob_max_bytes)",
        )

    def usage(self, task_ids: Iterable[int]) -> int:
        """Bytes the blobs of these tasks take (a user's total, given their task IDs)."""
        present = {entry.name for entry in os.scandir(self.root) if entry.is_dir()}
        total = 0
        for task_id in task_ids:
            if str(int(task_id)) in present:
                total += sum(
                    entry.stat().st_size
                    for entry in os.scandir(self._dir(task_id))
                    if entry.is_file(follow_symlinks=False)
                )
        return total

    def check_user_total(self, owner: str, used: int, adding: int) -> None:
        """Raise 413 when `adding` bytes would take `owner`'s blobs past user_max_bytes."""
        if used + adding > self.user_max_bytes:
            raise BlobError(
                413,
                f"{owner}'s blobs take {format_size(used)}; {format_size(adding)} more would "
                f"pass {format_size(self.user_max_bytes)}, the most this host keeps per user "
                "(c.RiverHost.blob_user_max_bytes): delete old tasks' blobs or use shared "
                "storage",
            )

    # ---- plain blobs ----------------------------------------------------------------
    def put(self, task_id: int, name: str, data: bytes) -> dict[str, Any]:
        check_name(name)
        if len(data) > self.max_bytes:
            raise self.too_large(name, len(data))
        directory = make_private(self._dir(task_id))
        temp = directory / f".{name}.tmp"
        with open_private(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, directory / name)
        (directory / f".{name}.error").unlink(missing_ok=True)
        return {"name": name, "size": len(data)}

    def get(self, task_id: int, name: str) -> bytes:
        check_name(name)
        directory = self._dir(task_id)
        error = directory / f".{name}.error"
        if error.exists():
            raise BlobError(409, error.read_text())
        try:
            return (directory / name).read_bytes()
        except FileNotFoundError:
            raise BlobError(404, f"task {task_id} has no blob {name!r}") from None

    def list(self, task_id: int) -> list[dict[str, Any]]:
        directory = self._dir(task_id)
        if not directory.is_dir():
            return []
        return [
            {"name": path.name, "size": path.stat().st_size}
            for path in sorted(directory.iterdir())
            if not path.name.startswith(".")
        ]

    def set_error(self, task_id: int, name: str, message: str) -> None:
        directory = make_private(self._dir(task_id))
        (directory / name).unlink(missing_ok=True)
        (directory / f".{name}.part").unlink(missing_ok=True)
        with open_private(directory / f".{name}.error", "w") as handle:
            handle.write(message)

    def delete_task(self, task_id: int) -> None:
        shutil.rmtree(self._dir(task_id), ignore_errors=True)

    # ---- pulled values from the log ---------------------------------------------------
    def append_log(
        self, logs: LogStore, task_id: int, lines: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Store a runner's lines in `logs`, diverting pull markers; return the fresh lines.

        A marker line keeps its sequence number in the log (so the log stays gapless and a
        re-sent batch is still recognised) but its text becomes a short note on the
        "river" stream; text printed before the marker on the same line stays stdout.
        Parts are taken only from lines the log had not seen, so a re-sent batch never
        appends a part twice.
        """
        markers: dict[int, str] = {}
        stored: list[dict[str, Any]] = []
        for line in lines:
            text = str(line.get("text", ""))
            at = text.find("\x00river-pull")
            if at < 0 or line.get("stream", "stdout") != "stdout":
                stored.append(line)
                continue
            marker = text[at:]
            if not (marker.startswith(PULL_MARKER) or marker.startswith(PULL_ERROR_MARKER)):
                stored.append(line)
                continue
            seq = int(line["seq"])
            markers[seq] = marker
            if at > 0:
                stored.append({**line, "text": text[:at]})
            else:
                stored.append({**line, "stream": LOG_STREAM_RIVER, "text": _note(marker)})
        fresh = logs.append(task_id, stored)
        if markers:
            for line in fresh:
                marker = markers.get(line["seq"])
                if marker is not None:
                    self._take_marker(task_id, marker)
        return fresh

    def _take_marker(self, task_id: int, marker: str) -> None:
        if marker.startswith(PULL_ERROR_MARKER):
            self.set_error(task_id, PULL_BLOB, marker[len(PULL_ERROR_MARKER) :].strip())
            return
        match = _PART.fullmatch(marker[len(PULL_MARKER) :])
        if not match:
            self.set_error(task_id, PULL_BLOB, "the task printed a malformed pull marker")
            return
        part, parts, payload = int(match[1]), int(match[2]), match[3]
        directory = make_private(self._dir(task_id))
        partial = directory / f".{PULL_BLOB}.part"
        if part == 1:
            partial.unlink(missing_ok=True)
            (directory / f".{PULL_BLOB}.error").unlink(missing_ok=True)
        elif not partial.exists():
            return  # an earlier part was refused (too large or malformed); error already set
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self.set_error(task_id, PULL_BLOB, "the task printed a corrupt pull marker")
            return
        with open_private(partial, "ab") as handle:
            handle.write(data)
            size = handle.tell()
        if size > self.max_bytes:
            self.set_error(
                task_id,
                PULL_BLOB,
                f"the pulled values are larger than {format_size(self.max_bytes)}, the most "
                "this host keeps per task (c.RiverHost.blob_max_bytes); write large results "
                "to shared storage instead",
            )
            return
        if part == parts:
            os.replace(partial, directory / PULL_BLOB)


def _note(marker: str) -> str:
    if marker.startswith(PULL_ERROR_MARKER):
        return "[river] the pulled values could not be sent"
    match = _PART.fullmatch(marker[len(PULL_MARKER) :])
    if not match:
        return "[river] malformed pull marker"
    return f"[river] pulled values, part {match[1]} of {match[2]} (kept as blob {PULL_BLOB})"
