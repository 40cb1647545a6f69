"""The host's data directory is private to the account that runs the host.

It holds task specs (programs, env values), logs, blobs and secrets (runner join token,
SSH keys): other local accounts must not read them. New directories are made 0700 and
files 0600; on start, what an older version left more open is tightened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private(directory: Path) -> Path:
    """Create `directory` (and parents) and make it 0700."""
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(directory, PRIVATE_DIR)
    return directory


def private_file(path: Path) -> Path:
    """Create `path` if missing, 0600 from the first byte (no window with umask's mode)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)
    return path


def open_private(path: Path, mode: str = "ab"):  # noqa: ANN201 - a binary file object
    """open() for the host's own files: created 0600 rather than by the umask."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, PRIVATE_FILE), mode)


def tighten_tree(root: Path, skip: Iterable[Path] = ()) -> None:
    """Take group and other permissions off everything under `root` but `skip` (paths
    others share on purpose, like the shared directory runners read). Symlinks are left
    alone (chmod would follow them out of the tree)."""
    skipped = {Path(p).resolve() for p in skip}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skipped]
        _tighten(here, PRIVATE_DIR)
        for name in filenames:
            _tighten(here / name, PRIVATE_FILE)


def _tighten(path: Path, wanted: int) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
        return
    os.chmod(path, stat.S_IMODE(info.st_mode) & wanted)
