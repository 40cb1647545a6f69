"""The process backend on real processes: output, exit status, limits, kill, adoption."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from river_runner.backends.base import Outcome, TaskLaunch
from river_runner.backends.process import ProcessBackend
from river_runner.protocol import TaskState
from river_runner.task_account import TaskAccount, resolve_task_account


def shared_account() -> TaskAccount:
    """One account for every task: these tests drive the backend without a host, so no
    launch carries the user number a root runner's per-user uids need (task_account.py)."""
    return resolve_task_account("nobody" if os.geteuid() == 0 else None)


@pytest.fixture(autouse=True)
def _no_leftover_tasks(tmp_path: Path) -> Iterator[None]:
    """Supervisors run in their own sessions: kill whatever a (failed) test left behind."""
    yield
    for pid_file in [*tmp_path.glob("*/supervisor.pid"), *tmp_path.glob("*/child.pid")]:
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


class Recorder:
    """Collects what a backend reports, and lets a test await the end of a task."""

    def __init__(self) -> None:
        self.lines: dict[int, list[tuple[int | None, str, str]]] = {}
        self.outcomes: dict[int, Outcome] = {}
        self.done: dict[int, asyncio.Event] = {}

    def output_for(self, task_id: int):
        def on_output(
            stream: str, text: str, seq: int | None = None, ts: float | None = None
        ) -> None:
            self.lines.setdefault(task_id, []).append((seq, stream, text))

        return on_output

    def on_exit(self, task_id: int, outcome: Outcome) -> None:
        self.outcomes[task_id] = outcome
        self.done.setdefault(task_id, asyncio.Event()).set()

    async def wait(self, task_id: int, timeout: float = 20.0) -> Outcome:
        await asyncio.wait_for(self.done.setdefault(task_id, asyncio.Event()).wait(), timeout)
        return self.outcomes[task_id]


async def _run(backend: ProcessBackend, recorder: Recorder, launch: TaskLaunch) -> Outcome:
    await backend.start(launch, recorder.output_for(launch.task_id), recorder.on_exit)
    return await recorder.wait(launch.task_id)


def test_output_exit_status_affinity_and_gpus(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend, recorder = ProcessBackend(tmp_path, account=shared_account()), Recorder()
        script = (
            "import os, sys\n"
            "print('affinity', sorted(os.sched_getaffinity(0)))\n"
            "print('gpus', os.environ['CUDA_VISIBLE_DEVICES'])\n"
            "print('warn', file=sys.stderr)\n"
            "sys.exit(4)\n"
        )
        outcome = await _run(
            backend, recorder, TaskLaunch(1, "python", script=script, cpus=[0], gpus=[1, 3])
        )
        assert outcome.state == TaskState.FAILED and outcome.exit_code == 4
        assert recorder.lines[1] == [
            (1, "stdout", "affinity [0]"),
            (2, "stdout", "gpus 1,3"),
            (3, "stderr", "warn"),
        ]
        ok = await _run(
            backend, recorder, TaskLaunch(2, "command", command="printf 'a\\tb\\nno newline'")
        )
        assert ok.state == TaskState.COMPLETED and ok.exit_code == 0
        assert [text for _, _, text in recorder.lines[2]] == ["a\tb", "no newline"]
        await backend.close()

    asyncio.run(scenario())


def test_memory_limit_kills_with_oom(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend, recorder = ProcessBackend(tmp_path, account=shared_account()), Recorder()
        hog = "import time\nblocks = []\nfor _ in range(100):\n    blocks.append(bytearray(20 * 2**20))\n    time.sleep(0.05)\n"
        outcome = await _run(
            backend, recorder, TaskLaunch(3, "python", script=hog, memory=64 * 2**20)
        )
        assert outcome.state == TaskState.KILLED_OOM
        await backend.close()

    asyncio.run(scenario())


def test_kill_pause_resume(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend, recorder = ProcessBackend(tmp_path, account=shared_account()), Recorder()
        launch = TaskLaunch(
            5, "python", script="import time\nprint('up', flush=True)\ntime.sleep(60)"
        )
        await backend.start(launch, recorder.output_for(5), recorder.on_exit)
        for _ in range(200):
            if recorder.lines.get(5):
                break
            await asyncio.sleep(0.02)
        child = int((tmp_path / "5" / "child.pid").read_text())
        assert await backend.pause(5)
        assert psutil.Process(child).status() == psutil.STATUS_STOPPED
        assert backend.running() == {5: "paused"}
        assert await backend.resume(5)
        assert await backend.kill(5)
        outcome = await recorder.wait(5)
        assert outcome.state == TaskState.KILLED
        assert (
            not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        )
        await backend.close()

    asyncio.run(scenario())


def test_a_new_backend_adopts_running_tasks(tmp_path: Path) -> None:
    """A restarted runner finds its task still running and gets its real exit status."""

    async def scenario() -> None:
        first, recorder = ProcessBackend(tmp_path, account=shared_account()), Recorder()
        script = "import time, sys\nprint('before', flush=True)\ntime.sleep(1.0)\nprint('after')\nsys.exit(7)"
        await first.start(
            TaskLaunch(9, "python", script=script), recorder.output_for(9), recorder.on_exit
        )
        await first.close()  # the runner goes away; the supervisor does not

        second, adopted = ProcessBackend(tmp_path, account=shared_account()), Recorder()
        assert await second.adopt(adopted.output_for, adopted.on_exit) == [9]
        outcome = await adopted.wait(9)
        assert outcome.state == TaskState.FAILED and outcome.exit_code == 7
        assert [text for _, _, text in adopted.lines[9]] == ["before", "after"]
        await second.close()

    asyncio.run(scenario())


def test_a_reserved_address_is_refused_off_the_overlay(tmp_path: Path) -> None:
    """A runner that has not joined the overlay says so, instead of running the task
    without the address it reserved (tests/netns has the working case)."""
    backend = ProcessBackend(tmp_path, use_zygote=False, account=shared_account())
    launch = TaskLaunch(1, "command", command=["true"], overlay_ip="10.0.0.5")

    async def go() -> None:
        try:
            with pytest.raises(RuntimeError, match="has not joined the overlay"):
                await backend.start(launch, lambda *a, **k: None, lambda *a: None)
            assert backend.running() == {}
        finally:
            await backend.close()

    asyncio.run(go())
