"""Pushed values and pulled results as blobs (the data plane), not inside scripts or logs.

A value is pickled with protocol 5, its large buffers (numpy, pandas, torch, ...) kept
out-of-band: a frame is a small header, the pickle stream, then each buffer padded to 64
bytes, and is streamed to the host straight from the buffers' memory (no base64, no
joined copy). The frame's BLAKE3 (river_runner/digest.py) names it, so the client asks the host first (POST /data)
and uploads only what the caller does not already hold there.

The task reads its frames from the runner's cache (paths in RIVER_DATA_IN) through a
copy-on-write mmap, so an array arrives writable without being read into memory twice,
and writes its pulled values as one frame to RIVER_DATA_OUT, which the runner uploads.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from river_runner import digest as blob_digest

from .payload import LOAD_FAILED_AND_RUN_CELL, PayloadError
from .progress import Progress

# How the remote script's own errors start on the task's stderr (a value it cannot load or
# send back): TaskHandle.result() turns such a line into a PayloadError.
DATA_SCRIPT_ERROR = "river: cannot "

MAGIC = b"RVRPK5\x00\x00"
ALIGN = 64
CHUNK = 4 * 1024 * 1024


def _pad(size: int) -> int:
    return -size % ALIGN


@dataclass
class Frame:
    """One value, pickled with out-of-band buffers; `parts()` yields its bytes in order."""

    header: bytes
    body: bytes
    buffers: list[memoryview]
    digest: str = ""
    size: int = 0
    _parts: list[Any] = field(default_factory=list)

    def parts(self) -> Iterator[memoryview | bytes]:
        yield self.header
        yield self.body
        if self.buffers:
            yield b"\0" * _pad(len(self.header) + len(self.body))
        for buffer in self.buffers:
            for start in range(0, len(buffer), CHUNK):
                yield buffer[start : start + CHUNK]
            yield b"\0" * _pad(len(buffer))


def frame(value: Any, name: str = "value") -> Frame:
    """Pickle `value` (protocol 5, buffers out-of-band) and name it by its BLAKE3."""
    if isinstance(value, Frame):
        return value
    buffers: list[pickle.PickleBuffer] = []
    try:
        body = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception as exc:
        raise PayloadError(
            f"cannot push {name!r}: this {type(value).__name__} cannot be pickled "
            f"({type(exc).__name__}: {exc})"
        ) from None
    views = [buffer.raw() for buffer in buffers]
    header = MAGIC + struct.pack(f"<QQ{len(views)}Q", len(body), len(views), *map(len, views))
    made = Frame(header, body, views)
    hasher = blob_digest.hasher()
    for part in made.parts():
        hasher.update(part)
        made.size += len(part)
    made.digest = hasher.hexdigest()
    return made


def unframe(data: memoryview | bytes | bytearray) -> Any:
    """The value in a frame; its buffers are views into `data` (no copies)."""
    view = memoryview(data)
    if bytes(view[:8]) != MAGIC:
        raise PayloadError("the pulled values are damaged (not a River frame)")
    body_len, count = struct.unpack_from("<QQ", view, 8)
    sizes = struct.unpack_from(f"<{count}Q", view, 24)
    at = 24 + 8 * count
    body = view[at : at + body_len]
    at += body_len
    if count:
        at += _pad(at)
    buffers = []
    for size in sizes:
        buffers.append(view[at : at + size])
        at += size + _pad(size)
    return pickle.loads(body, buffers=buffers)


def upload_chunks(made: Frame, progress: Progress) -> Iterator[bytes | memoryview]:
    for part in made.parts():
        progress.add(len(part))
        yield part


def frames_of(values: Mapping[str, Any]) -> dict[str, Frame]:
    return {name: frame(value, name) for name, value in values.items()}


def data_spec(frames: Mapping[str, Frame], pull: Iterable[str]) -> dict[str, Any]:
    return {
        "push": {n: {"digest": f.digest, "size": f.size} for n, f in frames.items()},
        "pull": list(pull),
    }


def wrap_data_script(source: str, names: Iterable[str], pull: Iterable[str]) -> str:
    """The program of a data-plane cell: load pushed frames, run the cell, write pulls."""
    from .payload import CELL_FILENAME

    return _TEMPLATE.format(
        names=repr(list(names)),
        source=repr(source),
        pull=repr(list(pull)),
        filename=repr(CELL_FILENAME),
        magic=repr(MAGIC),
        align=ALIGN,
    )


# The remote side: standard library only; helpers deleted before the cell runs.
_TEMPLATE = (
    """\
# River: a cell submitted with --push/--pull over the data plane. The pushed values are
# read from the runner's cache (RIVER_DATA_IN); pulled ones go to RIVER_DATA_OUT.
def _river_run():
    import json, linecache, mmap, os, pickle, struct, sys, traceback

    magic, align = {magic}, {align}
    ns = sys.modules["__main__"].__dict__
    paths = json.loads(os.environ.get("RIVER_DATA_IN") or "{{}}")
    for name in {names}:
        try:
            with open(paths[name], "rb") as handle:
                view = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY))
            body_len, count = struct.unpack_from("<QQ", view, 8)
            sizes = struct.unpack_from("<%dQ" % count, view, 24)
            at = 24 + 8 * count
            body = view[at : at + body_len]
            at += body_len
            at += -at % align if count else 0
            buffers = []
            for size in sizes:
                buffers.append(view[at : at + size])
                at += size + (-size % align)
            ns[name] = pickle.loads(body, buffers=buffers)
"""
    + LOAD_FAILED_AND_RUN_CELL
    + """
    def fail(message):
        sys.stdout.flush()
        sys.stderr.write("river: " + message + "\\n")
        sys.stderr.flush()
        sys.exit(1)

    pull = {pull}
    if not pull:
        return
    values = {{}}
    for name in pull:
        if name not in ns:
            fail("cannot pull %r: the cell did not define %s" % (name, name))
        values[name] = ns[name]
    buffers = []
    try:
        body = pickle.dumps(values, protocol=5, buffer_callback=buffers.append)
    except Exception:
        for name, value in values.items():
            try:
                pickle.dumps(value, protocol=5, buffer_callback=lambda b: None)
            except Exception as exc:
                fail("cannot pull %r: this %s cannot be pickled (%s: %s)"
                     % (name, type(value).__name__, type(exc).__name__, exc))
        raise
    views = [b.raw() for b in buffers]
    header = magic + struct.pack("<QQ%dQ" % len(views), len(body), len(views), *map(len, views))
    parts = [header, body]
    if views:
        parts.append(b"\\0" * (-(len(header) + len(body)) % align))
    for view in views:
        parts += [view, b"\\0" * (-len(view) % align)]
    # No hash here: the runner names the file by its BLAKE3 (all cores, from the page
    # cache) and the host checks it while receiving; the task's Python may lack blake3.
    with open(os.environ["RIVER_DATA_OUT"], "wb") as out:
        try:  # blocks reserved at once: far cheaper than growing the file write by write
            os.posix_fallocate(out.fileno(), 0, sum(len(p) for p in parts))
        except OSError:
            pass
        for part in parts:
            out.write(part)


_river_run()
del _river_run
"""
)
