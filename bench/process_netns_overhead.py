"""What a process task's own network namespace costs: start -> exit of `true` with a
reserved overlay address (own namespace on the runner's bridge) against the same task
sharing the runner's network (the floor), interleaved, same run.

    sudo .venv/bin/python bench/process_netns_overhead.py [-n 20]

Runs the process backend (with its supervisor fork server) inside a runner machine
namespace made for the run, with a bridge standing in for `river-br`; every task
namespace is made and removed by River's own code (`river_runner.task_netns`), and the
machine namespace is removed afterwards. Nothing outside it is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.measure import describe  # noqa: E402

BRIDGE_ADDRESS = "10.99.0.1"


async def _one(backend: object, task_id: int, overlay_ip: str | None) -> float:
    from river_runner.backends.base import TaskLaunch

    done: asyncio.Future = asyncio.get_running_loop().create_future()
    started = time.perf_counter()
    launch = TaskLaunch(task_id, "command", command=["true"], overlay_ip=overlay_ip)
    await backend.start(launch, lambda *a, **k: None, lambda _id, out: done.set_result(out))  # type: ignore[attr-defined]
    outcome = await done
    assert outcome.exit_code == 0, outcome
    return time.perf_counter() - started


async def _measure(count: int) -> tuple[list[float], list[float]]:
    from river_runner.backends.process import ProcessBackend

    backend = ProcessBackend(Path(tempfile.mkdtemp(prefix="river-netns-bench-")))
    backend.overlay_bridge = "river-br"
    try:
        await _one(backend, 1, None)  # warm up: the fork server, the helper's imports
        await _one(backend, 2, "10.99.0.20")
        shared, own = [], []
        for index in range(count):
            shared.append(await _one(backend, 100 + index, None))
            own.append(await _one(backend, 1000 + index, f"10.99.0.{30 + index % 200}"))
        return shared, own
    finally:
        await backend.close()


def inside(count: int) -> int:
    """In the machine namespace: make the bridge, then measure."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="river-br", kind="bridge")
        index = ipr.link_lookup(ifname="river-br")[0]
        ipr.addr("add", index=index, address=BRIDGE_ADDRESS, prefixlen=24)
        ipr.link("set", index=index, state="up")
    shared, own = asyncio.run(_measure(count))
    print(f"process task `true`, start -> exit reported, N={count} interleaved")
    print(describe("floor: shared runner network", shared))
    print(describe("own namespace (reserved address)", own))
    extra_ms = (statistics.median(own) - statistics.median(shared)) * 1000
    print(f"cost of the namespace: median +{extra_ms:.1f} ms")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="tasks of each kind")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return inside(args.n)
    from tests.netns.topology import IP, Topology, netns_problem

    problem = netns_problem()
    if problem:
        print(f"process_netns_overhead: cannot run here: {problem}", file=sys.stderr)
        return 2
    topo = Topology().start()
    try:
        machine = topo.machine("runner1", 2)
        command = [IP, "netns", "exec", machine.netns, sys.executable, __file__]
        return subprocess.run([*command, "--inside", "-n", str(args.n)], cwd=REPO).returncode
    finally:
        topo.close()


if __name__ == "__main__":
    sys.exit(main())
