"""DockerBackend against a real daemon: output, exit states, limits, control, adoption.

Each test drives the backend on its own asyncio loop (`asyncio.run`), the way the runner
agent does on Tornado's loop, and waits with bounded timeouts only.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from river_runner.backends.base import Outcome, TaskLaunch
from river_runner.backends.docker import LABEL_GPUS, DockerBackend, gpu_device_requests
from river_runner.backends.docker_logs import parse_docker_time
from river_runner.protocol import TaskState

TIMEOUT = 60.0  # generous bound for any single task in these tests
BUSYBOX_IMAGE = "river-test-busybox"  # built by .ci/build-images.sh, like river-test-python


def containers_of(client: Any, runner_name: str) -> list[Any]:
    return client.containers.list(
        all=True, filters={"label": f"river.runner={runner_name}"}, ignore_removed=True
    )


class Recorder:
    """Collects what a backend reports for one task, and lets a test await it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, int | None]] = []
        self.outcome: Outcome | None = None
        self.exit_calls = 0
        self.done = asyncio.Event()
        self.lines_at_exit = -1

    def on_output(
        self, stream: str, text: str, seq: int | None = None, ts: float | None = None
    ) -> None:
        assert ts is None or ts > 1e9
        self.lines.append((stream, text, seq))

    def on_exit(self, task_id: int, outcome: Outcome) -> None:
        self.exit_calls += 1
        self.lines_at_exit = len(self.lines)
        self.outcome = outcome
        self.done.set()

    def texts(self, stream: str | None = None) -> list[str]:
        return [text for s, text, _ in self.lines if stream is None or s == stream]

    async def finished(self, timeout: float = TIMEOUT) -> Outcome:
        await asyncio.wait_for(self.done.wait(), timeout)
        assert self.outcome is not None
        return self.outcome

    async def line(self, text: str, timeout: float = TIMEOUT) -> None:
        await until(lambda: text in self.texts(), timeout, f"line {text!r}")


