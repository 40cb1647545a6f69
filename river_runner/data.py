"""The runner's side of the data plane: pushed blobs into a local cache, results back.

A task that pushes values names blobs by digest. Before it starts, the runner fetches each
one it does not already hold from the host (`GET /river/api/runner/data/{digest}?task=ID`:
the host serves only blobs of live tasks placed on this runner) into a cache keyed by
digest, so 8 array members on one node fetch an array once. The task gets the files'
paths in its environment (RIVER_DATA_IN, JSON name -> path) and reads them there: nothing
rides inside its script. The cache is bounded (`max_bytes`); the least recently used
blobs are evicted first, never one a starting task is about to read.

A task that pulls values writes them to RIVER_DATA_OUT; when it ends, the runner uploads
that file (`PUT /river/api/runner/tasks/{id}/pulled`) before it reports the end, so a
client that sees "completed" finds the values already there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import h11
import httpx

from river_runner.blobwrite import SinkError
from river_runner.bulkhttp import BulkHTTPError, Transfer, get_to_file, put_file, url_with
from river_runner.data_out import data_dir_key
from river_runner.digest import file_digest, matches
from river_runner.samehost import FILE_HEADER, LINK_HEADER, PATH_HEADER, file_identity, machine_id

CHUNK = 4 * 1024 * 1024
ENV_IN = "RIVER_DATA_IN"
ENV_OUT = "RIVER_DATA_OUT"
DIGEST_HEADER = "X-River-Digest"
# Stage timings (bench/data_plane.py reads these lines from the runner's log).
log = logging.getLogger("river.runner.data")


def container_data(
    env: dict[str, str], task_dir: Path, inside_dir: str
) -> tuple[dict[str, str], list[str]]:
    """For a container task: its data-plane variables rewritten to paths inside the
    container, and the bind mounts that put them there (pushed blobs read-only, one each;
    the task's out directory writable). The image's root may be read-only, so the mount
    points are made in the task's directory (`task_dir`, mounted at `inside_dir`) first.
    Nothing when the task has no data."""
    updates: dict[str, str] = {}
    volumes: list[str] = []
    if ENV_IN in env:
        (task_dir / "data" / "in").mkdir(parents=True, exist_ok=True)
        inside = {}
        for name, path in json.loads(env[ENV_IN]).items():
            digest = Path(path).name
            (task_dir / "data" / "in" / digest).touch()
            target = f"{inside_dir}/data/in/{digest}"
            if f"{path}:{target}:ro" not in volumes:
                volumes.append(f"{path}:{target}:ro")
            inside[name] = target
        updates[ENV_IN] = json.dumps(inside)
    if ENV_OUT in env:
        out = Path(env[ENV_OUT])
        (task_dir / "data" / "out").mkdir(parents=True, exist_ok=True)
        volumes.append(f"{out.parent}:{inside_dir}/data/out:rw")
        updates[ENV_OUT] = f"{inside_dir}/data/out/{out.name}"
    return updates, volumes


def cache_dir_name(runner: str, data_dir: Path) -> str:
    """The cache's directory name beside the tasks' scratch directories."""
    return f"river-data-{runner}-{data_dir_key(data_dir)}"


def size_text(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 2**20:.1f} MiB"
    except OSError:
        return "size unknown"


T = TypeVar("T")


async def _in_thread(transfer: Transfer, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread of its own (not the loop's shared executor: a GiB
    transfer must neither wait behind other blocking calls nor hold a pool worker for
    seconds); a cancelled caller cuts the transfer off and waits for the thread to end, so
    nothing it writes outlives the caller's cleanup."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed (runner stopping)
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="river-transfer", daemon=True).start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        transfer.cancel()
        with contextlib.suppress(Exception):
            await future
        raise


class DataFetchError(Exception):
    """A pushed blob could not be fetched; the task fails with this message."""


class DataCache:
    def __init__(
        self,
        root: Path,
        max_bytes: int = 16 * 1024**3,
        link: bool = False,
        out: Path | None = None,
    ) -> None:
        self.root = root / "cache"
        # Tasks' pulled values until sent: in memory where the runner can (data_out.py).
        self.out = out or root / "out"
        self.tmp = root / "tmp"
        # Tasks may run as another account (river_runner.task_account): they may open a
        # cached blob they are told the path of (0711: search, not list; files 0644, named
        # by a digest only the pushing user knows) and write only their own out directory.
        for directory in (root, self.root, self.out, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o711)
        for stale in self.tmp.iterdir():
            stale.unlink(missing_ok=True)
        self.max_bytes = max_bytes
        self.fetched_bytes = 0  # bytes fetched from the host since start
        # Take blobs by hard link from a host on this machine (river_runner/samehost.py):
        # only when the caller knows tasks cannot write the cache's files.
        self.link = link and bool(machine_id())

    def path(self, digest: str) -> Path:
        return self.root / digest

    async def fetch(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        task_id: int,
        digest: str,
        base: str = "",
        size: int | None = None,
    ) -> Path:
        """The blob's local file, fetched from the host (at `base`, the leader's URL)
        unless already cached. A cached file of another `size` than the task's reference
        says is fetched again: cache files are not fsynced (river_runner/blobwrite.py), so
        a power loss may leave one shortened under its name."""
        target = self.path(digest)
        if target.exists() and (size is None or target.stat().st_size == size):
            os.utime(target)  # LRU: a hit is a use
            return target
        temp = self.tmp / f"{digest}.{time.monotonic_ns()}"
        started = time.perf_counter()
        url = url_with(base, f"/river/api/runner/data/{digest}", {"task": str(task_id)})
        # Straight into the cache file from a raw socket in a worker thread: `recv_into`
        # reused 4 MiB buffers, hashed and written by a second thread (river_runner/bulkhttp.py).
        transfer = Transfer(url, headers, timeout=60.0)
        counted = [0]
        try:
            linked = await self._link(http, headers, url, temp) if self.link else None
            if linked is not None:
                got = linked
            else:
                got, _ = await _in_thread(transfer, get_to_file, transfer, temp, counted)
            if not await asyncio.to_thread(matches, temp, digest, got):
                raise DataFetchError(f"pushed blob {digest[:12]} arrived damaged (digest)")
            self.evict(temp.stat().st_size)
            os.chmod(temp, 0o644)
            os.replace(temp, target)
            log.info(
                "river-timing task=%s stage=fetch bytes=%d seconds=%.3f how=%s",
                task_id,
                target.stat().st_size,
                time.perf_counter() - started,
                "link" if linked is not None else "http",
            )
        except BulkHTTPError as exc:
            raise DataFetchError(
                f"pushed blob {digest[:12]}: the host said {exc.status} {exc.text[:200]}"
            ) from None
        except SinkError as exc:  # the cache's disk (full, gone): say so, not a traceback
            raise DataFetchError(f"pushed blob {digest[:12]}: writing the cache: {exc}") from None
        except (OSError, h11.ProtocolError, ValueError) as exc:  # the network, the host
            why = str(exc) or type(exc).__name__
            raise DataFetchError(f"pushed blob {digest[:12]}: {why}") from None
        finally:
            self.fetched_bytes += counted[0]
            temp.unlink(missing_ok=True)
        return target

    async def _link(
        self, http: httpx.AsyncClient, headers: dict[str, str], url: str, temp: Path
    ) -> str | None:
        """Link the host's own file of the blob at `temp` and return its digest; None to
        fetch over HTTP instead. A host elsewhere, or a link that fails (another file
        system, no permission, another file at that path), stops the asking for good."""
        try:
            async with http.stream(
                "GET", url, headers={**headers, LINK_HEADER: machine_id()}
            ) as response:
                if response.status_code != 204:
                    self.link = response.status_code >= 400  # a 200 body: host elsewhere
                    return None
                path = response.headers.get(PATH_HEADER, "")
                identity = response.headers.get(FILE_HEADER, "")
        except httpx.HTTPError:
            return None
        try:
            os.link(path, temp)
            if file_identity(temp) != identity:
                raise OSError(f"{path} here is not the host's file")
            return await asyncio.to_thread(file_digest, temp)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            log.info("cannot link pushed blobs from the host (%s): fetching them over HTTP", exc)
            self.link = False
            return None

    def evict(self, room: int, keep: set[str] | None = None) -> None:
        """Remove least recently used blobs until `room` more bytes fit under max_bytes."""
        entries = sorted(
            (entry.stat().st_mtime, entry.stat().st_size, entry.path)
            for entry in os.scandir(self.root)
        )
        used = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if used + room <= self.max_bytes:
                return
            if keep and Path(path).name in keep:
                continue
            Path(path).unlink(missing_ok=True)
            used -= size

    async def prepare(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        task_id: int,
        data: dict[str, Any],
        owner: tuple[int, int] | None = None,
        base: str = "",
    ) -> dict[str, str]:
        """Fetch a task's pushed blobs; the environment that tells it where they are."""
        env: dict[str, str] = {}
        push = data.get("push") or {}
        if push:
            paths = {
                name: str(
                    await self.fetch(http, headers, task_id, ref["digest"], base, ref.get("size"))
                )
                for name, ref in push.items()
            }
            env[ENV_IN] = json.dumps(paths)
        if data.get("pull"):
            directory = self.out / str(task_id)
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(mode=0o700)
            if owner is not None and owner[0] != os.geteuid():
                os.chown(directory, *owner)
            env[ENV_OUT] = str(directory / "pulled")
        return env

    async def send_result(
        self, http: httpx.AsyncClient, headers: dict[str, str], task_id: int, base: str = ""
    ) -> str | None:
        """Upload what the task wrote to RIVER_DATA_OUT, if anything; why not, if it failed."""
        directory = self.out / str(task_id)
        result = directory / "pulled"
        try:
            if not result.exists():
                return None
            started = time.perf_counter()
            # BLAKE3 over every core from the page cache (the task wrote it just now).
            digest = await asyncio.to_thread(file_digest, result)
            size = result.stat().st_size
            hashed = time.perf_counter()
            # Sent from a thread of its own in 4 MiB writes: no file read and no work per
            # chunk on the event loop (river_runner/bulkhttp.py).
            url = url_with(base, f"/river/api/runner/tasks/{task_id}/pulled")
            transfer = Transfer(url, headers, timeout=120.0)
            status, text = await _in_thread(
                transfer, put_file, transfer, result, {DIGEST_HEADER: digest}
            )
            log.info(
                "river-timing task=%s stage=result-hash bytes=%d seconds=%.3f",
                task_id,
                size,
                hashed - started,
            )
            log.info(
                "river-timing task=%s stage=result-upload bytes=%d seconds=%.3f",
                task_id,
                size,
                time.perf_counter() - hashed,
            )
            if status >= 400:
                return f"the host refused the pulled values: {text[:300]}"
            return None
        except (OSError, h11.ProtocolError, ValueError) as exc:
            # A refusal answered from the headers (413: over a bound) cuts the body off, so
            # httpx may see only the closed connection: say so rather than print nothing.
            why = str(exc) or type(exc).__name__
            return (
                f"the pulled values ({size_text(result)}) could not be sent: {why} (over "
                "data_task_max_bytes or data_user_max_bytes, if the host cut it off at once)"
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)
