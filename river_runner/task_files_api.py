"""The runner's routes for `river put` / `river get`: POST /api/tasks/{id}/files/(put|get).

The host calls them for the owner of a running task or VPS placed here. A put fetches the
blob the host granted for the task (the digest cache, river_runner/data.py) and places it;
a get packs PATH into a temp file and uploads it to the host as a blob of the task's owner
(PUT /river/api/runner/tasks/{id}/files), answering its digest and size.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
from tornado import web

from river_runner import task_files
from river_runner.api_base import RunnerHandler
from river_runner.data import CHUNK, DIGEST_HEADER, DataFetchError
from river_runner.digest import file_digest
from river_runner.task_files import FileError


def _process_root(backend: Any, task_id: int) -> tuple[Path, tuple[int, int]]:
    """The running task's own directory and the (uid, gid) it runs as: files are copied as
    that account, so a put or get reaches nothing the task itself could not (each user's
    tasks have their own uid under a root runner, river_runner/task_account.py)."""
    running = backend._tasks.get(task_id)
    if running is None:
        raise FileError(404, f"task {task_id} is not running here")
    launched = json.loads((running.task_dir / "launch.json").read_text())
    root = launched.get("scratch") or launched.get("cwd")
    if not root:
        raise FileError(409, f"task {task_id} has no directory of its own to copy files into")
    uid, gid = launched.get("account") or (backend.account.uid, backend.account.gid)
    return Path(root), (int(uid), int(gid))


def _container(backend: Any, task_id: int) -> Any:
    watched = backend._tasks.get(task_id)
    if watched is None:
        raise FileError(404, f"task {task_id} is not running here")
    return backend.client.containers.get(watched.container_id)


class TaskFilesHandler(RunnerHandler):
    async def post(self, task_id: str, action: str) -> None:
        body = self.json_body()
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise web.HTTPError(400, "path must be a non-empty string")
        try:
            if action == "put":
                result = await self._put(int(task_id), path, str(body.get("digest", "")))
            else:
                result = await self._get(int(task_id), path)
        except FileError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        except DataFetchError as exc:
            raise web.HTTPError(502, str(exc)) from None
        self.finish(result)

    async def _put(self, task_id: int, path: str, digest: str) -> dict[str, Any]:
        agent = self.agent
        blob = await agent.data.fetch(
            agent._http, agent._auth(), task_id, digest, base=agent.hosts.current
        )
        backend = agent.backend
        if backend.name == "docker":
            container = _container(backend, task_id)
            placed = await asyncio.to_thread(task_files.put_docker, container, path, blob)
            return {"path": placed}
        root, account = _process_root(backend, task_id)
        await task_files.put_process(backend.python, account, root, path, blob)
        return {"path": path}

    async def _get(self, task_id: int, path: str) -> dict[str, Any]:
        agent = self.agent
        backend = agent.backend
        out = agent.data.tmp / f"get-{task_id}.{time.monotonic_ns()}"
        try:
            if backend.name == "docker":
                container = _container(backend, task_id)
                await asyncio.to_thread(task_files.get_docker, container, path, out)
            else:
                root, account = _process_root(backend, task_id)
                out.touch(mode=0o600)
                await task_files.get_process(backend.python, account, root, path, out)
            return await _upload(agent, task_id, out)
        finally:
            out.unlink(missing_ok=True)


async def _upload(agent: Any, task_id: int, path: Path) -> dict[str, Any]:
    """Send the packed file to the host as the task owner's blob (bounds checked there)."""
    digest = await asyncio.to_thread(file_digest, path)
    size = path.stat().st_size

    async def body() -> Any:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    try:
        response = await agent._http.put(
            f"{agent.hosts.current}/river/api/runner/tasks/{task_id}/files",
            content=body(),
            headers={**agent._auth(), DIGEST_HEADER: digest, "Content-Length": str(size)},
            timeout=120.0,
        )
    except httpx.HTTPError as exc:
        raise FileError(
            413,
            f"the packed files ({size} bytes) could not be sent: {exc or type(exc).__name__} "
            "(over data_task_max_bytes or data_user_max_bytes?)",
        ) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise FileError(response.status_code, str(message))
    return {"digest": digest, "size": size}
