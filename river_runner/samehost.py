"""A runner on the host's own machine takes a pushed blob by hard link, not over HTTP.

Why: in the embedded cluster (and wherever the head node also computes) the runner's fetch
moved a GiB over loopback and wrote it to a second file: two copies, and a GiB more dirty
page cache for the disk to absorb (on these machines the disk throttles writers past about
half a GiB of dirty data to ~200 MB/s: docs/performance.md). A link costs neither.

How: the runner's fetch carries `X-River-Same-Machine: <kernel boot id>`. A host that sees
its own boot id answers 204 with the blob's path and `dev:inode:size` instead of a body; the
runner links the path into its cache, checks the link is that very file (a runner in
another mount namespace may see another file at the same path) and its digest, and falls
back to the HTTP fetch on any failure (another file system, no permission). The host says
"same machine" only to a runner that asked, and only about blobs that runner may fetch.

Only a runner whose tasks cannot write the cache's files asks (tasks in containers, which
mount blobs read-only, or process tasks under another account): the linked file IS the
host's stored blob, which the host hands to every user who uploads the same bytes.
"""

from __future__ import annotations

import functools
from pathlib import Path

LINK_HEADER = "X-River-Same-Machine"
PATH_HEADER = "X-River-Path"
FILE_HEADER = "X-River-File"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def machine_id() -> str:
    """This kernel's boot id (shared by every namespace of one machine); "" if unknown."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def same_machine(claimed: str | None) -> bool:
    return bool(claimed) and claimed == machine_id()


def file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}"
