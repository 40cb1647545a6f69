"""Files into and out of a running task (`river put` / `river get`), on the runner.

Why this shape (docs/security.md, "Files in and out of tasks"):
- A put arrives as a data-plane blob holding a tar stream whose single top-level member is
  named like PATH's last component; the runner fetches it into its digest cache as it does
  a pushed value, then places it.
- Process tasks: PATH is relative to the task's own directory and must resolve inside it,
  symlinks included. Unpacking and packing run in a child process *as the task's account*
  (stdlib only, `python -S -c`), so even a symlink the task swaps in during the copy leads
  only where that account may write anyway. Members are unpacked with tarfile's "data"
  filter: no absolute names, no `..`, no links out, no devices, no setuid bits.
- Docker tasks and VPSes: the docker SDK (`put_archive` / `get_archive`), which resolves
  PATH inside the container's root; the archive's members are checked here first and
  owned by the container's user.
"""

from __future__ import annotations

import asyncio
import io
import os
import posixpath
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

REFUSED = 2  # the helper's exit code for a PATH or archive it will not touch
MISSING = 3  # ... for a PATH that does not exist (get) or a directory already there (put)


class FileError(Exception):
    """A put or get that cannot be done; `status` is the HTTP code the host passes on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Leading bytes of the compressed streams tarfile (and dockerd) would expand.
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"(\xb5/\xfd": "zstd"}


def check_archive(blob: BinaryIO, top: str) -> None:
    """Refuse an archive with more than one top-level name, one unlike `top`, an absolute
    or `..` member, a link or a device (before anything is written). Only a plain tar is
    read: a compressed one expands beyond the blob's bound (a gzip of zeros a thousandfold),
    so the bytes placed are never more than the bytes the owner's bounds let them upload."""
    start = blob.read(6)
    blob.seek(0)
    for magic, kind in COMPRESSED.items():
        if start.startswith(magic):
            raise FileError(
                400,
                f"the archive is {kind}-compressed; put takes a plain "
                "(uncompressed) tar stream, as the client sends",
            )
    try:
        _check_members(blob, top)
    except tarfile.TarError as exc:
        raise FileError(400, f"the blob is not a plain (uncompressed) tar stream: {exc}") from None


def _check_members(blob: BinaryIO, top: str) -> None:
    with tarfile.open(fileobj=blob, mode="r|") as tar:
        for member in tar:
            name = member.name
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if name.startswith("/") or ".." in parts:
                raise FileError(400, f"the archive member {name!r} is absolute or has '..'")
            if not parts or parts[0] != top:
                raise FileError(400, f"the archive's members must all be under {top!r}")
            if not (member.isfile() or member.isdir()):
                raise FileError(400, f"{name!r}: only files and directories can be put")


# The child run as the task's account: stdlib only (-S), no River imports.
HELPER = r"""
import os, sys, tarfile, tempfile
REFUSED, MISSING = 2, 3

def fail(code, message):
    sys.stderr.write(message)
    sys.exit(code)

def resolve(root, path):
    if os.path.isabs(path) or ".." in path.split("/"):
        fail(REFUSED, "PATH %r must be relative to the task's directory, without '..'" % path)
    root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root, path))
    if target == root or not target.startswith(root + os.sep):
        fail(REFUSED, "PATH %r resolves outside the task's directory (a symlink?)" % path)
    return target

def put(root, path, blob):
    target = resolve(root, path)
    if os.path.isdir(target) and not os.path.islink(target):
        fail(MISSING, "%r is a directory already: put to a new PATH" % path)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    resolve(root, os.path.relpath(parent, os.path.realpath(root)) + "/x")
    stage = tempfile.mkdtemp(prefix=".river-put-", dir=parent)
    try:
        with tarfile.open(blob, "r:") as tar:
            tar.extractall(stage, filter="data")
        (entry,) = os.listdir(stage)
        os.replace(os.path.join(stage, entry), target)
    finally:
        for base, dirs, files in os.walk(stage, topdown=False):
            for name in files:
                os.unlink(os.path.join(base, name))
            for name in dirs:
                os.rmdir(os.path.join(base, name))
        os.rmdir(stage)

def get(root, path):
    target = resolve(root, path)
    if not os.path.exists(target):
        fail(MISSING, "no file or directory %r in the task's directory" % path)
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
        tar.add(target, arcname=os.path.basename(target))

if sys.argv[1] == "put":
    put(*sys.argv[2:5])
else:
    get(*sys.argv[2:4])
"""


