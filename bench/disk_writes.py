"""How fast a directory absorbs a large write, 256 MiB at a time, against memory (/dev/shm).

    .venv/bin/python bench/disk_writes.py [DIR] [--gib 2]

Why: the data plane's host writes every pushed value and every pulled result to its data
directory. On a disk that throttles writers once dirty data piles up, that write, not the
network or the hashing, is what a round trip waits for (docs/performance.md). Each
directory gets one file reserved at its size (as the data plane does), written in 4 MiB
writes after `sync`; the figure per 256 MiB segment shows where throttling starts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
SEGMENT = 256 * MiB


def segments(directory: Path, total: int) -> list[float]:
    """MB/s of each 256 MiB segment of one `total`-byte write into `directory`."""
    block = memoryview(os.urandom(4 * MiB))
    os.sync()
    handle, name = tempfile.mkstemp(dir=directory, prefix="river-bench-write-")
    rates = []
    try:
        os.posix_fallocate(handle, 0, total)
        for _ in range(total // SEGMENT):
            started = time.perf_counter()
            for _ in range(SEGMENT // len(block)):
                os.write(handle, block)
            rates.append(SEGMENT / 1e6 / (time.perf_counter() - started))
    finally:
        os.close(handle)
        os.unlink(name)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", default=tempfile.gettempdir())
    parser.add_argument("--gib", type=int, default=2)
    args = parser.parse_args()
    total = args.gib * 1024 * MiB
    print("| directory | MB/s per 256 MiB segment, in order | overall MB/s |")
    print("|---|---|---|")
    for directory in (Path("/dev/shm"), Path(args.directory)):
        rates = segments(directory, total)
        overall = total / 1e6 / sum(SEGMENT / 1e6 / r for r in rates)
        cells = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"| {directory} | {cells} | {overall:,.0f} |")


if __name__ == "__main__":
    main()
