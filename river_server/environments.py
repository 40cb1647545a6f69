"""Container environments (as in KohakuRiver): build on the host, export, run anywhere.

An environment is a long-lived container on the host machine's Docker daemon, started from an
image; users run commands in it (pip install ...), then export it: the container is committed
and `docker save`d to `<shared_dir>/environments/NAME.tar`. The export's owner and sha256 go
to the database (`db.EnvironmentExport`), never to a file beside the tarball: the shared dir
is reachable by tasks, so it is storage, not a record. A task that names the environment
makes its runner load the tarball only if it has that digest (river_runner.backends.docker_env).

The head node's Docker is shared by every user, so environment containers are bounded
(`EnvironmentLimits`: CPUs, memory, pids, dropped capabilities, no-new-privileges, a count
per user) and so are execs (a time limit after which the command is killed, a count per
user). Docker SDK calls block: quick ones (list, create, delete) run on one small pool and
long ones (exec, export) on another, admitted per user, so a user whose exec hangs never
delays anyone else's request.

Who may do what: anyone signed in lists; users create, and the owner (or an operator) execs,
exports and deletes. An exported tarball keeps its owner: re-exporting or deleting someone
else's tarball needs the operator role. Running a task in an environment needs its owner
(or an operator): see `check_usable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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
from river_server import db
from river_server.auth import role_at_least
from river_server.environment_exec import run_bounded

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

LABEL_KIND = "river.kind"
LABEL_ENV = "river.environment"
LABEL_OWNER = "river.owner"
LABEL_IMAGE = "river.image"
KIND_ENV = "environment"
CONTAINER_PREFIX = "river-env-"
MAX_OUTPUT = 1 << 20  # exec output kept (the tail), bytes
DEFAULT_EXEC_TIMEOUT = 300.0
# Docker's default set minus what building an environment does not need (raw sockets,
# mknod, setfcap/setpcap, chroot, binding low ports, audit): root in the container can
# still install packages (chown, file modes, apt's privilege drop).
ENV_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL"]


@dataclass(frozen=True)
class EnvironmentLimits:
    """Bounds on environment containers and execs (c.RiverHost.environment_*)."""

    cpus: float = 2.0  # CPUs (CFS quota) per environment container; 0: no limit
    memory: int = 4 << 30  # bytes, swap included; 0: no limit
    pids: int = 1024  # processes per environment container; 0: no limit
    per_user: int = 3  # environment containers one user may have at once
    exec_timeout: float = 1800.0  # most seconds one exec may run (a request may ask less)
    execs_per_user: int = 2  # execs/exports one user may run at once
    exec_workers: int = 8  # execs/exports running at once, all users together


class EnvironmentError(Exception):  # noqa: A001 - scoped to this module, like TaskError
    """A request about an environment that can not be honoured; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EnvironmentService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        log: logging.Logger,
        limits: EnvironmentLimits,
        shared_dir: Path,
    ) -> None:
        self.sessions = sessions
        self.log = log
        self._shared_dir = shared_dir
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._owner_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.limits: EnvironmentLimits = limits
        # Quick calls (list, get, create, delete) never wait behind a long exec or export.
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="river-env")
        self.long_executor = ThreadPoolExecutor(
            max_workers=max(1, self.limits.exec_workers), thread_name_prefix="river-env-exec"
        )
        self._long_running: dict[str, int] = defaultdict(int)  # user → execs/exports now
        self._long_lock = threading.Lock()

    @property
    def shared_dir(self) -> Path:
        return Path(self._shared_dir)

    @property
    def env_dir(self) -> Path:
        return self.shared_dir / ENV_DIR

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.long_executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    def submit_long(self, user: str, fn: Any, *args: Any, **kwargs: Any) -> Future:
        """Run an exec or export on the long pool, or refuse (429) when the user already runs
        `execs_per_user` of them or the pool is busy: a queue would let one user's hanging
        commands delay everyone's."""
        limits = self.limits
        with self._long_lock:
            if self._long_running[user] >= limits.execs_per_user:
                raise EnvironmentError(
                    429,
                    f"you already run {self._long_running[user]} environment command(s) or "
                    f"export(s), the most one user may (c.RiverHost.environment_execs_per_user"
                    f" = {limits.execs_per_user}); wait for one to end",
                )
            if sum(self._long_running.values()) >= limits.exec_workers:
                raise EnvironmentError(
                    429,
                    f"{limits.exec_workers} environment commands are running on the host "
                    "(c.RiverHost.environment_exec_workers); try again shortly",
                )
            self._long_running[user] += 1

        def done(_: Future) -> None:
            with self._long_lock:
                self._long_running[user] -= 1
                if self._long_running[user] <= 0:
                    del self._long_running[user]

        try:
            future = self.long_executor.submit(fn, *args, **kwargs)
        except RuntimeError:  # shut down
            done(Future())
            raise EnvironmentError(503, "the host is shutting down") from None
        future.add_done_callback(done)
        return future

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
    def _record(self, name: str) -> db.EnvironmentExport | None:
        with self.sessions() as session:
            return session.get(db.EnvironmentExport, name)

    def _meta(self, name: str, record: db.EnvironmentExport | None = None) -> dict | None:
        """The export as the database recorded it (None: never exported)."""
        record = record or self._record(name)
        if record is None:
            return None
        return {
            "path": str(env_tarball(self.shared_dir, name)),
            "size": record.size,
            "sha256": record.digest,
            "exported_at": record.exported_at,
            "exported_by": record.exported_by,
            "owner": record.owner,
            "image": record.image,
        }

    def check_usable(self, name: str, user: str, role: str) -> str:
        """The recorded sha256 of environment `name`'s export, when `user` may run tasks in
        it: its owner, or an operator. Others get the answer a name that was never exported
        gets (400), so it does not tell whether someone else has one by that name."""
        record = self._record(name)
        if record is None or not (record.owner == user or role_at_least(role, "operator")):
            raise EnvironmentError(
                400,
                f"environment {name!r} is not exported by you: create it and run "
                f"%river env export {name} (an environment is usable by its owner only)",
            )
        return record.digest

    def digest(self, name: str) -> str | None:
        record = self._record(name)
        return record.digest if record else None

    def _describe(
        self, name: str, container: Any | None, record: db.EnvironmentExport | None = None
    ) -> dict[str, Any]:
        labels = (container.labels or {}) if container is not None else {}
        exported = self._meta(name, record)
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
        with self.sessions() as session:
            records = {r.name: r for r in session.query(db.EnvironmentExport).all()}
        names = {n for n in containers if n} | set(records)
        return [self._describe(n, containers.get(n), records.get(n)) for n in sorted(names)]

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
        with self._owner_locks[owner], self._name_locks[name]:
            if self._container(name, required=False) is not None:
                raise EnvironmentError(
                    409, f"environment {name!r} already has a container; delete it first"
                )
            self._check_count(owner)
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
                **self._bounds(),
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

    def _bounds(self) -> dict[str, Any]:
        """Container options that keep one user's environment from taking the head node."""
        limits = self.limits
        bounds: dict[str, Any] = {
            "cap_drop": ["ALL"],
            "cap_add": list(ENV_CAPABILITIES),
            "security_opt": ["no-new-privileges:true"],
        }
        if limits.cpus > 0:
            bounds["nano_cpus"] = int(limits.cpus * 1e9)
        if limits.memory > 0:
            bounds["mem_limit"] = limits.memory
            bounds["memswap_limit"] = limits.memory
        if limits.pids > 0:
            bounds["pids_limit"] = limits.pids
        return bounds

    def _check_count(self, owner: str) -> None:
        if self.limits.per_user <= 0:
            return
        mine = self.client().containers.list(
            all=True,
            filters={"label": [f"{LABEL_KIND}={KIND_ENV}", f"{LABEL_OWNER}={owner}"]},
            ignore_removed=True,
        )
        if len(mine) >= self.limits.per_user:
            names = ", ".join(sorted((c.labels or {}).get(LABEL_ENV, "?") for c in mine))
            raise EnvironmentError(
                409,
                f"you have {len(mine)} environment containers ({names}), the most one user "
                f"may have (c.RiverHost.environment_max_per_user = {self.limits.per_user}); "
                "delete one first (%river env delete NAME)",
            )

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
                with self.sessions.begin() as session:
                    record = session.get(db.EnvironmentExport, name)
                    if record is not None:
                        session.delete(record)
                path = env_tarball(self.shared_dir, name)
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)  # left by older versions
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
            sha = hashlib.sha256()
            try:
                with open(tmp, "wb") as out:
                    for chunk in image.save(named=env_image(name)):
                        sha.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                    size = out.tell()
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except (OSError, docker.errors.DockerException) as exc:
                tmp.unlink(missing_ok=True)
                raise EnvironmentError(500, f"cannot export {name!r}: {exc}") from None
            with self.sessions.begin() as session:
                record = session.get(db.EnvironmentExport, name)
                if record is None:
                    record = db.EnvironmentExport(name=name)
                    session.add(record)
                record.owner = owner or user
                record.digest = sha.hexdigest()
                record.size = size
                record.image = (container.labels or {}).get(LABEL_IMAGE)
                record.image_id = image.id
                record.exported_at = time.time()
                record.exported_by = user
            target.with_suffix(".json").unlink(missing_ok=True)  # left by older versions
            if previous and previous != image.id:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(previous)  # fails (kept) while something uses it
            self.log.info(
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
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run a command in the environment container; stdout and stderr together. It is
        killed after `timeout` s (default: the smaller of 300 s and the host's limit)."""
        name = self._name(name)
        limit = self.limits.exec_timeout
        if timeout is None:
            timeout = min(DEFAULT_EXEC_TIMEOUT, limit) if limit > 0 else DEFAULT_EXEC_TIMEOUT
        elif limit > 0 and timeout > limit:
            raise EnvironmentError(
                400,
                f"'timeout' {timeout:g}s is over the host's limit for environment commands "
                f"(c.RiverHost.environment_exec_timeout = {limit:g}s); ask for at most that",
            )
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
        result = run_bounded(self.client().api, container.id, argv, timeout, MAX_OUTPUT)
        if result.timed_out:
            raise EnvironmentError(
                504,
                f"the command in {name!r} ran longer than its time limit of {timeout:g}s and was "
                f"killed; ask for a longer 'timeout' (at most "
                f"c.RiverHost.environment_exec_timeout = {self.limits.exec_timeout:g}s)",
            )
        return {
            "name": name,
            "exit_code": result.exit_code,
            "output": result.output.decode("utf-8", errors="replace"),
            "truncated": result.truncated,
            "seconds": round(result.seconds, 3),
        }


def _created(container: Any | None) -> str | None:
    if container is None:
        return None
    return (container.attrs or {}).get("Created")


def _explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)