async def _helper(
    python: str, account: tuple[int, int] | None, args: list[str], stdout: Any
) -> None:
    """Run HELPER as `account` (None: as the runner's own); raise FileError on refusal."""
    owner: dict[str, Any] = {}
    if account is not None and account[0] != os.geteuid():
        owner = {"user": account[0], "group": account[1], "extra_groups": []}
    proc = await asyncio.create_subprocess_exec(
        python,
        "-S",
        "-c",
        HELPER,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        cwd="/",
        **owner,
    )
    _, err = await proc.communicate()
    message = err.decode("utf-8", "replace").strip()
    if proc.returncode == REFUSED:
        raise FileError(400, message)
    if proc.returncode == MISSING:
        raise FileError(409 if args[0] == "put" else 404, message)
    if proc.returncode != 0:
        raise FileError(500, f"the copy failed: {message.splitlines()[-1:] or message}")


def _check_file(blob: Path, top: str) -> None:
    with open(blob, "rb") as handle:
        check_archive(handle, top)


async def put_process(
    python: str, account: tuple[int, int] | None, root: Path, path: str, blob: Path
) -> None:
    """Unpack the tar `blob` at `path` inside the process task's directory `root`."""
    await asyncio.to_thread(_check_file, blob, posixpath.basename(path.rstrip("/")))
    await _helper(python, account, ["put", str(root), path, str(blob)], asyncio.subprocess.DEVNULL)


async def get_process(
    python: str, account: tuple[int, int] | None, root: Path, path: str, out: Path
) -> None:
    """Pack `path` inside the process task's directory `root` into the tar file `out`."""
    with open(out, "wb") as handle:
        await _helper(python, account, ["get", str(root), path], handle)


# ---- docker --------------------------------------------------------------------------


def container_path(container: Any, path: str) -> str:
    """PATH inside the container: relative ones from its working directory."""
    if path.startswith("/"):
        return posixpath.normpath(path)
    workdir = (container.attrs.get("Config") or {}).get("WorkingDir") or "/"
    return posixpath.normpath(posixpath.join(workdir, path))


def _container_owner(container: Any) -> tuple[int, int]:
    user = str((container.attrs.get("Config") or {}).get("User") or "0")
    uid, _, gid = user.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        return 0, 0  # a user name: resolving it needs the image's passwd; root owns


def _owned(blob: BinaryIO, uid: int, gid: int) -> io.BytesIO | BinaryIO:
    """The archive with every member owned by uid:gid (the container's user)."""
    if (uid, gid) == (0, 0):
        return blob
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=blob, mode="r|") as source,
        tarfile.open(fileobj=out, mode="w") as target,
    ):
        for member in source:
            member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    out.seek(0)
    return out


def put_docker(container: Any, path: str, blob: Path) -> str:
    """Unpack the tar `blob` at `path` in the container (blocking); the path used."""
    target = container_path(container, path)
    if target == "/":
        raise FileError(400, "PATH must name a file or directory, not /")
    with open(blob, "rb") as handle:
        check_archive(handle, posixpath.basename(target))
    parent = posixpath.dirname(target)
    made = container.exec_run(["mkdir", "-p", parent])
    if made.exit_code != 0:
        raise FileError(409, f"cannot make {parent} in the container: {made.output[-300:]!r}")
    with open(blob, "rb") as handle:
        if not container.put_archive(parent, _owned(handle, *_container_owner(container))):
            raise FileError(500, f"the container refused the archive at {parent}")
    return target


def get_docker(container: Any, path: str, out: Path) -> None:
    """Pack `path` in the container into the tar file `out` (blocking)."""
    import docker

    try:
        stream, _ = container.get_archive(container_path(container, path))
    except docker.errors.NotFound:
        raise FileError(404, f"no file or directory {path!r} in the container") from None
    with open(out, "wb") as handle:
        for chunk in stream:
            handle.write(chunk)
