"""The data plane's store: content-addressed blobs for pushed values and pulled results.

Why this shape (docs/design-decisions.md, "Data plane"):
- A blob is named by the BLAKE3 of its bytes (river_runner/digest.py) and stored once (`objects/<aa>/<digest>`), so
  the same array pushed to 32 array members or to a re-run is uploaded and kept once.
- Bytes are written to a temp file as they arrive and hashed on the way; only a complete
  upload whose digest matches its name is renamed into place. A mismatch or a dropped
  connection removes the temp file: nothing half-written is ever visible.
- Ownership is a reference per user (`refs/<user key>/<digest>`, an empty file whose mtime
  is its last use). A user reads only blobs they hold a reference to, and gets one only by
  sending the bytes: "do you have it" answers are per user, so nobody learns that another
  user has a digest. Uploading bytes already stored costs no second copy.
- References live in the data directory, not the database, so this needs no schema change;
  they are swept with the blob they point at.
- A pulled result is recorded per task (`results/<task id>`, holding its digest) and is
  referenced by the task's owner like any upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from river_runner.digest import hasher as digest_hasher
from river_runner.digest import matches
from river_runner.protocol import TERMINAL_STATES
from river_server import db
from river_server.blobs import format_size
from river_server.private import make_private, open_private

DIGEST = re.compile(r"[0-9a-f]{64}")
# Bytes gathered before one hash update and one write: Tornado hands the body over in
# 64 KiB pieces, and BLAKE3 spreads only larger updates over the cores.
BATCH = 4 * 1024 * 1024


class DataError(Exception):
    """A data-plane request that cannot be served; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_digest(digest: str) -> str:
    if not DIGEST.fullmatch(digest):
        raise DataError(400, f"bad digest {digest!r}: give the BLAKE3 of the bytes, 64 hex digits")
    return digest


def user_key(user: str) -> str:
    """A file name for any user name (names may hold characters a path must not)."""
    return hashlib.sha256(user.encode()).hexdigest()[:32]


