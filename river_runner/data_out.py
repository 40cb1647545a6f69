"""Where tasks write their pulled values: memory (/dev/shm) when the node has it, else disk.

Why: a task's result file lives only until the runner has sent it to the host (seconds),
yet written to a disk file system it becomes dirty page cache the disk must absorb. On
these machines the disk throttles writers past about half a GiB of dirty data to
~200 MB/s, so a 1 GiB result written there slowed the host's own write of the same bytes
(docs/performance.md). In a tmpfs it costs memory only while it exists, as Ray's object
store does for the same reason. A container task's writes there are charged to its own
memory limit; a result over the tmpfs's room fails the task's pull with "No space left".

The directory is fixed per runner (name and data directory), so a restarted runner finds
the results of tasks that ended while it was down. /dev/shm is writable by everyone: an
existing directory is used only if it is a real directory of this account that nobody
else can write; anything else falls back to the disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

SHM = Path("/dev/shm")
log = logging.getLogger("river.runner.data")


def _is_tmpfs(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as mounts:
            return any(
                line.split()[1] == str(path) and line.split()[2] == "tmpfs" for line in mounts
            )
    except OSError:
        return False


def _safe_dir(path: Path) -> bool:
    """Create `path` (0711), or accept an existing one only if this account owns it, it is
    not a link, and no one else may write it."""
    try:
        path.mkdir(mode=0o711)
    except FileExistsError:
        pass
    except OSError:
        return False
    info = path.lstat()
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def data_dir_key(data_dir: Path) -> str:
    """A short digest of a runner's data directory: directories named with it outside that
    directory (its blob cache, its results in memory) are never shared by two runners of
    one name."""
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]


def memory_dir(runner: str, data_dir: Path, shm: Path = SHM) -> Path:
    """The runner's directory in memory, named as its blob cache is."""
    return shm / f"river-out-{runner}-{data_dir_key(data_dir)}"


def results_dir(runner: str, data_dir: Path, fallback: Path, shm: Path = SHM) -> Path:
    """The directory that holds one `<task id>/` per task that pulls values."""
    if _is_tmpfs(shm) and os.access(shm, os.W_OK):
        candidate = memory_dir(runner, data_dir, shm)
        if _safe_dir(candidate):
            os.chmod(candidate, 0o711)
            return candidate
        log.warning("%s is not this runner's own directory: results go to %s", candidate, fallback)
    return fallback