async def until(
    check: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition"
) -> None:
    """Poll `check` on the loop until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


async def run_task(backend: DockerBackend, launch: TaskLaunch) -> tuple[Recorder, Outcome]:
    rec = Recorder()
    await backend.start(launch, rec.on_output, rec.on_exit)
    return rec, await rec.finished()


def container_status(client: Any, runner_name: str) -> list[str]:
    return [c.status for c in containers_of(client, runner_name)]


# ---- output and exit states ---------------------------------------------------------
def test_python_task_lines_in_order_and_container_removed(make_backend, docker_client, runner_name):
    script = (
        "import sys\n"
        "for i in range(50):\n"
        "    print(f'line {i}')\n"
        "print('oops', file=sys.stderr)\n"
        "print('after')\n"
        "sys.stdout.write('no newline at the end')\n"
    )

    async def main() -> None:
        backend = make_backend()
        rec = Recorder()
        handle = await backend.start(
            TaskLaunch(101, "python", script=script), rec.on_output, rec.on_exit
        )
        assert isinstance(handle, str) and handle
        assert 101 in backend.running()
        outcome = await rec.finished()
        assert outcome.state is TaskState.COMPLETED and outcome.exit_code == 0
        stdout = rec.texts("stdout")
        assert stdout == [f"line {i}" for i in range(50)] + ["after", "no newline at the end"]
        assert rec.texts("stderr") == ["oops"]
        # One numbering across both streams, from 1, in delivery order.
        assert [seq for _, _, seq in rec.lines] == list(range(1, 54))
        assert rec.lines_at_exit == len(rec.lines)  # every line before on_exit
        assert rec.exit_calls == 1
        assert backend.running() == {}
        await until(lambda: containers_of(docker_client, runner_name) == [], what="removal")
        await until(lambda: not (backend.work_root / "101").exists(), what="task dir removal")

    run(main)


def test_burst_of_output_right_before_exit_is_complete(make_backend):
    """The daemon ends a log follow when the container stops, sometimes before the last
    lines are read: the backend must catch up before reporting."""
    script = "import sys\nsys.stdout.write(''.join(f'{i}\\n' for i in range(20000)))\n"

    async def main() -> None:
        backend = make_backend()
        rec, outcome = await run_task(backend, TaskLaunch(100, "python", script=script))
        assert outcome.state is TaskState.COMPLETED
        assert rec.texts() == [str(i) for i in range(20000)]
        assert [seq for _, _, seq in rec.lines] == list(range(1, 20001))

    run(main)


def test_exit_code_is_failed(make_backend):
    async def main() -> None:
        backend = make_backend(default_image=BUSYBOX_IMAGE)
        rec, outcome = await run_task(
            backend, TaskLaunch(102, "command", command="echo bye; exit 3")
        )
        assert outcome.state is TaskState.FAILED
        assert outcome.exit_code == 3
        assert rec.texts() == ["bye"]

    run(main)


def test_argv_env_workdir_and_mounts(make_backend, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("from the host\n")
    shared = tmp_path / "shared"
    shared.mkdir()

    async def main() -> None:
        backend = make_backend(default_image=BUSYBOX_IMAGE, shared_dir=shared)
        launch = TaskLaunch(
            103,
            "command",
            command=[
                "sh",
                "-c",
                'echo "$GREETING"; pwd; cat /data/hello.txt; echo "$1" > /shared/out.txt;'
                " touch /data/nope 2>/dev/null || echo read-only",
                "argv0",
                "an argument with spaces",
            ],
            env={"GREETING": "hi there"},
            workdir="/tmp",
            mounts=[f"{data}:/data:ro"],
        )
        rec, outcome = await run_task(backend, launch)
        assert outcome.state is TaskState.COMPLETED, rec.lines
        assert rec.texts() == ["hi there", "/tmp", "from the host", "read-only"]
        assert (shared / "out.txt").read_text() == "an argument with spaces\n"

    run(main)


def test_missing_image_is_a_clear_error(make_backend, docker_client, runner_name):
    async def main() -> None:
        backend = make_backend()
        rec = Recorder()
        launch = TaskLaunch(104, "command", command=["true"], image="river-no-such-image:latest")
        with pytest.raises(RuntimeError, match="river-no-such-image"):
            await backend.start(launch, rec.on_output, rec.on_exit)
        assert backend.running() == {}
        assert containers_of(docker_client, runner_name) == []

    run(main)


# ---- resource limits ----------------------------------------------------------------
CPUSET_CMD = (
    "if [ -r /sys/fs/cgroup/cpuset/cpuset.cpus ]; then cat /sys/fs/cgroup/cpuset/cpuset.cpus;"
    " else cat /sys/fs/cgroup/cpuset.cpus.effective; fi"
)


@pytest.mark.parametrize("cpu", [0, max(os.sched_getaffinity(0))], ids=["first", "last"])
def test_cpuset(make_backend, cpu: int):
    async def main() -> None:
        backend = make_backend(default_image=BUSYBOX_IMAGE)
        rec, outcome = await run_task(
            backend, TaskLaunch(105, "command", command=CPUSET_CMD, cpus=[cpu])
        )
        assert outcome.state is TaskState.COMPLETED, rec.lines
        assert rec.texts() == [str(cpu)]

    run(main)


def test_memory_limit_oom(make_backend):
    script = (
        "chunks = []\n"
        "for i in range(20):\n"
        "    chunks.append(b'x' * (10 << 20))  # 10 MB, written, so really resident\n"
        "    print(f'{(i + 1) * 10} MB', flush=True)\n"
        "print('survived')\n"
    )

    async def main() -> None:
        backend = make_backend()
        launch = TaskLaunch(106, "python", script=script, memory=64 << 20)
        rec, outcome = await run_task(backend, launch)
        assert outcome.state is TaskState.KILLED_OOM, (outcome, rec.lines)
        assert "survived" not in rec.texts()
        assert "10 MB" in rec.texts()

    run(main)


# ---- control ------------------------------------------------------------------------
def test_kill(make_backend, docker_client, runner_name):
    async def main() -> None:
        backend = make_backend(default_image=BUSYBOX_IMAGE)
        rec = Recorder()
        await backend.start(
            TaskLaunch(107, "command", command="echo up; sleep 600"), rec.on_output, rec.on_exit
        )
        await rec.line("up")
        started = time.monotonic()
        assert await backend.kill(107) is True
        outcome = await rec.finished(30)
        assert time.monotonic() - started < 10
        assert outcome.state is TaskState.KILLED
        await until(lambda: containers_of(docker_client, runner_name) == [], what="removal")
        assert await backend.kill(107) is False  # unknown now

    run(main)


def test_pause_resume_then_kill_while_paused(make_backend, docker_client, runner_name):
    script = "import time\ni = 0\nwhile True:\n    print(i)\n    i += 1\n    time.sleep(0.05)\n"

    async def main() -> None:
        backend = make_backend()
        rec = Recorder()
        await backend.start(TaskLaunch(108, "python", script=script), rec.on_output, rec.on_exit)
        await rec.line("3")
        assert await backend.pause(108)
        assert backend.running() == {108: "paused"}
        assert container_status(docker_client, runner_name) == ["paused"]
        assert await backend.resume(108)
        assert backend.running() == {108: "running"}
        seen = len(rec.lines)
        await until(lambda: len(rec.lines) > seen + 3, what="output after resume")
        assert await backend.pause(108)
        assert await backend.kill(108)
        outcome = await rec.finished(30)
        assert outcome.state is TaskState.KILLED
        await until(lambda: containers_of(docker_client, runner_name) == [], what="removal")
        assert await backend.pause(108) is False

    run(main)


# ---- adoption -----------------------------------------------------------------------
def test_adopt_running_task_reports_real_exit(make_backend, docker_client, runner_name, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    script = (
        "import os, sys, time\n"
        "print('started')\n"
        "deadline = time.time() + 120\n"
        "while not os.path.exists('/shared/go') and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('finishing', file=sys.stderr)\n"
        "sys.exit(5)\n"
    )

    async def main() -> None:
        first = make_backend(shared_dir=shared)
        rec_a = Recorder()
        await first.start(TaskLaunch(109, "python", script=script), rec_a.on_output, rec_a.on_exit)
        await rec_a.line("started")
        await first.close()  # the runner goes away; the container must not
        assert container_status(docker_client, runner_name) == ["running"]

        second = make_backend(shared_dir=shared)
        rec_b = Recorder()
        adopted = await second.adopt(lambda task_id: rec_b.on_output, rec_b.on_exit)
        assert adopted == [109]
        assert second.running() == {109: "running"}
        await rec_b.line("started")  # replayed with its original number
        (shared / "go").write_text("")
        outcome = await rec_b.finished()
        assert outcome.state is TaskState.FAILED and outcome.exit_code == 5
        assert rec_b.lines == [("stdout", "started", 1), ("stderr", "finishing", 2)]
        assert rec_a.outcome is None  # the closed backend reported nothing
        await until(lambda: containers_of(docker_client, runner_name) == [], what="removal")

    run(main)


def test_adopt_finished_and_killed_tasks(make_backend, docker_client, runner_name, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    wait_then_exit = "echo done; while [ ! -e /shared/go ]; do sleep 0.05; done; exit 4"

    async def main() -> None:
        first = make_backend(default_image=BUSYBOX_IMAGE, shared_dir=shared)
        rec_a = Recorder()
        await first.start(
            TaskLaunch(110, "command", command=wait_then_exit), rec_a.on_output, rec_a.on_exit
        )
        await first.start(
            TaskLaunch(111, "command", command="sleep 600"), rec_a.on_output, rec_a.on_exit
        )
        await rec_a.line("done")
        await first.kill(111)  # requested, then the runner dies before reporting it
        await first.close()
        (shared / "go").write_text("")  # 110 ends while no runner watches

        def all_exited() -> bool:
            return container_status(docker_client, runner_name) == ["exited", "exited"]

        await until(all_exited, what="both containers to exit")
        assert rec_a.exit_calls == 0

        second = make_backend(default_image=BUSYBOX_IMAGE, shared_dir=shared)
        outcomes: dict[int, Outcome] = {}
        lines: dict[int, list[str]] = {110: [], 111: []}

        def output_for(task_id: int):
            return lambda stream, text, seq=None, ts=None: lines[task_id].append(text)

        adopted = await second.adopt(
            output_for, lambda tid, outcome: outcomes.__setitem__(tid, outcome)
        )
        assert sorted(adopted) == [110, 111]
        await until(lambda: len(outcomes) == 2, what="both outcomes")
        assert outcomes[110].state is TaskState.FAILED and outcomes[110].exit_code == 4
        assert lines[110] == ["done"]
        assert outcomes[111].state is TaskState.KILLED
        await until(lambda: containers_of(docker_client, runner_name) == [], what="removal")

    run(main)


# ---- GPUs ---------------------------------------------------------------------------
def test_gpu_device_request():
    (request,) = gpu_device_requests([0])
    assert request["DeviceIDs"] == ["0"]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] == 0  # explicit indices, not "any N"
    assert [r["DeviceIDs"] for r in gpu_device_requests([2, 3])] == [["2", "3"]]
    assert gpu_device_requests([]) == []


def test_gpu_task_without_gpu_runtime_records_request(
    make_backend, docker_client, runner_name, tmp_path
):
    async def main() -> None:
        backend = make_backend(default_image=BUSYBOX_IMAGE, gpu_runtime=False)
        config = backend.container_config(
            TaskLaunch(112, "command", command="true", gpus=[1, 3]), tmp_path
        )
        assert "device_requests" not in config
        assert json.loads(config["labels"][LABEL_GPUS])[0]["DeviceIDs"] == ["1", "3"]

        with_runtime = make_backend(default_image=BUSYBOX_IMAGE, gpu_runtime=True)
        config = with_runtime.container_config(
            TaskLaunch(112, "command", command="true", gpus=[1]), tmp_path
        )
        assert config["device_requests"][0]["DeviceIDs"] == ["1"]
        plain = with_runtime.container_config(TaskLaunch(112, "command", command="true"), tmp_path)
        assert "device_requests" not in plain

        rec = Recorder()
        command = 'echo "$NVIDIA_VISIBLE_DEVICES|$CUDA_VISIBLE_DEVICES"; sleep 600'
        launch = TaskLaunch(113, "command", command=command, gpus=[0])
        await backend.start(launch, rec.on_output, rec.on_exit)
        await rec.line("0|0")
        (container,) = containers_of(docker_client, runner_name)
        assert json.loads(container.labels[LABEL_GPUS]) == [
            dict(r) for r in gpu_device_requests([0])
        ]
        await backend.kill(113)
        assert (await rec.finished(30)).state is TaskState.KILLED

    run(main)


def test_gpu_runtime_detection_matches_daemon(make_backend, docker_client):
    runtimes = docker_client.info().get("Runtimes") or {}
    backend = make_backend()
    if any("nvidia" in name for name in runtimes):
        assert backend.gpu_runtime is True
    else:
        assert isinstance(backend.gpu_runtime, bool)


def test_parse_docker_time():
    assert parse_docker_time(b"2026-01-02T03:04:05.123456789Z") == pytest.approx(
        1767323045.123456789
    )
    assert parse_docker_time("1970-01-01T00:00:10Z") == 10.0


def test_job_member_hostfile_and_host_network(make_backend):
    """A job member's container reads RIVER_HOSTFILE (issue #16: the docker backend writes
    it too), and a host-network member sees the node's interfaces, not a bridge's eth0."""
    host_links = sorted(os.listdir("/sys/class/net"))

    async def main() -> None:
        backend = make_backend(default_image=BUSYBOX_IMAGE)
        launch = TaskLaunch(
            131,
            "command",
            command=["sh", "-c", 'cat "$RIVER_HOSTFILE"; ls /sys/class/net'],
            hostfile="10.0.0.1 slots=1\n10.0.0.2 slots=1\n",
            host_network=True,
        )
        rec, outcome = await run_task(backend, launch)
        assert outcome.state is TaskState.COMPLETED, rec.lines
        lines = rec.texts()
        assert lines[:2] == ["10.0.0.1 slots=1", "10.0.0.2 slots=1"], lines
        assert sorted(" ".join(lines[2:]).split()) == host_links, lines

    run(main)
