"""The data plane's push + pull round trip against a raw TCP loopback copy of the same bytes,
in the same run, rounds interleaved.

    .venv/bin/python bench/data_plane.py [--sizes 64,256,1024] [-n 3] [--no-data-link]

A real cluster on loopback: a Jupyter host with River and one process runner. Each round,
for each size (MiB), a fresh float64 array (a new digest: nothing is deduplicated):

* floor: one TCP loopback connection; the client sends the array's bytes and the server
  sends them back (recv_into one preallocated buffer, sendall of a memoryview): the least
  any push + pull of these bytes can cost on this machine;
* river: `client.submit(script="y = x", push={"x": a}, pull=["y"]).result()`: pickle
  protocol 5 framing and hashing, the upload to the host, the runner's fetch into its cache,
  the task's load and its result frame, the runner's upload, the client's download; from
  the call to the returned value, so the task's start and the runner's fetch are included.

Prints MB/s (2 x size moved) per path and the ratio river/floor (goal >= 0.5 at 1 GiB),
then the median seconds of each stage of the River path: the client's framing and hashing,
its upload, the runner's fetch, the task's start and run (load, cell, result frame), the
runner's hash and upload of the result (from the runner's "river-timing" log lines), what
is left between submit and "completed" (placement, events), and the client's download and
unpickling.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from river_magics import Client  # noqa: E402
from river_magics.dataplane import frame  # noqa: E402
from river_runner.data import cache_dir_name  # noqa: E402
from tests.cluster import Cluster  # noqa: E402

MiB = 1024 * 1024


def tcp_round_trip(data: memoryview) -> float:
    """Seconds to send `data` over loopback TCP and receive it back."""
    size = len(data)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo() -> None:
        connection, _ = listener.accept()
        with connection:
            buffer = bytearray(size)
            view, got = memoryview(buffer), 0
            while got < size:
                got += connection.recv_into(view[got:], min(4 * MiB, size - got))
            connection.sendall(view)

    server = threading.Thread(target=echo)
    server.start()
    back = bytearray(size)
    view, got = memoryview(back), 0
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(data)
        while got < size:
            got += sock.recv_into(view[got:], min(4 * MiB, size - got))
    took = time.perf_counter() - started
    server.join()
    listener.close()
    assert back == data
    return took


RUNNER_STAGES = ("fetch", "start", "run", "result-hash", "result-upload")
STAGES = ("frame+hash", "upload", *RUNNER_STAGES, "other", "download+unpickle")
TIMING = re.compile(r"river-timing task=(\d+) stage=(\S+) (?:bytes=\d+ )?seconds=([\d.]+)")


def runner_stages(log: Path, task: str) -> dict[str, float]:
    """The runner's stage timings of one task, from its log."""
    found: dict[str, float] = {}
    for match in TIMING.finditer(log.read_text(errors="replace")):
        if match[1] == task:
            found[match[2]] = float(match[3])
    return found


def river_round_trip(client: Client, array: np.ndarray, log: Path) -> tuple[float, dict]:
    """Seconds from the array to the array back, and the seconds of each stage."""
    started = time.perf_counter()
    made = frame(array, "x")
    framed = time.perf_counter()
    client.push_values({"x": made})
    pushed = time.perf_counter()
    handle = client.submit(script="y = x", push={"x": made}, pull=["y"])
    handle.wait(timeout=600)
    done = time.perf_counter()
    values = handle.result(timeout=600)
    took = time.perf_counter() - started
    stages = {
        "frame+hash": framed - started,
        "upload": pushed - framed,
        "download+unpickle": started + took - done,
    }
    on_runner = runner_stages(log, str(handle.id))
    stages.update({name: on_runner.get(name, float("nan")) for name in RUNNER_STAGES})
    stages["other"] = done - pushed - sum(on_runner.get(n, 0.0) for n in RUNNER_STAGES)
    assert np.array_equal(values["y"], array)
    return took, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,256,1024", help="array sizes in MiB")
    parser.add_argument("-n", type=int, default=3, help="rounds")
    parser.add_argument(
        "--no-data-link",
        action="store_true",
        help="the runner fetches over HTTP as from another machine (by default it links the "
        "host's stored blob: river_runner/samehost.py)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="river-bench-data-"))
    cluster = Cluster(root, extra_host_args=[f"--RiverHost.data_user_max_bytes={256 * 1024**3}"])
    results: dict[int, dict[str, list[float]]] = {s: {"floor": [], "river": []} for s in sizes}
    stages: dict[int, dict[str, list[float]]] = {s: {n: [] for n in STAGES} for s in sizes}
    try:
        cluster.start_host()
        link = ("--no-data-link",) if args.no_data_link else ()
        runner = cluster.start_runner("n1", "--cpus", "0", *link)
        token = cluster.make_users("bench")["bench"]
        with Client(cluster.url, token) as client:
            for round_ in range(args.n):
                for size in sizes:
                    array = np.arange(size * MiB // 8, dtype=np.float64)
                    array[0] = round_ + 0.5  # a new digest each round
                    # Start each pair with nothing dirty: the disk under the host's data
                    # directory absorbs writes slowly once dirty data piles up, and an
                    # earlier round's writeback would otherwise slow this one.
                    os.sync()
                    results[size]["floor"].append(tcp_round_trip(memoryview(array).cast("B")))
                    took, split = river_round_trip(client, array, runner.log_path)
                    results[size]["river"].append(took)
                    for name, seconds in split.items():
                        stages[size][name].append(seconds)
                    del array
                    print(f"round {round_ + 1} {size} MiB done", file=sys.stderr)
    finally:
        cluster.close()
        shutil.rmtree(
            Path(tempfile.gettempdir()) / cache_dir_name("n1", root / "runners" / "n1"), True
        )
        shutil.rmtree(root, ignore_errors=True)
    print(
        "| size | floor: TCP loopback (MB/s) | River push+pull (MB/s) | ratio | River median s |"
    )
    print("|---|---|---|---|---|")
    for size in sizes:
        floor = statistics.median(results[size]["floor"])
        river = statistics.median(results[size]["river"])
        moved = 2 * size * MiB / 1e6
        print(
            f"| {size} MiB | {moved / floor:,.0f} | {moved / river:,.0f} | "
            f"{floor / river:.2f} | {river:.2f} |"
        )
    print()
    print("| size | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for size in sizes:
        cells = [f"{statistics.median(stages[size][n]):.2f}" for n in STAGES]
        print(f"| {size} MiB | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
