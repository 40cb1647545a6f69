"""Submit -> completed of `echo hi` in a container through a real cluster (docker backend),
against plain `docker run --rm` of the same image, interleaved.

    .venv/bin/python bench/docker_overhead.py [-n 30] [--image river-test-busybox]

The cluster is real: a Jupyter host with River and one runner process (`--backend docker`)
on loopback, talking to the local daemon. River's time runs from the submit request to the
`completed` event on one event stream subscribed to all tasks (no polling interval is
measured). Floors, measured in the same loop:

* docker SDK: `containers.run(image, cmd, remove=True)` (create, start, wait, logs, remove)
* docker CLI: `/usr/bin/docker run --rm image cmd` (what a person would type)

Overhead = River median - SDK floor median (the SDK does the same daemon calls River does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measure import EventClock, describe, percentile  # noqa: E402
from river_runner.backends.base import TaskLaunch  # noqa: E402
from river_runner.backends.docker import DockerBackend  # noqa: E402
from tests.cluster import Cluster  # noqa: E402

COMMAND = ["echo", "hi"]
DOCKER_CLI = "/usr/bin/docker"  # the daemon's own client (the newer one may speak a newer API)
WARMUP = 3


class RemovalClock:
    """Arrival time of the daemon's `destroy` event of each River task container."""

    def __init__(self, client: docker.DockerClient, runner: str) -> None:
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        filters = {"type": "container", "event": "destroy", "label": f"river.runner={runner}"}
        self._events = client.events(filters=filters, decode=True)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # closed at the end
            for event in self._events:
                task_id = (event.get("Actor", {}).get("Attributes") or {}).get("river.task_id")
                with self._cond:
                    self.seen[str(task_id)] = time.perf_counter()
                    self._cond.notify_all()

    def wait(self, task_id: str, timeout: float = 30.0) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: task_id in self.seen, timeout):
                raise TimeoutError(f"the container of task {task_id} was not removed")
            return self.seen[task_id]

    def close(self) -> None:
        self._events.close()


def run_direct(
    loop: asyncio.AbstractEventLoop, backend: DockerBackend, task_id: int, image: str
) -> float:
    """The docker backend alone (no host, no HTTP): start -> on_exit, as the runner sees it."""

    async def one() -> float:
        done = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await backend.start(
            TaskLaunch(task_id, "command", command=COMMAND, image=image, cpus=[0]),
            lambda *args, **kwargs: None,
            lambda _id, outcome: done.set_result((time.perf_counter(), outcome)),
        )
        ended, outcome = await done
        assert outcome.exit_code == 0, outcome
        return ended - started

    return loop.run_until_complete(one())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--image", default="river-test-busybox")
    args = parser.parse_args()
    client = docker.from_env(version="auto")
    client.images.get(args.image)  # fail early: build it with .ci/build-images.sh
    with tempfile.TemporaryDirectory(prefix="river-bench-") as root:
        cluster = Cluster(Path(root), heartbeat_interval=5.0)
        cluster.start_host()
        try:
            runner = f"bench-docker-{os.getpid()}"
            cluster.start_runner(runner, "--backend", "docker", "--default-image", args.image)
            removals = RemovalClock(client, runner)
            clock = EventClock(cluster)
            clock.ready.wait(10)
            http = httpx.Client(base_url=cluster.url, headers=cluster.headers, timeout=30)
            sdk, cli, direct, to_running, to_completed, to_removed = [], [], [], [], [], []
            loop = asyncio.new_event_loop()
            backend = DockerBackend(
                client,
                runner_name=f"bench-direct-{os.getpid()}",
                work_root=Path(root) / "direct",
                default_image=args.image,
            )
            for i in range(args.n + WARMUP):
                started = time.perf_counter()
                output = client.containers.run(args.image, COMMAND, remove=True)
                sdk_s = time.perf_counter() - started
                assert output.strip() == b"hi", output

                started = time.perf_counter()
                subprocess.run(
                    [DOCKER_CLI, "run", "--rm", args.image, *COMMAND],
                    stdout=subprocess.DEVNULL,
                    check=True,
                )
                cli_s = time.perf_counter() - started

                direct_s = run_direct(loop, backend, 1000 + i, args.image)

                submitted = time.perf_counter()
                response = http.post(
                    "/river/api/tasks", json={"command": COMMAND, "image": args.image, "cores": 1}
                )
                task_id = response.json()["task"]["id"]
                state, completed = clock.wait(task_id, {"completed", "failed", "killed"})
                if state != "completed":
                    raise RuntimeError(
                        f"task {task_id} ended {state}: {http.get(f'/river/api/tasks/{task_id}').text}"
                    )
                running = clock.seen.get((task_id, "running"), completed)
                removed = removals.wait(task_id)
                if i >= WARMUP:
                    sdk.append(sdk_s)
                    cli.append(cli_s)
                    direct.append(direct_s)
                    to_running.append(running - submitted)
                    to_completed.append(completed - submitted)
                    to_removed.append(removed - submitted)
            print(
                f"docker backend, N={args.n} (+{WARMUP} warm-up), image {args.image}, "
                f"command {' '.join(COMMAND)!r}, interleaved"
            )
            print(describe("floor: docker SDK run(remove=True)", sdk))
            print(describe("floor: docker CLI run --rm", cli))
            print(describe("docker backend alone: start -> exit", direct))
            print(describe("River submit -> running", to_running))
            print(describe("River submit -> completed", to_completed))
            print(describe("River submit -> container removed", to_removed))
            for name, floor in (("SDK", sdk), ("CLI", cli)):
                overhead = statistics.median(to_completed) - statistics.median(floor)
                p90 = percentile(to_completed, 0.9) - percentile(floor, 0.9)
                # Paired: River minus the floor of the same iteration, which ran moments
                # before under the same machine load (robust when other work comes and goes).
                paired = [r - f for r, f in zip(to_completed, floor, strict=True)]
                print(
                    f"River overhead over the {name} floor: median {overhead * 1000:+.1f} ms, "
                    f"p90 {p90 * 1000:+.1f} ms; paired differences: median "
                    f"{statistics.median(paired) * 1000:+.1f} ms, "
                    f"p90 {percentile(paired, 0.9) * 1000:+.1f} ms"
                )
            plumbing = statistics.median(to_completed) - statistics.median(direct)
            print(
                f"of which host + HTTP + runner plumbing (River minus backend alone, median): "
                f"{plumbing * 1000:+.1f} ms"
            )
            loop.run_until_complete(backend.close())
            loop.close()
        finally:
            cluster.close()
            with contextlib.suppress(NameError):
                removals.close()
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
