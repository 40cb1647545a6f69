"""`--push` / `--pull`: notebook variables into a remote cell and back, without shared storage.

Push: each value is pickled here (so an unpicklable one is named before anything is sent)
and embedded, base64-encoded, in a small prelude of the task's script. The task needs no
network route back and no credential, and the values travel with the task record.

Pull: an epilogue, run only when the cell finished without an exception, pickles the named
variables and prints them on stdout as marker lines (river_runner.protocol.PULL_MARKER).
The host takes those lines out of the log and keeps the bytes as the task's `river-pull`
blob; clients read it with GET /river/api/tasks/{id}/blobs/river-pull. A missing or
unpicklable variable makes the epilogue print one clear line on stderr, record the reason
in place of the blob, and exit with status 1.

Values whose class is defined in the notebook itself pickle by reference to `__main__`
and load only where that class exists too (on both sides, the cell runs in `__main__`).
"""

from __future__ import annotations

import base64
import pickle
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from river_runner.protocol import PULL_ERROR_MARKER, PULL_MARKER

from .errors import RiverError

# Pickle protocol 4 loads on any Python >= 3.4, whatever runs inside a task's image.
PROTOCOL = 4
# The pushed values ride inside the task's script; past this they belong on shared storage.
PUSH_LIMIT = 16 * 1024 * 1024
# Characters of base64 per marker line: well under the 64 KiB at which backends split lines.
PULL_CHUNK = 16384
CELL_FILENAME = "<river cell>"


class PayloadError(RiverError):
    """A variable could not be pushed or pulled; the message names it."""


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_names(names: Iterable[str], option: str) -> list[str]:
    """Validate `--push a,b` / `--pull c` names (identifiers, no duplicates)."""
    out: list[str] = []
    for name in names:
        if not name.isidentifier():
            raise PayloadError(f"{option}: {name!r} is not a variable name")
        if name not in out:
            out.append(name)
    return out


def pickle_values(values: Mapping[str, Any], *, limit: int = PUSH_LIMIT) -> dict[str, bytes]:
    """Pickle each pushed value, naming the first that cannot be pickled."""
    out: dict[str, bytes] = {}
    for name, value in values.items():
        try:
            out[name] = zlib.compress(pickle.dumps(value, protocol=PROTOCOL), 1)
        except Exception as exc:
            raise PayloadError(
                f"cannot push {name!r}: this {_type_name(value)} cannot be pickled "
                f"({type(exc).__name__}: {exc})"
            ) from None
    total = sum(len(data) for data in out.values())
    if total > limit:
        biggest = max(out, key=lambda n: len(out[n]))
        raise PayloadError(
            f"cannot push {', '.join(out)}: {total / 2**20:.1f} MiB pickled (the largest is "
            f"{biggest!r}); at most {limit / 2**20:.0f} MiB travel with a task, so put larger "
            "data on shared storage and push its path"
        )
    return out


def wrap_script(source: str, pushed: Mapping[str, bytes], pull: Iterable[str]) -> str:
    """The program a `--push`/`--pull` cell runs remotely: prelude, the cell, epilogue.

    The cell is compiled under the name "<river cell>" (with its source registered in
    linecache) so its tracebacks show the cell's own line numbers and code.
    """
    encoded = {name: base64.b64encode(data).decode("ascii") for name, data in pushed.items()}
    return _TEMPLATE.format(
        pushed=repr(encoded),
        source=repr(source),
        pull=repr(list(pull)),
        filename=repr(CELL_FILENAME),
        protocol=PROTOCOL,
        chunk=PULL_CHUNK,
        marker=repr(PULL_MARKER),
        error_marker=repr(PULL_ERROR_MARKER),
    )


def decode_pulled(blob: bytes) -> dict[str, Any]:
    """The variables in a `river-pull` blob, naming the first that cannot be loaded here."""
    try:
        parts = pickle.loads(zlib.decompress(blob))
    except Exception as exc:
        raise PayloadError(f"the pulled values are damaged ({type(exc).__name__}: {exc})") from None
    values: dict[str, Any] = {}
    for name, data in parts.items():
        try:
            values[name] = pickle.loads(data)
        except Exception as exc:
            raise PayloadError(
                f"cannot load pulled {name!r} here ({type(exc).__name__}: {exc}); is its "
                "class defined in this notebook?"
            ) from None
    return values


# The end of loading a pushed value and the running of the cell itself, the same in both
# remote scripts (this one and river_magics/dataplane.py's): the cell is compiled under
# its own file name (kept in linecache), so tracebacks show its lines and frames only.
LOAD_FAILED_AND_RUN_CELL = """\
        except Exception as exc:
            sys.stderr.write(
                "river: cannot load pushed %r here: %s: %s\\n" % (name, type(exc).__name__, exc)
            )
            sys.exit(1)
    source = {source}
    filename = {filename}
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        exec(compile(source, filename, "exec"), ns)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    except BaseException:
        kind, value, tb = sys.exc_info()
        traceback.print_exception(kind, value, tb.tb_next)  # the cell's frames only
        sys.stderr.flush()
        sys.exit(1)
"""


# The remote side. Only the standard library; names start with _river so they do not
# collide with the cell's, and the prelude's helpers are deleted before the cell runs.
_TEMPLATE = (
    """\
# River: a cell submitted with --push/--pull. The lines around the cell load the pushed
# variables and send the pulled ones back; the cell itself is the string below.
def _river_run():
    import base64, linecache, os, pickle, sys, traceback, zlib

    ns = sys.modules["__main__"].__dict__
    for name, data in {pushed}.items():
        try:
            ns[name] = pickle.loads(zlib.decompress(base64.b64decode(data)))
"""
    + LOAD_FAILED_AND_RUN_CELL
    + """
    def fail(message):
        sys.stdout.flush()
        sys.stderr.write("river: " + message + "\\n")
        sys.stderr.flush()
        os.write(1, ({error_marker} + message + "\\n").encode("utf-8"))
        sys.exit(1)

    pulled = {{}}
    for name in {pull}:
        if name not in ns:
            fail("cannot pull %r: the cell did not define %s" % (name, name))
        try:
            pulled[name] = pickle.dumps(ns[name], protocol={protocol})
        except Exception as exc:
            fail(
                "cannot pull %r: this %s cannot be pickled (%s: %s)"
                % (name, type(ns[name]).__name__, type(exc).__name__, exc)
            )
    if not pulled:
        return
    data = base64.b64encode(zlib.compress(pickle.dumps(pulled, protocol={protocol}), 1))
    data = data.decode("ascii")
    chunks = [data[i : i + {chunk}] for i in range(0, len(data), {chunk})] or [""]
    sys.stdout.flush()
    for number, chunk in enumerate(chunks, start=1):
        line = "%s%d/%d:%s\\n" % ({marker}, number, len(chunks), chunk)
        os.write(1, line.encode("ascii"))


_river_run()
del _river_run
"""
)
