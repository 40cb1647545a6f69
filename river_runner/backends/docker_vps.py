"""What a VPS (a long-lived task container) needs beyond running a task: terminals, commands,
snapshots and a reachable address.

Why a module of its own: these operations act on a container the backend already watches,
but they are no part of the task lifecycle (start, output, exit) that
river_runner.backends.docker is about. `DockerVpsOps` is a mixin DockerBackend inherits;
the runner agent (river_runner.app, river_runner.port_forward) finds the operations on the
backend with hasattr, so a backend without them simply has no VPS support.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

if TYPE_CHECKING:
    from river_runner.backends.docker import _Watched


class DockerVpsOps:
    """VPS operations on the containers of a DockerBackend (the class this is mixed into
    provides the attributes below)."""

    _tasks: dict[int, _Watched]
    api: docker.APIClient
    client: docker.DockerClient
    _call: Callable[..., Awaitable[Any]]

    # ---- exec with a TTY (VPS terminals) ---------------------------------------------
    def open_exec(self, task_id: int, command: list[str]) -> tuple[str, Any] | None:
        """Start `command` in the task's container with a TTY (blocking); (exec id, raw
        socket) or None when the task does not run here."""
        watched = self._tasks.get(task_id)
        if watched is None:
            return None
        created = self.api.exec_create(
            watched.container_id,
            command,
            stdin=True,
            tty=True,
            environment={"TERM": "xterm-256color"},
        )
        sock = self.api.exec_start(created["Id"], tty=True, socket=True)
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(None)  # the client's read timeout would end an idle shell
        return created["Id"], raw

    def run_exec(
        self, task_id: int, command: list[str], detach: bool, limit: int = 1 << 20
    ) -> dict[str, Any] | None:
        """Run `command` in the task's container (blocking): detached (it keeps running; no
        answer but its start), or to its end with its exit code and (at most `limit`
        bytes of) its merged output. None when the task does not run here."""
        watched = self._tasks.get(task_id)
        if watched is None:
            return None
        created = self.api.exec_create(watched.container_id, command, stdout=True, stderr=True)
        if detach:
            self.api.exec_start(created["Id"], detach=True)
            return {"detached": True}
        output = self.api.exec_start(created["Id"]) or b""
        code = self.api.exec_inspect(created["Id"]).get("ExitCode")
        return {"exit_code": code, "output": output[-limit:].decode("utf-8", "replace")}

    def resize_exec(self, exec_id: str, rows: int, cols: int) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self.api.exec_resize(exec_id, height=rows, width=cols)

    # ---- VPS snapshots ----------------------------------------------------------------
    def _snapshot_tags(self, repository: str) -> list[int]:
        numbers: set[int] = set()
        for image in self.client.images.list(name=repository):
            for tag in image.tags:
                repo, _, number = tag.rpartition(":")
                if repo == repository and number.isdigit():
                    numbers.add(int(number))
        return sorted(numbers)

    async def snapshot(self, task_id: int, repository: str, keep: int) -> dict[str, Any] | None:
        """`docker commit` the task's container to `repository:<n+1>` and keep the newest
        `keep` tags of `repository`; None when the task does not run here."""
        watched = self._tasks.get(task_id)
        if watched is None:
            return None

        def work() -> dict[str, Any]:
            numbers = self._snapshot_tags(repository)
            number = (numbers[-1] if numbers else 0) + 1
            self.api.commit(
                watched.container_id,
                repository=repository,
                tag=str(number),
                pause=not watched.paused,  # a paused container is already frozen
            )
            numbers.append(number)
            for old in numbers[: max(0, len(numbers) - max(1, keep))]:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.images.remove(f"{repository}:{old}")
            kept = self._snapshot_tags(repository)
            return {"image": f"{repository}:{number}", "snapshots": kept}

        return await self._call(work)

    async def forget_snapshots(self, repository: str, only: list[int] | None = None) -> list[int]:
        """Remove the tags `only` of `repository` (every tag: a deleted VPS); the numbers
        removed."""

        def work() -> list[int]:
            numbers = [n for n in self._snapshot_tags(repository) if only is None or n in only]
            for number in numbers:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.images.remove(f"{repository}:{number}", force=True)
            return numbers

        return await self._call(work)

    # ---- port forwarding ----------------------------------------------------------------
    def forward_address(self, task_id: int) -> str | None:
        """The container's address on a network this runner reaches it by (blocking): the
        default bridge where it has one, else its first network. Looked up once per
        container (it keeps its address while it runs): every proxied request asks."""
        watched = self._tasks.get(task_id)
        if watched is None:
            return None
        if watched.address is None:
            watched.address = self._inspect_address(watched.container_id)
        return watched.address

    def _inspect_address(self, container_id: str) -> str | None:
        try:
            attrs = self.api.inspect_container(container_id)
        except docker.errors.APIError:
            return None
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        ordered = sorted(networks.items(), key=lambda item: item[0] != "bridge")
        for _, network in ordered:
            if network.get("IPAddress"):
                return network["IPAddress"]
        return None
