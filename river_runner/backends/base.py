"""The contract every execution backend (process, docker) fulfils for the runner agent."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from river_runner.protocol import TaskState

# on_output(stream, text, seq=None, ts=None): one line (without newline) of stdout or
# stderr. Backends that number lines durably (process) pass seq; others leave it to the
# agent, which numbers them in arrival order.
OutputCallback = Callable[..., None]
# on_exit(task_id, outcome): called once when a task ends, whatever ended it.
ExitCallback = Callable[[int, "Outcome"], None]


@dataclass
class TaskLaunch:
    """Everything a backend needs to start one task; built by the host at placement."""

    task_id: int
    kind: str  # "command" (argv or shell string) or "python" (script body)
    command: list[str] | str | None = None
    script: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cpus: list[int] = field(default_factory=list)
    memory: int = 0
    gpus: list[int] = field(default_factory=list)
    workdir: str | None = None
    # Process backend: the interpreter of a python task (a path or a --python-env name);
    # `python_fallback`: when it is not on this node, the runner's own runs, and says so.
    python: str | None = None
    python_fallback: bool = False
    image: str | None = None
    environment: str | None = None  # a tarball environment from the shared dir (docker)
    # The sha256 the host recorded when it exported `environment`: the runner loads only a
    # tarball with this digest (the shared dir is storage, not a trusted source).
    environment_digest: str | None = None
    # Host paths a mount's source must lie under once resolved on this node; None: any
    # (an operator's task). Set by the host for users' tasks with mounts.
    mount_prefixes: list[str] | None = None
    mounts: list[str] = field(default_factory=list)
    privileged: bool = False
    name: str | None = None
    overlay_ip: str | None = None  # the task's reserved overlay address (ip_token), if any
    # A job member's MPI hostfile (text); the backend writes it and sets RIVER_HOSTFILE.
    hostfile: str | None = None
    # A job member's launcher: arguments between the interpreter and the script of a
    # python task (`-m torch.distributed.run --nnodes N ...`), built by the host.
    launcher: list[str] = field(default_factory=list)
    # A `network: host` job's member: its node's own network stack (docker: network_mode
    # host, no overlay network); the process backend runs there anyway.
    host_network: bool = False
    hostname: str | None = None  # the container's hostname (VPSes: vps-<id>)
    # A VM VPS (river_runner/backends/vm.py): {"vps_id", "disk": bytes}; None: no VM.
    vm: dict[str, Any] | None = None
    # The data plane: {"push": {name: {"digest", "size"}}, "pull": [names]} (river_runner/data.py)
    data: dict[str, Any] | None = None
    # Seconds it may run, counted from its start here (None: no limit), and the seconds
    # between SIGTERM and SIGKILL at the limit (river_runner/agent.py enforces both).
    time_limit: float | None = None
    kill_grace: float = 30.0
    # Pushed files: NAME -> the cached blob's path here, set by the agent once fetched
    # (river_runner/task_inputs.py); the backend places them before the task starts.
    files: dict[str, str] = field(default_factory=dict)
    # The owner's stable number (their account id on the host): a root runner's process
    # tasks run as uid `--task-uid-range` first + this (river_runner/task_account.py).
    user_number: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TaskLaunch:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in body.items() if k in known}
        data["task_id"] = int(body["task_id"])
        return cls(**data)


@dataclass
class Outcome:
    """How a task ended, in the host's vocabulary."""

    state: TaskState
    exit_code: int | None = None
    detail: str = ""


class ExecRefused(Exception):
    """A task cannot have a terminal or run a command now, for a reason the caller can act
    on (the runner answers 409 with it): a backend without exec, a VM without its key."""


class Backend(abc.ABC):
    """Runs tasks somewhere (a process group, a container) and reports how they end."""

    name: str = "abstract"
    # The runner's overlay bridge once the runner has joined the overlay (set by the agent's
    # OverlayMember), else None: a backend puts tasks with reserved addresses on it.
    overlay_bridge: str | None = None

    @abc.abstractmethod
    async def start(
        self, launch: TaskLaunch, on_output: OutputCallback, on_exit: ExitCallback
    ) -> int | str:
        """Start the task; return a handle (pid, container id). Raise to refuse it."""

    @abc.abstractmethod
    async def kill(self, task_id: int) -> bool:
        """Stop the task for good; its on_exit reports KILLED. False if unknown."""

    async def terminate(self, task_id: int, grace: float) -> bool:
        """SIGTERM the task, SIGKILL it `grace` seconds later if it still runs (a time
        limit: the task may save its work). Default: a plain kill. False if unknown."""
        return await self.kill(task_id)

    @abc.abstractmethod
    async def pause(self, task_id: int) -> bool: ...

    @abc.abstractmethod
    async def resume(self, task_id: int) -> bool: ...

    @abc.abstractmethod
    def running(self) -> dict[int, str]:
        """Task IDs this backend currently runs, mapped to 'running' or 'paused'."""

    def cpu_seconds(self, task_id: int) -> float | None:
        """CPU seconds the task has used so far (river_runner/task_cpu.py), for the host's
        idle culling; None when unknown (then the host never culls it as idle)."""
        return None

    def forward_address(self, task_id: int) -> str | None:
        """The address a task's ports are reached at from this runner (port forwarding), or
        None when the task does not run here. A process task listens on the runner itself."""
        return "127.0.0.1" if task_id in self.running() else None

    async def forward_target(self, task_id: int, port: int) -> tuple[str, int] | None:
        """(address, port) where a task's `port` is reached from this runner; None when the
        task does not run here. The same port at `forward_address` unless a backend maps
        ports (a VM's user-mode network forwards loopback ports to the guest)."""
        loop = asyncio.get_running_loop()
        address = await loop.run_in_executor(None, self.forward_address, task_id)
        return None if address is None else (address, port)

    async def adopt(
        self, output_for: Callable[[int], OutputCallback], on_exit: ExitCallback
    ) -> list[int]:
        """Take over tasks left by a previous runner process; return their IDs.
        `output_for(task_id)` gives the on_output callback for an adopted task."""
        return []

    async def close(self) -> None:
        """Release resources on shutdown; running tasks keep running where possible."""
        return None
