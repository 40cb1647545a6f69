"""The data plane's content address: the BLAKE3 of a blob's bytes, as 64 hex digits.

Why BLAKE3 rather than sha256 (docs/design-decisions.md, "Data plane"): every round trip
hashes each byte several times for a reason (the client names the frame; the host verifies
the untrusted client's upload; the runner checks what it cached; the host names and checks
the task's result), and sha256 takes 0.6-1.9 s of one core per GiB on these machines.
BLAKE3 is a tree hash: 4.3 GB/s on one core here and spread over every core for a large
buffer or file, so the hashing of a GiB round trip drops from seconds to a fraction of one.
Its 256-bit digest keeps the name's shape (64 hex digits), so routes and stored paths did
not change.

A blob named by sha256 (an older client's upload, a task queued before the change) is
still accepted: `matches` tries sha256 when BLAKE3 disagrees, reading the file once more.
So a client that cannot load the compiled `blake3` (River's modules put on a kernel's path
as a zip, say) names its blobs by sha256 and still works, only slower; host and runner
always have it (a dependency of the package).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

try:
    import blake3
except ImportError:  # a client without compiled packages: sha256 names (see above)
    blake3 = None  # type: ignore[assignment]

ALGORITHM = "BLAKE3"
CHUNK = 4 * 1024 * 1024


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def hasher() -> Hasher:
    """A new BLAKE3 hasher that may use every core for large updates (it releases the GIL);
    sha256 where blake3 cannot be loaded."""
    if blake3 is None:
        return hashlib.sha256()
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def of_bytes(data: bytes | memoryview) -> str:
    hashing = hasher()
    hashing.update(data)
    return hashing.hexdigest()


def file_digest(path: Path | str) -> str:
    """The BLAKE3 of a file's bytes, read through mmap and hashed on every core."""
    if blake3 is None:
        return legacy_sha256(path)
    hashing = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hashing.update_mmap(str(path))
    return hashing.hexdigest()


def legacy_sha256(path: Path | str) -> str:
    hashing = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hashing.update(chunk)
    return hashing.hexdigest()


def matches(path: Path | str, digest: str, computed: str) -> bool:
    """Whether the file at `path` (whose BLAKE3 is `computed`) is the blob named `digest`:
    by BLAKE3, or by sha256 for a name made before River moved to BLAKE3."""
    return computed == digest or legacy_sha256(path) == digest
