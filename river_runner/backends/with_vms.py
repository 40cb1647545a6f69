"""A runner's backend plus its VMs: launches that ask for a VM go to the `vm` backend,
everything else (and every VPS operation a VM does not have) to the runner's own backend.

Why a wrapper and not a second backend slot in the agent: the agent, its HTTP handlers and
the port forwarder all talk to one `Backend`; routing by task here keeps them unaware of
VMs. Only a runner whose VM probe succeeded is wrapped (river_runner/cli.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river_runner.backends.base import (
    Backend,
    ExecRefused,
    ExitCallback,
    OutputCallback,
    TaskLaunch,
)
from river_runner.backends.vm import VmBackend


class WithVms(Backend):
    def __init__(self, inner: Backend, vms: VmBackend) -> None:
        self.inner = inner
        self.vms = vms
        self.name = inner.name  # what the host places containers by

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class lacks: the inner backend's extras
        # (exec, account, scratch_root ...), found by the agent with getattr/hasattr.
        return getattr(self.__dict__["inner"], name)

    @property  # type: ignore[override]
    def overlay_bridge(self) -> str | None:
        return self.inner.overlay_bridge

    @overlay_bridge.setter
    def overlay_bridge(self, value: str | None) -> None:
        self.inner.overlay_bridge = value
        self.vms.overlay_bridge = value  # VMs with a reservation get a tap on it

    def _for(self, task_id: int) -> Backend | VmBackend:
        return self.vms if self.vms.owns(task_id) else self.inner

    async def start(
        self, launch: TaskLaunch, on_output: OutputCallback, on_exit: ExitCallback
    ) -> int | str:
        if launch.vm:
            return await self.vms.start(launch, on_output, on_exit)
        return await self.inner.start(launch, on_output, on_exit)

    async def kill(self, task_id: int) -> bool:
        return await self._for(task_id).kill(task_id)

    async def pause(self, task_id: int) -> bool:
        return await self._for(task_id).pause(task_id)

    async def resume(self, task_id: int) -> bool:
        return await self._for(task_id).resume(task_id)

    def running(self) -> dict[int, str]:
        return {**self.inner.running(), **self.vms.running()}

    def cpu_seconds(self, task_id: int) -> float | None:
        return (
            self.vms.cpu_seconds(task_id)
            if self.vms.owns(task_id)
            else self.inner.cpu_seconds(task_id)
        )

    def forward_address(self, task_id: int) -> str | None:
        if self.vms.owns(task_id):
            return "127.0.0.1"
        return self.inner.forward_address(task_id)

    async def forward_target(self, task_id: int, port: int) -> tuple[str, int] | None:
        return await self._for(task_id).forward_target(task_id, port)

    # Exec: a VM's over SSH (river_runner/vm_ssh.py), anything else the inner backend's.
    def _inner_exec(self, name: str) -> Any:
        found = getattr(self.inner, name, None)
        if found is None:
            raise ExecRefused(f"the {self.inner.name} backend has no exec")
        return found

    def exec_refusal(self, task_id: int) -> str | None:
        if self.vms.owns(task_id):
            return self.vms.exec_refusal(task_id)
        if getattr(self.inner, "open_exec", None) is None:
            return f"the {self.inner.name} backend has no exec"
        return None

    def open_exec(self, task_id: int, command: list[str]) -> tuple[str, Any] | None:
        if self.vms.owns(task_id):
            return self.vms.open_exec(task_id, command)
        return self._inner_exec("open_exec")(task_id, command)  # type: ignore[no-any-return]

    def run_exec(self, task_id: int, command: list[str], detach: bool) -> dict[str, Any] | None:
        if self.vms.owns(task_id):
            return self.vms.run_exec(task_id, command, detach)
        return self._inner_exec("run_exec")(task_id, command, detach)  # type: ignore[no-any-return]

    def resize_exec(self, exec_id: str, rows: int, cols: int) -> None:
        if not self.vms.resize_exec(exec_id, rows, cols):
            self._inner_exec("resize_exec")(exec_id, rows, cols)

    async def snapshot(self, task_id: int, repository: str, keep: int) -> dict[str, Any] | None:
        if self.vms.owns(task_id):  # its disk, once the stop has shut it down (docs/vps.md)
            return await self.vms.snapshot(task_id, repository, keep)
        inner = getattr(self.inner, "snapshot", None)
        return None if inner is None else await inner(task_id, repository, keep)

    async def forget_snapshots(self, repository: str, only: list[int] | None = None) -> list[int]:
        """A deleted VPS (`only` None) loses its VM disk and its snapshots too, if it had
        one here; `only`: those snapshots of its disk, or of its container image."""
        vps_id = repository.rpartition("/")[2]
        if only is None:
            await self.vms.remove_disk(vps_id)
        elif (self.vms.directory(vps_id) / "disk.qcow2").exists():
            return await self.vms.forget_snapshots(vps_id, only)
        inner = getattr(self.inner, "forget_snapshots", None)
        return [] if inner is None else await inner(repository, only)

    async def adopt(
        self, output_for: Callable[[int], OutputCallback], on_exit: ExitCallback
    ) -> list[int]:
        """The inner backend's leftovers and the VMs a previous runner left running."""
        vms = await self.vms.adopt(output_for, on_exit)
        return [*await self.inner.adopt(output_for, on_exit), *vms]

    async def close(self) -> None:
        await self.vms.close()
        await self.inner.close()