class Upload:
    """One blob arriving: hashed and written as it comes, published only when whole."""

    def __init__(self, store: DataStore, owner: str, digest: str, declared: int) -> None:
        self.store, self.owner, self.digest, self.declared = store, owner, digest, declared
        self.received = 0
        self._hash = digest_hasher()
        self._batch = bytearray(max(0, min(BATCH, declared)))
        self._filled = 0
        make_private(store.tmp)
        self.temp = store.tmp / f"{digest}.{os.getpid()}.{time.monotonic_ns()}"
        self._file = open_private(self.temp, "wb")
        if declared > 0:
            # Reserve the blocks at once: growing a file write by write costs the file
            # system far more (4.5 s against 0.2 s per GiB on ext4 here, docs/performance.md).
            with contextlib.suppress(OSError):
                os.posix_fallocate(self._file.fileno(), 0, declared)

    def write(self, chunk: bytes) -> None:
        self.accept(len(chunk))
        self.absorb(chunk)

    def accept(self, size: int) -> None:
        """Count `size` more bytes arriving (on the event loop); 400 past the declared."""
        self.received += size
        self.store.bytes_received += size
        if self.received > self.declared:
            raise DataError(400, f"the body is longer than its Content-Length ({self.declared})")

    def absorb(self, chunk: bytes) -> None:
        """Hash and write accepted bytes (in the upload's worker thread: see uploadsink),
        gathered into BATCH-sized pieces."""
        view = memoryview(chunk)
        while view:
            if self._filled == len(self._batch):  # full (or a body longer than declared)
                self._flush()
                if not self._batch:
                    self._hash.update(view)
                    self._file.write(view)
                    return
            take = min(len(view), len(self._batch) - self._filled)
            self._batch[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
        if self._filled == len(self._batch):
            self._flush()

    def _flush(self) -> None:
        if self._filled:
            with memoryview(self._batch)[: self._filled] as data:
                self._hash.update(data)
                self._file.write(data)
            self._filled = 0

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.temp.unlink(missing_ok=True)

    def finish(self) -> dict[str, object]:
        """Publish the blob and give `owner` a reference; a wrong digest leaves nothing."""
        try:
            self._flush()
        finally:
            self._file.close()
        actual = self._hash.hexdigest()
        if self.received != self.declared or not matches(self.temp, self.digest, actual):
            self.temp.unlink(missing_ok=True)
            raise DataError(
                400,
                f"the {self.received} bytes sent hash to {actual}, not {self.digest}: send "
                "the bytes whose BLAKE3 names the blob",
            )
        target = self.store.object_path(self.digest)
        make_private(target.parent)
        if target.exists():
            self.temp.unlink(missing_ok=True)  # same bytes already stored: one copy
        else:
            os.replace(self.temp, target)
        self.store.add_ref(self.owner, self.digest)
        return {"digest": self.digest, "size": self.received}


class DataStore:
    """Blobs by digest with per-user references, bounds and retention."""

    def __init__(
        self,
        root: Path,
        *,
        user_max_bytes: int,
        task_max_bytes: int,
        retention: float,
    ) -> None:
        self.root = make_private(root)
        self.objects = make_private(root / "objects")
        self.refs = make_private(root / "refs")
        self.results = make_private(root / "results")
        self.tmp = make_private(root / "tmp")
        self.user_max_bytes = user_max_bytes
        self.task_max_bytes = task_max_bytes
        self.retention = retention
        self.bytes_received = 0  # all upload bytes since start (tests and metrics)
        self._grants: dict[int, dict[str, int]] = {}  # task -> digests a put may fetch
        for stale in self.tmp.iterdir():  # uploads cut off by a host restart
            stale.unlink(missing_ok=True)

    # ---- paths and references -------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    def _ref(self, user: str, digest: str) -> Path:
        return self.refs / user_key(user) / digest

    def add_ref(self, user: str, digest: str) -> None:
        path = self._ref(user, digest)
        make_private(path.parent)
        with open_private(path, "wb"):
            pass
        os.utime(path)

    def has(self, user: str, digest: str) -> bool:
        """Whether `user` holds this blob (never whether anyone else does)."""
        return self._ref(user, digest).exists() and self.object_path(digest).exists()

    def size(self, digest: str) -> int:
        return self.object_path(digest).stat().st_size

    def open_for(self, user: str, digest: str) -> Path:
        """The blob's file, if `user` holds it; 404 otherwise (the same answer whether or
        not another user has it)."""
        check_digest(digest)
        if not self.has(user, digest):
            raise DataError(404, f"you have no blob {digest}: upload it first")
        os.utime(self._ref(user, digest))
        return self.object_path(digest)

    def usage(self, user: str) -> int:
        directory = self.refs / user_key(user)
        if not directory.is_dir():
            return 0
        total = 0
        for entry in os.scandir(directory):
            try:
                total += self.size(entry.name)
            except FileNotFoundError:
                continue
        return total

    # ---- bounds ---------------------------------------------------------------------
    def check_room(self, user: str, adding: int, what: str = "this upload") -> None:
        """Raise 413 before a byte is stored when `adding` passes a bound; say which."""
        if adding > self.task_max_bytes:
            raise DataError(
                413,
                f"{what} is {format_size(adding)}; this host takes at most "
                f"{format_size(self.task_max_bytes)} of pushed or pulled data per task "
                "(c.RiverHost.data_task_max_bytes)",
            )
        used = self.usage(user)
        if used + adding > self.user_max_bytes:
            raise DataError(
                413,
                f"{what} is {format_size(adding)} and {user}'s data already takes "
                f"{format_size(used)}; this host keeps at most "
                f"{format_size(self.user_max_bytes)} per user "
                "(c.RiverHost.data_user_max_bytes): wait for old blobs to expire or use "
                "shared storage",
            )

    def begin(self, user: str, digest: str, declared: int) -> Upload:
        check_digest(digest)
        self.check_room(user, declared, "this upload")
        return Upload(self, user, digest, declared)

    # ---- pulled results -------------------------------------------------------------
    def set_result(self, task_id: int, digest: str) -> None:
        with open_private(self.results / str(int(task_id)), "w") as handle:
            handle.write(digest)

    def result(self, task_id: int) -> str | None:
        try:
            return (self.results / str(int(task_id))).read_text().strip() or None
        except FileNotFoundError:
            return None

    # ---- `river put`: a runner may fetch a blob granted to one of its tasks -----------
    def grant(self, task_id: int, digest: str) -> None:
        """Let the runner of `task_id` fetch `digest` while a put is in flight (in memory:
        a put is one request; a restarted host has none in flight)."""
        self._grants.setdefault(int(task_id), {}).setdefault(digest, 0)
        self._grants[int(task_id)][digest] += 1

    def revoke(self, task_id: int, digest: str) -> None:
        held = self._grants.get(int(task_id), {})
        held[digest] = held.get(digest, 1) - 1
        if held[digest] <= 0:
            held.pop(digest, None)
        if not held:
            self._grants.pop(int(task_id), None)

    def granted(self, task_id: int, digest: str) -> bool:
        return digest in self._grants.get(int(task_id), {})

    # ---- retention --------------------------------------------------------------------
    def sweep(
        self, live_tasks: Iterable[int], in_use: Iterable[str], now: float | None = None
    ) -> int:
        """Drop results of tasks not in `live_tasks` after the retention period, references
        unused for that long (unless a live task still needs the digest), then every blob
        nobody references. Returns the number of blobs removed."""
        now = time.time() if now is None else now
        cutoff = now - self.retention
        live = {str(int(t)) for t in live_tasks}
        keep = set(in_use)
        for entry in os.scandir(self.results):
            if entry.name not in live and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
            else:
                keep.add(Path(entry.path).read_text().strip())
        referenced: set[str] = set()
        for user_dir in os.scandir(self.refs):
            for ref in os.scandir(user_dir.path):
                if ref.name not in keep and ref.stat().st_mtime < cutoff:
                    os.unlink(ref.path)
                else:
                    referenced.add(ref.name)
        removed = 0
        for prefix in os.scandir(self.objects):
            for blob in os.scandir(prefix.path):
                if blob.name not in referenced and blob.name not in keep:
                    os.unlink(blob.path)
                    removed += 1
        return removed


def digests_in_use(sessions: Callable[[], Session]) -> tuple[list[int], set[str]]:
    """Unfinished tasks and the blobs they push: the sweep keeps both."""
    terminal = [s.value for s in TERMINAL_STATES]
    with sessions() as session:
        rows = session.execute(
            select(db.Task.id, db.Task.spec).where(db.Task.state.not_in(terminal))
        ).all()
    digests: set[str] = set()
    for _, spec in rows:
        data = (spec or {}).get("data") or {}
        for refs in (data.get("push") or {}, data.get("files") or {}):
            digests.update(str(ref.get("digest")) for ref in refs.values())
    return [row[0] for row in rows], digests


def sweep_interval(retention: float) -> float:
    """Seconds between sweeps: a quarter of the retention, between 1 s and 10 minutes."""
    return min(600.0, max(1.0, retention / 4))
