"""Files and directories as tar streams for `put` / `get` (no I/O to the host here).

A put packs LOCAL into a temp file whose single top-level member is named like the remote
PATH's last component (the runner places that member at PATH), with the permission bits
kept and no owner names; the BLAKE3 of that file names the blob. A get unpacks what the
runner packed with tarfile's "data" filter: absolute names, `..`, links pointing out and
device files are refused, and setuid bits dropped, whatever the remote side sent.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from river_runner.digest import file_digest
from river_runner.ids import parse_id
from river_runner.spec import SpecError
from river_runner.wire.requests import check_file_name

from .errors import RiverError
from .progress import Progress

CHUNK = 4 * 1024 * 1024
_REMOTE = re.compile(r"([^:/\s]+):(.+)")


def split_remote(spec: str) -> tuple[str, str]:
    """`ID:PATH` -> (ID, PATH); a RiverError that shows the form otherwise."""
    match = _REMOTE.fullmatch(spec.strip())
    if not match:
        raise RiverError(f"{spec!r} is not ID:PATH (e.g. 123456:data/input.csv)")
    try:
        parse_id(match[1])
    except ValueError:
        raise RiverError(f"{spec!r}: {match[1]!r} is not a task or VPS ID") from None
    return match[1], match[2]


def remote_name(path: str) -> str:
    name = posixpath.basename(path.rstrip("/"))
    if name in ("", ".", ".."):
        raise RiverError(f"PATH {path!r} must end in a file or directory name")
    return name


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def pack(local: str | os.PathLike[str], path: str) -> tuple[Path, str, int]:
    """Tar LOCAL (file or directory) under PATH's name into a temp file: (file, BLAKE3,
    size). The caller removes the file."""
    source = Path(local)
    if not source.exists():
        raise RiverError(f"no file or directory {str(source)!r} here to put")
    handle, name = tempfile.mkstemp(prefix="river-put-", suffix=".tar")
    os.close(handle)
    out = Path(name)
    try:
        with tarfile.open(out, "w") as tar:
            tar.add(source, arcname=remote_name(path), filter=_plain)
        digest = file_digest(out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out, digest, out.stat().st_size


def file_name(name: str) -> str:
    """A pushed file's NAME, checked as the host and runner check it (relative, no `..`)."""
    try:
        return check_file_name(str(name))
    except SpecError as exc:
        raise RiverError(str(exc)) from None


def file_blob(local: str | os.PathLike[str]) -> tuple[str, int]:
    """A local file's (BLAKE3, size): its name on the data plane."""
    source = Path(local)
    if not source.is_file():
        raise RiverError(f"no file {str(source)!r} here to push")
    return file_digest(source), source.stat().st_size


def file_chunks(path: Path, progress: Progress) -> Iterator[bytes]:
    with open(path, "rb") as data:
        while chunk := data.read(CHUNK):
            progress.add(len(chunk))
            yield chunk


def unpack(data: bytes | bytearray | memoryview, local: str | os.PathLike[str]) -> Path:
    """Unpack a get's archive at LOCAL (inside it, if LOCAL is a directory); the path."""
    target = Path(local)
    with tempfile.TemporaryDirectory(prefix=".river-get-", dir=target.parent or ".") as stage:
        try:
            with tarfile.open(fileobj=_Reader(data), mode="r:") as tar:
                tar.extractall(stage, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise RiverError(f"the files from the task could not be unpacked: {exc}") from None
        entries = os.listdir(stage)
        if len(entries) != 1:
            raise RiverError("the task sent no files (an empty archive)")
        if target.is_dir():
            target = target / entries[0]
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(os.path.join(stage, entries[0]), target)
    return target


class _Reader:
    """A read-only file over the downloaded bytes (no copy)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.view, self.at = memoryview(data), 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size < 0 else min(self.at + size, len(self.view))
        chunk = bytes(self.view[self.at : end])
        self.at = end
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        self.at = {0: 0, 1: self.at, 2: len(self.view)}[whence] + offset
        return self.at

    def tell(self) -> int:
        return self.at
