"""Container environments (as in KohakuRiver): build on the host, export, run anywhere.

An environment is a long-lived container on the host machine's Docker daemon, started from an
image; users run commands in it (pip install ...), then export it: the container is committed
and `docker save`d to `<shared_dir>/environments/NAME.tar`, with `NAME.json` beside it saying
who exported what and when. A task that names the environment makes its runner `docker load`
the tarball (again when the tarball is newer than what it loaded; see
river_runner.containers).

Every docker SDK call is blocking, so the handlers run them on this service's own small
thread pool; a slow export or exec never stalls the server's loop or its default executor.

Who may do what: anyone signed in lists; users create, and the owner (or an operator) execs,
exports and deletes. An exported tarball keeps its owner: re-exporting or deleting someone
else's tarball needs the operator role.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from river_runner.containers import (
    ENV_DIR,
    ENV_REPOSITORY,
    env_image,
    env_tarball,
    parse_env_name,
    parse_image,
)
from river_runner.spec import SpecError
from river_server.auth import role_at_least

if TYPE_CHECKING:
    from river_server.services import River

LABEL_KIND = "river.kind"
LABEL_ENV = "river.environment"
LABEL_OWNER = "river.owner"
LABEL_IMAGE = "river.image"
KIND_ENV = "environment"
CONTAINER_PREFIX = "river-env-"
MAX_OUTPUT = 1 << 20  # exec output kept (the tail), bytes
DEFAULT_EXEC_TIMEOUT = 300.0


class EnvironmentError(Exception):  # noqa: A001 - scoped to this module, like TaskError
    """A request about an environment that can not be honoured; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EnvironmentService:
    def __init__(self, river: River) -> None:
        self.river = river
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="river-env")

    @property
    def shared_dir(self) -> Path:
        shared = self.river.config.shared_dir
        assert shared is not None  # HostConfig fills it in
        return Path(shared)

    @property
    def env_dir(self) -> Path:
        return self.shared_dir / ENV_DIR

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    # ---- docker ---------------------------------------------------------------------
    def client(self) -> Any:
        """The host machine's Docker daemon (API version negotiated), or 503."""
        with self._client_lock:
            if self._client is None:
                try:
                    import docker

                    client = docker.from_env(version="auto", timeout=600)
                    client.ping()
                except Exception as exc:
                    raise EnvironmentError(
                        503, f"no Docker daemon answers on the River host: {exc}"
                    ) from None
                self._client = client
            return self._client

    def _container(self, name: str, required: bool = True) -> Any:
        import docker.errors

        try:
            container = self.client().containers.get(CONTAINER_PREFIX + name)
        except docker.errors.NotFound:
            container = None
        if container is not None and (container.labels or {}).get(LABEL_KIND) != KIND_ENV:
            container = None  # a stranger's container with our naming: not ours to touch
        if container is None and required:
            raise EnvironmentError(
                404,
                f"no environment container {name!r}; create it with "
                f"%river env create {name} --image IMAGE",
            )
        return container

    @staticmethod
    def _name(name: str) -> str:
        try:
            return parse_env_name(name)
        except SpecError as exc:
            raise EnvironmentError(400, str(exc)) from None

    @staticmethod
    def _may_touch(owner: str | None, user: str, role: str) -> bool:
        return owner in (None, "", user) or role_at_least(role, "operator")

    # ---- reading --------------------------------------------------------------------
    def _meta(self, name: str) -> dict[str, Any] | None:
        tarball = env_tarball(self.shared_dir, name)
        try:
            stat = tarball.stat()
        except FileNotFoundError:
            return None
        meta: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(tarball.with_suffix(".json").read_text())
        return {
            "path": str(tarball),
            "size": stat.st_size,
            "exported_at": meta.get("exported_at", stat.st_mtime),
            "owner": meta.get("owner"),
            "image": meta.get("image"),
        }

    def _describe(self, name: str, container: Any | None) -> dict[str, Any]:
        labels = (container.labels or {}) if container is not None else {}
        exported = self._meta(name)
        return {
            "name": name,
            "owner": labels.get(LABEL_OWNER) or (exported or {}).get("owner"),
            "image": labels.get(LABEL_IMAGE) or (exported or {}).get("image"),
            "state": container.status if container is not None else None,
            "container": container.short_id if container is not None else None,
            "created_at": _created(container),
            "exported": exported,
        }

    def list(self) -> list[dict[str, Any]]:
        containers = {
            (c.labels or {}).get(LABEL_ENV): c
            for c in self.client().containers.list(
                all=True, filters={"label": f"{LABEL_KIND}={KIND_ENV}"}, ignore_removed=True
            )
        }
        names = {n for n in containers if n}
        if self.env_dir.is_dir():
            names.update(p.stem for p in self.env_dir.glob("*.tar"))
        return [self._describe(n, containers.get(n)) for n in sorted(names)]

    def get(self, name: str) -> dict[str, Any]:
        name = self._name(name)
        container = self._container(name, required=False)
        if container is None and self._meta(name) is None:
            raise EnvironmentError(404, f"no environment {name!r}")
        return self._describe(name, container)

    # ---- changing -------------------------------------------------------------------
    def create(self, owner: str, name: str, image: str) -> dict[str, Any]:
        """Start the environment container from `image` (pulled when not present)."""
        import docker.errors

        name = self._name(name)
        try:
            image = parse_image(image)
        except SpecError as exc:
            raise EnvironmentError(400, str(exc)) from None
        client = self.client()
        with self._name_locks[name]:
            if self._container(name, required=False) is not None:
                raise EnvironmentError(
                    409, f"environment {name!r} already has a container; delete it first"
                )
            config = {
                "image": image,
                "command": ["sleep", "infinity"],
                "name": CONTAINER_PREFIX + name,
                "detach": True,
                "init": True,  # sleep is not PID 1: a stop ends it at once
                "labels": {
                    LABEL_KIND: KIND_ENV,
                    LABEL_ENV: name,
                    LABEL_OWNER: owner,
                    LABEL_IMAGE: image,
                },
            }
            try:
                try:
                    container = client.containers.run(**config)
                except docker.errors.ImageNotFound:
                    client.images.pull(image)
                    container = client.containers.run(**config)
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise EnvironmentError(
                        409, f"a container named {CONTAINER_PREFIX + name} already exists"
                    ) from None
                raise EnvironmentError(
                    400, f"cannot start environment {name!r} from {image!r}: {_explain(exc)}"
                ) from None
            except docker.errors.DockerException as exc:
                raise EnvironmentError(
                    400, f"cannot start environment {name!r} from {image!r}: {_explain(exc)}"
                ) from None
            container.reload()
            if container.status != "running":
                logs = container.logs(tail=20).decode(errors="replace").strip()
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
                raise EnvironmentError(
                    400,
                    f"environment {name!r} stopped at once (the image needs a `sleep` command "
                    f"that accepts 'infinity'): {logs or container.status}",
                )
            return self._describe(name, container)

    def delete(self, user: str, role: str, name: str, tarball: bool = False) -> dict[str, Any]:
        import docker.errors

        name = self._name(name)
        removed: list[str] = []
        with self._name_locks[name]:
            container = self._container(name, required=False)
            meta = self._meta(name)
            if container is None and (meta is None or not tarball):
                hint = "" if tarball else " (add tarball=1 to delete its exported tarball)"
                raise EnvironmentError(404, f"no environment container {name!r}{hint}")
            owner = (container.labels or {}).get(LABEL_OWNER) if container is not None else None
            if container is not None and not self._may_touch(owner, user, role):
                raise EnvironmentError(403, f"environment {name!r} belongs to {owner}")
            if tarball and meta is not None and not self._may_touch(meta["owner"], user, role):
                raise EnvironmentError(
                    403, f"the exported tarball of {name!r} belongs to {meta['owner']}"
                )
            if container is not None:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
                removed.append("container")
            if tarball and meta is not None:
                path = env_tarball(self.shared_dir, name)
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
                removed.append("tarball")
                self._untag_all(name)
        return {"name": name, "removed": removed}

    def export(self, user: str, role: str, name: str) -> dict[str, Any]:
        """Commit the container and save it to the shared dir (atomically replaced)."""
        import docker.errors

        name = self._name(name)
        with self._name_locks[name]:
            container = self._container(name)
            owner = (container.labels or {}).get(LABEL_OWNER)
            if not self._may_touch(owner, user, role):
                raise EnvironmentError(403, f"environment {name!r} belongs to {owner}")
            meta = self._meta(name)
            if meta is not None and not self._may_touch(meta["owner"], user, role):
                raise EnvironmentError(
                    403, f"the exported tarball of {name!r} belongs to {meta['owner']}"
                )
            started = time.monotonic()
            client = self.client()
            try:
                previous = client.images.get(env_image(name)).id
            except docker.errors.ImageNotFound:
                previous = None
            image = self._commit(container, name)
            self.env_dir.mkdir(parents=True, exist_ok=True)
            target = env_tarball(self.shared_dir, name)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "wb") as out:
                    for chunk in image.save(named=env_image(name)):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except (OSError, docker.errors.DockerException) as exc:
                tmp.unlink(missing_ok=True)
                raise EnvironmentError(500, f"cannot export {name!r}: {exc}") from None
            meta_doc = {
                "name": name,
                "owner": owner or user,
                "image": (container.labels or {}).get(LABEL_IMAGE),
                "image_id": image.id,
                "exported_at": time.time(),
                "exported_by": user,
            }
            meta_tmp = target.with_name(f".{name}.json.{uuid.uuid4().hex}.tmp")
            meta_tmp.write_text(json.dumps(meta_doc))
            os.replace(meta_tmp, target.with_suffix(".json"))
            if previous and previous != image.id:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(previous)  # fails (kept) while something uses it
            self.river.log.info(
                "exported environment %s to %s (%d bytes) in %.1fs",
                name,
                target,
                target.stat().st_size,
                time.monotonic() - started,
            )
            return self._describe(name, container)

    def _untag_all(self, name: str) -> None:
        """Drop every river-env/NAME tag here (an image in use by a container stays)."""
        import docker.errors

        client = self.client()
        with contextlib.suppress(docker.errors.APIError):
            for image in client.images.list(name=f"{ENV_REPOSITORY}/{name}"):
                for tag in image.tags:
                    if tag.startswith(f"{ENV_REPOSITORY}/{name}:"):
                        with contextlib.suppress(docker.errors.APIError):
                            client.images.remove(tag)

    @staticmethod
    def _commit(container: Any, name: str) -> Any:
        """Commit keeping the original image's command and entrypoint (the container runs
        `sleep infinity`) and without River's bookkeeping labels."""
        config = container.image.attrs.get("Config") or {}
        labels = dict(config.get("Labels") or {})
        labels[LABEL_ENV] = name
        conf = {"Cmd": config.get("Cmd"), "Entrypoint": config.get("Entrypoint"), "Labels": labels}
        return container.commit(repository=f"{ENV_REPOSITORY}/{name}", tag="latest", conf=conf)

    def exec(
        self,
        user: str,
        role: str,
        name: str,
        command: list[str] | str,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
    ) -> dict[str, Any]:
        """Run a command in the environment container; stdout and stderr together."""
        name = self._name(name)
        if isinstance(command, str):
            if not command.strip():
                raise EnvironmentError(400, "'command' must not be empty")
            argv = ["/bin/sh", "-c", command]
        elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
            argv = list(command)
        else:
            raise EnvironmentError(400, "'command' must be an argv list or a shell string")
        container = self._container(name)
        owner = (container.labels or {}).get(LABEL_OWNER)
        if not self._may_touch(owner, user, role):
            raise EnvironmentError(403, f"environment {name!r} belongs to {owner}")
        if container.status != "running":
            raise EnvironmentError(409, f"environment {name!r} is {container.status}, not running")
        api = self.client().api
        started = time.monotonic()
        exec_id = api.exec_create(container.id, argv, stdout=True, stderr=True)["Id"]
        output = bytearray()
        truncated = False
        stream = api.exec_start(exec_id, stream=True, demux=False)
        for chunk in stream:
            output.extend(chunk)
            if len(output) > MAX_OUTPUT:
                del output[: len(output) - MAX_OUTPUT]
                truncated = True
            if time.monotonic() - started > timeout:
                with contextlib.suppress(Exception):
                    stream.close()
                raise EnvironmentError(504, f"the command in {name!r} ran longer than {timeout:g}s")
        code = api.exec_inspect(exec_id).get("ExitCode")
        return {
            "name": name,
            "exit_code": code,
            "output": output.decode("utf-8", errors="replace"),
            "truncated": truncated,
            "seconds": round(time.monotonic() - started, 3),
        }


def _created(container: Any | None) -> str | None:
    if container is None:
        return None
    return (container.attrs or {}).get("Created")


def _explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)
