"""Process backend: each task is a plain process group under a detached supervisor.

Used where no Docker daemon answers (the embedded default). CPU affinity, a memory limit
(watched by the supervisor) and CUDA_VISIBLE_DEVICES give the same resource contract as
containers; tasks survive a runner restart and are adopted from their task directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from river_runner import supervise, task_netns
from river_runner.backends.base import Backend, ExitCallback, Outcome, OutputCallback, TaskLaunch
from river_runner.interpreters import Interpreter, Interpreters
from river_runner.protocol import TaskState
from river_runner.task_account import TaskAccount, resolve_task_account
from river_runner.task_cpu import tree_cpu_seconds
from river_runner.task_env import task_environment
from river_runner.task_inputs import ENV_FILES_DIR, place_files
from river_runner.zygote_client import ZygoteClient

TAIL_INTERVAL = 0.02  # seconds between looks at the files of adopted tasks
REPORTED_MARKER = "reported"


@dataclass
class _Running:
    task_id: int
    task_dir: Path
    supervisor_pid: int
    on_output: OutputCallback
    on_exit: ExitCallback
    offset: int = 0
    last_seq: int = 0
    paused: bool = False
    kill_requested: bool = False
    polled: bool = False
    partial: str = field(default="")
    netns: str | None = None  # its own network namespace (a reserved overlay address)
    overlay_ip: str | None = None


def outcome_from_result(result: dict) -> Outcome:
    """Map the supervisor's result.json to the host's vocabulary."""
    code = result.get("exit_code")
    if result.get("oom"):
        return Outcome(TaskState.KILLED_OOM, code, "memory limit exceeded")
    if result.get("killed"):
        return Outcome(TaskState.KILLED, code, "killed on request")
    if code == 0:
        return Outcome(TaskState.COMPLETED, 0)
    return Outcome(TaskState.FAILED, code, result.get("detail") or f"exit code {code}")


class ProcessBackend(Backend):
    name = "process"

    def __init__(
        self,
        work_root: Path,
        python: str | None = None,
        use_zygote: bool = True,
        account: TaskAccount | None = None,
        scratch_root: Path | None = None,
        passed_env: tuple[str, ...] = (),
        python_envs: dict[str, str] | None = None,
    ) -> None:
        self.work_root = Path(work_root)
        self.work_root.mkdir(parents=True, exist_ok=True)
        # Tasks run as `account` (river_runner.task_account); when that is not the runner's
        # own, each gets a scratch directory of its own under `scratch_root` (HOME, TMPDIR,
        # default working directory, its script), as the task directory is the runner's.
        self.account = account or resolve_task_account(None)
        self.scratch_root = Path(scratch_root or tempfile.gettempdir())
        self.passed_env = passed_env  # runner variables tasks get too (--task-env)
        self.python = python or sys.executable
        # A task's `python` (a path or a --python-env name): river_runner.interpreters
        self.interpreters = Interpreters(self.python, python_envs or {}, self.account)
        self._tasks: dict[int, _Running] = {}
        self._tail_task: asyncio.Task | None = None
        self._bells: dict[int, tuple[int, subprocess.Popen | None]] = {}
        self.zygote = ZygoteClient(self.python, use=use_zygote)
        self._cleanups: set[asyncio.Future] = set()  # namespaces being removed

    # ---- starting -------------------------------------------------------------------
    def _argv(self, launch: TaskLaunch, script_dir: Path, python: str) -> list[str]:
        if launch.kind == "python":
            script = script_dir / "task.py"
            script.write_text(launch.script or "")
            os.chmod(script, 0o644)  # readable by the task's account
            return [python, "-u", *launch.launcher, str(script)]
        if isinstance(launch.command, str):
            return ["/bin/sh", "-c", launch.command]
        if not launch.command:
            raise ValueError("a command task needs a command")
        return [str(part) for part in launch.command]

    def account_for(self, launch: TaskLaunch) -> TaskAccount:
        """The account `launch` runs as: its owner's own uid under a per-user runner."""
        return self.account.for_user(launch.user_number)

    def _make_scratch(self, task_id: int, account: TaskAccount) -> Path | None:
        """The task's own directory, 0700 and owned by its account, so no other user's task
        can read or write it (None: it runs as the runner's account and keeps the runner's
        HOME and working directory, as before)."""
        if not account.switches:
            return None
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"river-task-{task_id}-", dir=self.scratch_root))
        os.chown(scratch, account.uid, account.gid)
        return scratch

    async def start(
        self, launch: TaskLaunch, on_output: OutputCallback, on_exit: ExitCallback
    ) -> int:
        if launch.task_id in self._tasks:
            return self._tasks[launch.task_id].supervisor_pid
        # Before anything is made: an interpreter that is not here (or that the task's
        # account cannot run) refuses the task now, with the reason (InterpreterError).
        account = self.account_for(launch)  # refuses a launch it cannot place (no number)
        interpreter = Interpreter(self.python, "")
        if launch.kind == "python" and launch.python:
            interpreter = await self.interpreters.choose(
                launch.python, launch.python_fallback, account
            )
        task_dir = self.work_root / str(launch.task_id)
        if task_dir.exists():
            shutil.rmtree(task_dir)
        task_dir.mkdir(parents=True)
        scratch = self._make_scratch(launch.task_id, account)
        if launch.hostfile:  # a job member's MPI hostfile, readable by the task's account
            path = (scratch or task_dir) / "hostfile"
            path.write_text(launch.hostfile)
            path.chmod(0o644)
            launch.env = {**launch.env, "RIVER_HOSTFILE": str(path)}
        argv = self._argv(launch, scratch or task_dir, interpreter.path)
        cwd = launch.workdir or (str(scratch) if scratch else "")
        if launch.files:  # pushed files, in the task's own directory (task_inputs.py)
            home = scratch or task_dir / "files"
            owner = (account.uid, account.gid) if scratch else None
            await asyncio.to_thread(place_files, launch.files, home, owner)
            launch.env = {**launch.env, ENV_FILES_DIR: str(home)}
            cwd = launch.workdir or str(home)
        user = f"{account.uid}:{account.gid}" if scratch else ""
        netns = await self._task_network(launch)
        netns_file = task_netns.netns_path(netns) if netns else ""
        (task_dir / "launch.json").write_text(
            json.dumps(
                {
                    "task_id": str(launch.task_id),
                    "netns": netns,
                    "overlay_ip": launch.overlay_ip,
                    "scratch": str(scratch) if scratch else None,
                    "cwd": cwd,  # where `river put` places files when there is no scratch
                    "account": [account.uid, account.gid],  # `river put/get` copy as it
                }
            )
        )
        command = [
            self.python,
            "-S",
            supervise.__file__,
            "--dir",
            str(task_dir),
            "--memory",
            str(launch.memory or 0),
            "--cpus",
            ",".join(str(c) for c in launch.cpus),
            "--netns",
            netns_file,
            "--user",
            user,
            "--cwd",
            cwd,
            "--note",
            interpreter.note,
            "--",
            *argv,
        ]
        # The supervisor's stdout is the doorbell: a pipe it writes to when it has appended
        # records. Plain Popen + add_reader (not asyncio's subprocess transport, which kills
        # the child when closed): the supervisor must outlive this runner.
        bell_read, bell_write = os.pipe()
        env = task_environment(launch, account, str(scratch) if scratch else None, self.passed_env)
        proc: subprocess.Popen | None = None
        try:
            # A fork of the zygote when it answers (no interpreter start-up), else exec.
            pid = self.zygote.spawn(
                {
                    "dir": str(task_dir),
                    "argv": argv,
                    "memory": launch.memory or 0,
                    "cpus": list(launch.cpus),
                    "env": env,
                    "netns": netns_file,
                    "user": user,
                    "cwd": cwd,
                    "note": interpreter.note,
                },
                bell_write,
            )
            if pid is None:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=bell_write,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
                pid = proc.pid
        except BaseException:
            os.close(bell_read)
            if netns:
                await task_netns.remove_in_helper(netns)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            os.close(bell_write)
        (task_dir / supervise.PID_FILE).write_text(str(pid))
        running = _Running(launch.task_id, task_dir, pid, on_output, on_exit)
        running.netns, running.overlay_ip = netns, launch.overlay_ip
        self._tasks[launch.task_id] = running
        os.set_blocking(bell_read, False)
        self._bells[launch.task_id] = (bell_read, proc)
        asyncio.get_running_loop().add_reader(bell_read, self._on_bell, running)
        return pid

    async def _task_network(self, launch: TaskLaunch) -> str | None:
        """A namespace of the task's own when it holds a reserved overlay address (so it
        can bind it); None: it shares the runner's network. Raises when it cannot have
        the address it reserved."""
        if not launch.overlay_ip:
            return None
        if self.overlay_bridge is None:
            raise RuntimeError(
                f"task {launch.task_id} reserved overlay address {launch.overlay_ip}, but "
                "this runner has not joined the overlay (see the runner's log)"
            )
        name = task_netns.namespace_name(str(self.work_root), launch.task_id)
        await task_netns.create_in_helper(name, launch.overlay_ip, self.overlay_bridge)
        return name

    def _on_bell(self, running: _Running) -> None:
        """Read output when the supervisor rings; report the end when it exits."""
        bell_read, proc = self._bells[running.task_id]
        try:
            rang = os.read(bell_read, 4096)
        except BlockingIOError:
            return
        self._read_output(running)
        if rang:
            return
        # End of the pipe: the supervisor has exited (result.json was written before).
        self._close_bell(running.task_id)
        if proc is not None:
            proc.wait()  # reap it (the zygote's children are reaped by the kernel)
        if running.task_id in self._tasks:
            self._check_exit(running)
        if running.task_id in self._tasks:
            # No result and the supervisor still looks alive: it was killed before it could
            # record one (a kill right after launch) and the kernel closes its files before
            # it reaps it. Watch it by its files until it is gone, or the task would be
            # reported running for ever with nothing behind it.
            self._poll(running)

    def _close_bell(self, task_id: int) -> None:
        bell = self._bells.pop(task_id, None)
        if bell is not None:
            asyncio.get_running_loop().remove_reader(bell[0])
            os.close(bell[0])

    def _poll(self, running: _Running) -> None:
        """Watch an adopted task (no doorbell reaches us) by looking at its files."""
        running.polled = True
        self._tasks[running.task_id] = running
        if self._tail_task is None or self._tail_task.done():
            self._tail_task = asyncio.ensure_future(self._tail_loop())

    # ---- watching -------------------------------------------------------------------
    async def _tail_loop(self) -> None:
        while any(r.polled for r in self._tasks.values()):
            for running in [r for r in self._tasks.values() if r.polled]:
                self._read_output(running)
                self._check_exit(running)
            await asyncio.sleep(TAIL_INTERVAL)

    def _read_output(self, running: _Running) -> None:
        path = running.task_dir / supervise.OUTPUT_FILE
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size <= running.offset:
            return
        with open(path, "rb") as handle:
            handle.seek(running.offset)
            chunk = handle.read(size - running.offset)
        consumed = chunk.rfind(b"\n") + 1  # only whole records; a torn tail is read next time
        running.offset += consumed
        # Records are split on "\n" only: str.splitlines() would also cut at \r, \f, \x1c,
        # U+2028 ... inside a task's text, and every later line would be lost with it.
        for line in chunk[:consumed].decode("utf-8", errors="replace").split("\n")[:-1]:
            record = supervise.parse_record(line + "\n")
            if record is None or record[0] <= running.last_seq:
                continue
            seq, stream, ts, body, continued = record
            running.last_seq = seq
            if continued:
                running.on_output(stream, body, seq=seq, ts=ts, continued=True)  # type: ignore[call-arg]
            else:
                running.on_output(stream, body, seq=seq, ts=ts)  # type: ignore[call-arg]

    def _check_exit(self, running: _Running) -> None:
        result_path = running.task_dir / supervise.RESULT_FILE
        if not result_path.exists():
            if not _alive(running.supervisor_pid):
                # The supervisor died without a result (killed -9): the task is gone too.
                if running.kill_requested:  # killed before it could even record that
                    self._finish(running, Outcome(TaskState.KILLED, None, "killed on request"))
                else:
                    self._finish(
                        running, Outcome(TaskState.FAILED, None, "task supervisor vanished")
                    )
            return
        self._read_output(running)  # the last lines were written before result.json
        result = json.loads(result_path.read_text())
        self._finish(running, outcome_from_result(result))

    def _finish(self, running: _Running, outcome: Outcome) -> None:
        self._tasks.pop(running.task_id, None)
        (running.task_dir / REPORTED_MARKER).write_text(outcome.state.value)
        running.on_exit(running.task_id, outcome)
        if running.netns:  # the task's processes are gone: so goes its network
            cleanup = asyncio.ensure_future(task_netns.remove_in_helper(running.netns))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    # ---- control --------------------------------------------------------------------
    def _child_pid(self, running: _Running) -> int | None:
        try:
            return int((running.task_dir / supervise.CHILD_PID_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None

    async def kill(self, task_id: int) -> bool:
        running = self._tasks.get(task_id)
        if running is None:
            return False
        running.kill_requested = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.supervisor_pid, signal.SIGTERM)
        return True

    async def terminate(self, task_id: int, grace: float) -> bool:
        """SIGTERM the task's process group (thawed first), SIGKILL it after `grace`; the
        supervisor records the exit (the agent reports the time limit as the reason)."""
        running = self._tasks.get(task_id)
        child = self._child_pid(running) if running else None
        if running is None or child is None:
            return await self.kill(task_id)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signal.SIGCONT)
            os.killpg(child, signal.SIGTERM)
        running.paused = False
        asyncio.get_running_loop().call_later(grace, self._kill_group_if, running, child)
        return True

    def _kill_group_if(self, running: _Running, child: int) -> None:
        """The grace is over: SIGKILL what is left of that task's group."""
        if self._tasks.get(running.task_id) is running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)

    async def _signal_group(self, task_id: int, sig: int) -> bool:
        running = self._tasks.get(task_id)
        child = self._child_pid(running) if running else None
        if running is None or child is None:
            return False
        try:
            os.killpg(child, sig)
        except ProcessLookupError:
            return False
        running.paused = sig == signal.SIGSTOP
        if running.paused:
            await _wait_stopped(child)
        return True

    async def pause(self, task_id: int) -> bool:
        return await self._signal_group(task_id, signal.SIGSTOP)

    async def resume(self, task_id: int) -> bool:
        return await self._signal_group(task_id, signal.SIGCONT)

    def running(self) -> dict[int, str]:
        return {tid: ("paused" if r.paused else "running") for tid, r in self._tasks.items()}

    def cpu_seconds(self, task_id: int) -> float | None:
        running = self._tasks.get(task_id)
        return None if running is None else tree_cpu_seconds(running.supervisor_pid)

    def forward_address(self, task_id: int) -> str | None:
        """A task in a namespace of its own listens at its overlay address, which the
        runner reaches over its bridge; any other on the runner itself."""
        running = self._tasks.get(task_id)
        if running is None:
            return None
        return running.overlay_ip if running.netns else "127.0.0.1"

    async def adopt(
        self, output_for: Callable[[int], OutputCallback], on_exit: ExitCallback
    ) -> list[int]:
        """Pick up task directories a previous runner process left: still running ones are
        tailed again from the start (the host drops lines it already has by sequence
        number); finished but unreported ones are reported now."""
        adopted = []
        for task_dir in sorted(self.work_root.iterdir()):
            if not task_dir.is_dir() or (task_dir / REPORTED_MARKER).exists():
                continue
            try:
                task_id = int(task_dir.name)
                pid = int((task_dir / supervise.PID_FILE).read_text())
            except (ValueError, FileNotFoundError):
                continue
            running = _Running(task_id, task_dir, pid, output_for(task_id), on_exit)
            with contextlib.suppress(FileNotFoundError, ValueError):
                launched = json.loads((task_dir / "launch.json").read_text())
                running.netns, running.overlay_ip = (
                    launched.get("netns"),
                    launched.get("overlay_ip"),
                )
            self._poll(running)
            adopted.append(task_id)
        return adopted

    def forget(self, task_id: int) -> None:
        """Remove a finished task's directories once the host has its whole output."""
        if task_id in self._tasks:
            return
        task_dir = self.work_root / str(task_id)
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            scratch = json.loads((task_dir / "launch.json").read_text()).get("scratch")
            if scratch and Path(scratch).parent == self.scratch_root:
                shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(task_dir, ignore_errors=True)

    async def close(self) -> None:
        """Stop watching; the tasks themselves run on under their supervisors."""
        if self._tail_task:
            self._tail_task.cancel()
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=5)
        for task_id in list(self._bells):
            self._close_bell(task_id)
        # The fork server goes; supervisors it forked live on in their own sessions.
        await asyncio.to_thread(self.zygote.close)


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def _wait_stopped(pid: int, timeout: float = 2.0) -> None:
    """SIGSTOP lands asynchronously: answer 'paused' only once the task has stopped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                return
        except psutil.Error:
            return
        await asyncio.sleep(0.005)
