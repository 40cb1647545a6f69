"""Log line latency: a line printed by a remote task -> the line visible to the notebook.

A real cluster (Jupyter host with River + one process-backend runner, loopback) runs a
Python task that prints N lines, each stamped with time.time() when written. Everything
runs on this machine, so the clocks agree. Measured paths:

- floor:  the same script as a local subprocess, read line by line from a pipe;
- client: `TaskHandle.stream()` in this process (host event stream -> httpx);
- kernel: `%%river submit` in a real IPython kernel; the time is when the kernel's iopub
          `stream` message carrying the line reaches a client here (what a notebook shows).

Usage: .venv/bin/python bench/log_latency.py [-n 200] [--interval 0.01] [--no-kernel]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.measure import percentile  # noqa: E402
from river_magics import Client  # noqa: E402
from tests.cluster import Cluster  # noqa: E402

SCRIPT = """\
import time
for i in range({n}):
    print("line", i, repr(time.time()), flush=True)
    time.sleep({interval})
"""


def written_at(text: str) -> float | None:
    parts = text.split()
    if len(parts) == 3 and parts[0] == "line":
        return float(parts[2])
    return None


def floor(script: str) -> list[float]:
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", script], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    latencies = []
    assert process.stdout is not None
    for line in process.stdout:
        at = written_at(line)
        if at is not None:
            latencies.append(time.time() - at)
    process.wait()
    return latencies


def via_client(client: Client, script: str, captured: list[float]) -> list[float]:
    """Latencies through the client; `captured` gets written -> stamped by the supervisor."""
    handle = client.submit(script=script, name="latency")
    latencies = []
    for line in handle.stream(timeout=300):
        at = written_at(line["text"])
        if at is not None:
            latencies.append(time.time() - at)
            captured.append(float(line["ts"]) - at)
    return latencies


def via_kernel(cluster: Cluster, script: str) -> list[float]:
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "RIVER_URL": cluster.url, "RIVER_TOKEN": cluster.token}
    manager, kernel = start_new_kernel(kernel_name="python3", env=env)
    try:
        kernel.execute_interactive(
            "%load_ext river_magics\n%river connect", timeout=60, output_hook=lambda _msg: None
        )
        msg_id = kernel.execute("%%river submit --name latency-kernel\n" + script)
        latencies = []
        while True:
            message = kernel.get_iopub_msg(timeout=300)
            arrived = time.time()
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                for text in message["content"]["text"].splitlines():
                    at = written_at(text)
                    if at is not None:
                        latencies.append(arrived - at)
            elif (
                message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
            ):
                return latencies
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)


def report(name: str, latencies: list[float], expected: int) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"| {name} | {len(ms)}/{expected} | {percentile(ms, 0.5):.1f} ms | "
        f"{percentile(ms, 0.9):.1f} ms | {percentile(ms, 0.99):.1f} ms | {max(ms):.1f} ms |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="lines per run (default 200)")
    parser.add_argument(
        "--interval", type=float, default=0.01, help="seconds between lines (default 0.01)"
    )
    parser.add_argument("--no-kernel", action="store_true", help="skip the kernel path")
    args = parser.parse_args()
    script = SCRIPT.format(n=args.n, interval=args.interval)

    with tempfile.TemporaryDirectory(prefix="river-bench-") as root:
        cluster = Cluster(Path(root))
        cluster.start_host()
        try:
            cluster.start_runner("bench", "--cpus", "0")
            client = Client(cluster.url, cluster.token)
            client.submit(script="print('warm-up')").wait(60)  # first-task costs aside
            rows = [report("floor: local pipe", floor(script), args.n)]
            captured: list[float] = []
            rows.append(
                report("River client (`stream()`)", via_client(client, script, captured), args.n)
            )
            rows.append(report("(of which: written -> captured on the node)", captured, args.n))
            if not args.no_kernel:
                rows.append(
                    report(
                        "River in a kernel (`%%river submit`)", via_kernel(cluster, script), args.n
                    )
                )
            client.close()
        finally:
            cluster.close()
    print(f"N={args.n} lines, {args.interval * 1000:.0f} ms apart, written -> visible")
    print("| path | lines | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
