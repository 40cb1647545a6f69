"""Docker backend: each task is one detached container on the local daemon.

Why it looks the way it does:

* The docker SDK is blocking, and the runner agent lives on Tornado's asyncio loop, so every
  SDK call runs on a small thread pool and every callback comes back to the loop with
  `call_soon_threadsafe`.
* Output is read by following the container's log (json-file) rather than attaching: the log
  is read from its start, so nothing written before we connected is lost, and the multiplexed
  frames tell stdout from stderr in the order they were written. Lines are numbered from the
  container's start (seq), so a restarted runner that adopts a container replays its log with
  the same numbers and the host drops the lines it already has - the process backend's
  contract.
* A waiter thread per container waits for the exit, lets the log reader drain (every line is
  delivered before on_exit), reads the real state (OOMKilled, exit code), reports, and then
  removes the container (the report does not wait for the daemon's cleanup). No
  auto_remove: the exit state must be read first.
* Tarball environments are loaded from the shared dir when a task names one (see
  `ensure_environment` and river_runner.containers), and only a tarball with the sha256 the
  host recorded at export, holding exactly the expected tag: tasks can write the shared dir
  (its `environments/` area is mounted read-only into them, but the shared storage may be
  reachable otherwise), so it is storage, not a source of trust.
* Users' mount sources are resolved (symlinks) on this node and must stay under the
  prefixes the host sent (`launch.mount_prefixes`); the resolved path is what is mounted.
* Every container gets a pids limit (`pids_limit`, runner flag `--pids-limit`), so a fork
  bomb in one task cannot exhaust the node's process table.
* Containers carry labels (river.runner, river.task_id, river.kind=task) so a restarted runner
  finds and adopts its own containers.
* GPUs go in as `device_requests`; that needs the NVIDIA hook on the daemon's host. Without it
  (CI, this machine) a request would make the start fail, so the backend then only sets the
  environment and records the request in the `river.gpus` label.
* On the VXLAN overlay (the agent sets `overlay_network` once the docker network
  `river-overlay` on the runner's bridge exists), a task container joins that network
  *instead of* the default bridge: one interface, one default route via the runner's bridge
  address, which the runner routes to the rest of the overlay through the host (a second
  network would give docker's default bridge the default route, and overlay traffic to other
  runners would leave through it). A task that presented an IP reservation
  (`launch.overlay_ip`) gets exactly that address; any other gets the lowest free address of
  the docker network's range, picked before the start so that RIVER_OVERLAY_IP can be set
  (river_runner.backends.docker_overlay).

Beside this module: river_runner.backends.docker_logs parses the log's frames and timestamps,
and river_runner.backends.docker_vps holds the VPS operations (terminals, exec, snapshots,
the forwarding address) that DockerBackend inherits from DockerVpsOps.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests

from river_runner.backends.base import Backend, ExitCallback, Outcome, OutputCallback, TaskLaunch
from river_runner.backends.docker_env import EnvironmentLoader
from river_runner.backends.docker_logs import docker_time_ns, frame_batches, parse_docker_time
from river_runner.backends.docker_overlay import OverlayAddresses
from river_runner.backends.docker_vps import DockerVpsOps
from river_runner.containers import (
    CONTAINER_SHARED_DIR,
    CONTAINER_TASK_DIR,
    ENV_DIR,
    resolve_mount_source,
)
from river_runner.containers import parse_mount as _parse_mount
from river_runner.data import container_data
from river_runner.loglines import LineSplitter
from river_runner.protocol import TaskState
from river_runner.task_cpu import container_cpu_seconds
from river_runner.task_inputs import ENV_FILES_DIR, container_mounts

log = logging.getLogger("river.runner.docker")

LABEL_TASK = "river.task_id"
LABEL_RUNNER = "river.runner"
LABEL_KIND = "river.kind"
LABEL_GPUS = "river.gpus"
LABEL_ENV = "river.environment"
KIND_TASK = "task"
KILLED_MARKER = "kill-requested"  # survives a runner restart so an adopted kill reads KILLED

WAIT_POLL_S = 5.0  # a waiter re-issues its wait this often, so close() is noticed
LOG_DRAIN_S = 10.0  # how long the waiter lets the log reader drain after the exit
# After the exit, the log is re-read from this long before the last frame we saw (stdout and
# stderr are stamped before they are written, so their order and their stamps can disagree).
CATCH_UP_MARGIN_NS = 100_000_000
CATCH_UP_TAIL = 64  # looked at first: the follow usually misses only the last few entries
DEFAULT_PIDS_LIMIT = 4096  # processes (threads included) per container

_STREAMS = {1: "stdout", 2: "stderr"}
# (stream, text, seq, ts, continued): one line on its way to the loop
_Line = tuple[str, str, int, float, bool]


def gpu_device_requests(gpus: list[int]) -> list[docker.types.DeviceRequest]:
    """The device request for explicit host GPU indices (empty list: no request at all).

    A separate function so tests can check what would be asked of a GPU daemon without one."""
    if not gpus:
        return []
    return [docker.types.DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]


def gpu_environment(gpus: list[int]) -> dict[str, str]:
    """GPU variables for the container.

    NVIDIA_VISIBLE_DEVICES names host indices (what the NVIDIA hook reads; "void" makes images
    that default to "all" see none). Inside the container the runtime exposes only the
    requested GPUs, numbered from 0, so CUDA_VISIBLE_DEVICES counts 0..n-1.
    """
    if not gpus:
        return {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
    return {
        "NVIDIA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus))),
        "RIVER_GPUS": ",".join(str(g) for g in gpus),
    }


def parse_mount(spec: str) -> str:
    """Check an extra mount "SRC:DST[:ro|rw]" and return it in docker's bind syntax
    (river_runner.containers.parse_mount; raises SpecError, a ValueError)."""
    return _parse_mount(spec)


def outcome_from_state(state: dict[str, Any], kill_requested: bool) -> Outcome:
    """Map a container's State (from inspect) to the host's vocabulary."""
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return Outcome(TaskState.KILLED_OOM, code, "memory limit exceeded")
    if kill_requested:
        return Outcome(TaskState.KILLED, code, "killed on request")
    if code == 0:
        return Outcome(TaskState.COMPLETED, 0)
    detail = f"exit code {code}"
    if code is not None and code > 128:
        detail += f" (signal {code - 128})"
    if state.get("Error"):
        detail += f": {state['Error']}"
    return Outcome(TaskState.FAILED, code, detail)


def _safe_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text).strip("-.") or "runner"


@dataclass
class _Watched:
    """One container this backend reports on."""

    task_id: int
    container_id: str
    task_dir: Path
    on_output: OutputCallback
    on_exit: ExitCallback
    paused: bool = False
    kill_requested: bool = False
    seq: int = 0
    # Bytes to lines by the rule both backends follow (river_runner.loglines).
    splitters: dict[str, LineSplitter] = field(
        default_factory=lambda: {"stdout": LineSplitter(), "stderr": LineSplitter()}
    )
    frames_seen: int = 0  # log frames consumed, to resume after the follow ends early
    last_frame: tuple[int, bytes] | None = None
    pending: collections.deque = field(default_factory=collections.deque)  # lines for the loop
    drain_scheduled: bool = False
    stream: Any = None  # the open log response, so it can be cancelled
    reader: threading.Thread | None = None
    waiter: threading.Thread | None = None
    address: str | None = None  # where its ports are reached, once asked (forward_address)


class DockerBackend(DockerVpsOps, Backend):
    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        runner_name: str,
        shared_dir: str | Path | None = None,
        default_image: str = "river-test-python",
        work_root: str | Path | None = None,
        gpu_runtime: bool | None = None,
        base_url: str | None = None,
        pids_limit: int = DEFAULT_PIDS_LIMIT,
    ) -> None:
        """`client` defaults to the environment's daemon (API version negotiated: the Debian
        daemon speaks an older API than the SDK's default). `gpu_runtime` None = detect.
        `pids_limit`: processes per container (0 or less: docker's default, unlimited)."""
        self._owns_client = client is None
        if client is None:
            # Two long-lived connections per task (log, wait): a pool of 10 would churn.
            if base_url:
                client = docker.DockerClient(base_url=base_url, version="auto", max_pool_size=128)
            else:
                client = docker.from_env(version="auto", max_pool_size=128)
        self.client = client
        self.api = client.api
        self.runner_name = runner_name
        self.shared_dir = str(shared_dir) if shared_dir else None
        self.default_image = default_image
        self.pids_limit = pids_limit
        if work_root is None:
            work_root = Path(tempfile.gettempdir()) / f"river-docker-{_safe_name(runner_name)}"
        self.work_root = Path(work_root)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.gpu_runtime = self._detect_gpu_runtime() if gpu_runtime is None else gpu_runtime
        self._tasks: dict[int, _Watched] = {}
        self.environments = EnvironmentLoader(client, self.shared_dir, self.work_root)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="river-docker")
        self._closed = threading.Event()
        # The docker network on the runner's overlay bridge, set by the agent once it exists
        # (OverlayMember); None: containers stay on the daemon's default network.
        self.overlay_network: str | None = None
        self.overlay_addresses = OverlayAddresses(client)

    def _detect_gpu_runtime(self) -> bool:
        """GPU device requests work when the daemon has the NVIDIA runtime registered, or the
        NVIDIA hook on its PATH (docker's own --gpus driver); the daemon runs on this host."""
        try:
            runtimes = self.client.info().get("Runtimes") or {}
        except docker.errors.DockerException:
            runtimes = {}
        if any("nvidia" in name for name in runtimes):
            return True
        return shutil.which("nvidia-container-runtime-hook") is not None

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # ---- starting -------------------------------------------------------------------
    def container_name(self, task_id: int) -> str:
        return f"river-{_safe_name(self.runner_name)}-{task_id}"

    def labels(self, task_id: int) -> dict[str, str]:
        return {LABEL_TASK: str(task_id), LABEL_RUNNER: self.runner_name, LABEL_KIND: KIND_TASK}

    def _command(self, launch: TaskLaunch, task_dir: Path) -> list[str]:
        if launch.kind == "python":
            if launch.python and not launch.python_fallback:
                # Named explicitly, it cannot be honoured in an image: refused, not ignored.
                # (%%river submit's default, the kernel's interpreter, falls back to python3.)
                raise ValueError(
                    f"python {launch.python!r} names an interpreter on a process-backend "
                    f"node; this node runs tasks in containers ({self.default_image}), "
                    "whose python3 runs them: leave 'python' out or target a process node"
                )
            (task_dir / "task.py").write_text(launch.script or "")
            return ["python3", "-u", *launch.launcher, f"{CONTAINER_TASK_DIR}/task.py"]
        if launch.kind != "command":
            raise ValueError(f"unknown task kind {launch.kind!r}")
        if isinstance(launch.command, str):
            if not launch.command.strip():
                raise ValueError("a command task needs a command")
            return ["/bin/sh", "-c", launch.command]
        if not launch.command:
            raise ValueError("a command task needs a command")
        return [str(part) for part in launch.command]

    def container_config(self, launch: TaskLaunch, task_dir: Path) -> dict[str, Any]:
        """Keyword arguments for `containers.create` (public so tests can inspect them)."""
        env = {str(k): str(v) for k, v in launch.env.items()}
        env.update(gpu_environment(launch.gpus))
        env["RIVER_TASK_ID"] = str(launch.task_id)
        env["PYTHONUNBUFFERED"] = "1"
        if launch.hostfile:  # a job member's MPI hostfile, in the read-only task dir
            (task_dir / "hostfile").write_text(launch.hostfile)
            env["RIVER_HOSTFILE"] = f"{CONTAINER_TASK_DIR}/hostfile"
        labels = self.labels(launch.task_id)
        volumes = [f"{task_dir}:{CONTAINER_TASK_DIR}:ro"]
        if self.shared_dir:
            volumes.append(f"{self.shared_dir}:{CONTAINER_SHARED_DIR}:rw")
            # What runners load is never writable by tasks (docs/docker.md).
            env_dir = Path(self.shared_dir) / ENV_DIR
            with contextlib.suppress(OSError):
                env_dir.mkdir(exist_ok=True)
            if env_dir.is_dir():
                volumes.append(f"{env_dir}:{CONTAINER_SHARED_DIR}/{ENV_DIR}:ro")
        volumes.extend(self._mount(m, launch.mount_prefixes) for m in launch.mounts)
        # The data plane: pushed blobs from the runner's cache, pulled values to its out dir.
        data_env, data_volumes = container_data(env, task_dir, CONTAINER_TASK_DIR)
        env.update(data_env)
        volumes.extend(data_volumes)
        if launch.files:  # pushed files: read-only at NAME under the working directory
            image = launch.image or self.default_image
            workdir = launch.workdir or self._image_workdir(image)
            volumes.extend(container_mounts(launch.files, workdir))
            env[ENV_FILES_DIR] = workdir
        config: dict[str, Any] = {
            "image": launch.image or self.default_image,
            "command": self._command(launch, task_dir),
            "name": self.container_name(launch.task_id),
            "detach": True,
            "environment": env,
            "labels": labels,
            "volumes": volumes,
            "privileged": bool(launch.privileged),
            "init": True,  # reaps zombies and passes signals; python as PID 1 would not
            "stdin_open": False,
            "tty": False,
        }
        if self.pids_limit > 0:
            config["pids_limit"] = int(self.pids_limit)
        if launch.environment:
            labels[LABEL_ENV] = launch.environment
        if launch.workdir:
            config["working_dir"] = launch.workdir
        if launch.hostname:
            config["hostname"] = launch.hostname
        if launch.cpus:
            config["cpuset_cpus"] = ",".join(str(c) for c in launch.cpus)
        if launch.memory and launch.memory > 0:
            config["mem_limit"] = int(launch.memory)
            config["memswap_limit"] = int(launch.memory)  # no swap: the limit means OOM
        requests_ = gpu_device_requests(launch.gpus)
        if requests_:
            if self.gpu_runtime:
                config["device_requests"] = requests_
            else:
                labels[LABEL_GPUS] = json.dumps([dict(r) for r in requests_])
        if launch.host_network:  # a host-network job's member: the node's own stack
            if launch.overlay_ip:
                raise RuntimeError(f"task {launch.task_id}: host network and overlay address")
            config["network_mode"] = "host"
        elif self.overlay_network:
            config["network"] = self.overlay_network  # instead of the default bridge
            if launch.overlay_ip:
                self.overlay_addresses.set_address(config, launch.overlay_ip)
        elif launch.overlay_ip:
            raise RuntimeError(
                f"task {launch.task_id} reserved overlay address {launch.overlay_ip}, but this "
                "runner's docker network for the overlay is not up (see the runner's log)"
            )
        return config

    @staticmethod
    def _mount(spec: str, prefixes: list[str] | None) -> str:
        """Docker's bind syntax for a mount; for a user's task (`prefixes` set) the source
        is resolved on this node and must stay under one of them (raises SpecError)."""
        mount = parse_mount(spec)
        if prefixes is None:
            return mount
        source, rest = mount.split(":", 1)
        return f"{resolve_mount_source(source, prefixes)}:{rest}"

    def ensure_environment(self, name: str, digest: str | None) -> str:
        """The local image of tarball environment `name` at the export the host recorded
        (`digest`), loaded and checked when this daemon has no copy yet (blocking; see
        river_runner.backends.docker_env)."""
        return self.environments.ensure(name, digest)

    def _create_and_start(
        self,
        config: dict[str, Any],
        task_id: int,
        environment: str | None = None,
        digest: str | None = None,
    ) -> tuple[str, bool]:
        """Create and start the container (blocking). Returns (id, paused). A leftover
        container with the same name is taken over when it is ours and still live,
        else removed."""
        if environment:
            config["image"] = self.ensure_environment(environment, digest)
        if config.get("network") and "networking_config" not in config:
            return self.overlay_addresses.start(config, task_id, self._create_and_start_now)
        return self._create_and_start_now(config, task_id)

    def _create_and_start_now(self, config: dict[str, Any], task_id: int) -> tuple[str, bool]:
        try:
            container = self._create(config)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            existing = self.client.containers.get(config["name"])
            labels = existing.labels or {}
            status = existing.status
            if (
                labels.get(LABEL_RUNNER) == self.runner_name
                and labels.get(LABEL_TASK) == str(task_id)
                and status in ("running", "paused")
            ):
                return existing.id, status == "paused"
            existing.remove(force=True, v=True)
            container = self._create(config)
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
            raise RuntimeError(
                f"docker could not start task {task_id}: {exc.explanation or exc}"
            ) from exc
        return container.id, False

    def _image_workdir(self, image: str) -> str:
        """The image's working directory ("/" when it sets none), pulled if missing."""
        try:
            found = self.client.images.get(image)
        except docker.errors.ImageNotFound:
            try:
                found = self.client.images.pull(image)
            except docker.errors.DockerException:
                return "/"  # the create that follows says why the image is missing
        return str((found.attrs.get("Config") or {}).get("WorkingDir") or "/")

    def _create(self, config: dict[str, Any]) -> Any:
        try:
            return self.client.containers.create(**config)
        except docker.errors.ImageNotFound:
            image = config["image"]
            try:
                self.client.images.pull(image)
            except docker.errors.DockerException as exc:
                raise RuntimeError(
                    f"image {image!r} is not present on this runner and pulling it failed: "
                    f"{getattr(exc, 'explanation', None) or exc}"
                ) from exc
            return self.client.containers.create(**config)

    async def start(
        self, launch: TaskLaunch, on_output: OutputCallback, on_exit: ExitCallback
    ) -> str:
        if launch.task_id in self._tasks:
            return self._tasks[launch.task_id].container_id
        self._loop = asyncio.get_running_loop()
        task_dir = self.work_root / str(launch.task_id)
        if task_dir.exists():
            shutil.rmtree(task_dir)
        task_dir.mkdir(parents=True)
        try:
            config = self.container_config(launch, task_dir)
            container_id, paused = await self._call(
                self._create_and_start,
                config,
                launch.task_id,
                launch.environment,
                launch.environment_digest,
            )
        except Exception:
            shutil.rmtree(task_dir, ignore_errors=True)
            raise
        watched = _Watched(
            launch.task_id, container_id, task_dir, on_output, on_exit, paused=paused
        )
        self._watch(watched)
        return container_id

    # ---- watching -------------------------------------------------------------------
    def _watch(self, watched: _Watched) -> None:
        self._tasks[watched.task_id] = watched
        watched.reader = threading.Thread(
            target=self._read_log, args=(watched,), name=f"river-log-{watched.task_id}", daemon=True
        )
        watched.waiter = threading.Thread(
            target=self._wait, args=(watched,), name=f"river-wait-{watched.task_id}", daemon=True
        )
        watched.reader.start()
        watched.waiter.start()

    def _open_log(
        self, container_id: str, *, follow: bool, since: str | None = None, tail: int | None = None
    ) -> Any:
        """The container log with timestamps, keeping the multiplexed frames (the SDK's
        `logs()` drops the stream id, and `attach` can miss output written before it)."""
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow)}
        params["tail"] = "all" if tail is None else tail
        if since is not None:
            params["since"] = since
        url = self.api._url("/containers/{0}/logs", container_id)
        response = self.api._get(url, params=params, stream=True, timeout=None)
        self.api._raise_for_status(response)
        return response

    def _read_log(self, watched: _Watched) -> None:
        """Follow the log while the container runs (reader thread)."""
        try:
            response = self._open_log(watched.container_id, follow=True)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            log.warning("task %s: cannot follow the container log: %s", watched.task_id, exc)
            return
        watched.stream = docker.types.CancellableStream(frame_batches(response), response)
        try:
            for batch in watched.stream:
                self._consume(watched, batch)
        except (requests.RequestException, OSError) as exc:
            if not self._closed.is_set():
                log.warning("task %s: log stream broke: %s", watched.task_id, exc)
        finally:
            with contextlib.suppress(Exception):
                response.close()

    def _catch_up(self, watched: _Watched) -> None:
        """Read what the follow missed, once the container has stopped.

        The Debian 20.10 daemon ends a follow as soon as the container stops, often before
        the last messages are read (a final line without newline is lost nearly always); a
        plain read after the exit is complete. To avoid sending a long log twice it looks for
        our last frame in the log's tail, then in what was logged shortly before that frame,
        and only then skips what we have by count in the whole log."""
        try:
            if watched.last_frame is not None:
                last_ns = docker_time_ns(watched.last_frame[1].partition(b" ")[0])
                since_ns = last_ns - CATCH_UP_MARGIN_NS
                since = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
                for query in ({"tail": CATCH_UP_TAIL}, {"since": since}):
                    frames = self._read_frames(watched.container_id, **query)
                    for index in range(len(frames) - 1, -1, -1):
                        if frames[index] == watched.last_frame:
                            self._consume(watched, frames[index + 1 :])
                            return
            response = self._open_log(watched.container_id, follow=False)
            with contextlib.closing(response):
                skip = watched.frames_seen
                for batch in frame_batches(response):
                    self._consume(watched, batch[skip:])
                    skip = max(0, skip - len(batch))
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            log.warning("task %s: cannot read the end of the log: %s", watched.task_id, exc)
        except ValueError as exc:  # an unparsable timestamp
            log.warning("task %s: cannot resume the log: %s", watched.task_id, exc)

    def _read_frames(self, container_id: str, **query: Any) -> list[tuple[int, bytes]]:
        response = self._open_log(container_id, follow=False, **query)
        with contextlib.closing(response):
            return [frame for batch in frame_batches(response) for frame in batch]

    def _consume(self, watched: _Watched, frames: list[tuple[int, bytes]]) -> None:
        """Split frames into lines and hand them to the loop in one call."""
        lines: list[_Line] = []
        for frame in frames:
            watched.frames_seen += 1
            watched.last_frame = frame
            stream_id, data = frame
            stream = _STREAMS.get(stream_id)
            if stream is None:
                continue
            stamp, _, body = data.partition(b" ")
            try:
                ts = parse_docker_time(stamp)
            except ValueError:
                ts, body = time.time(), data
            for text, continued in watched.splitters[stream].feed(body):
                lines.append(self._line(watched, stream, text, continued, ts))
        if lines:
            self._hand_over(watched, lines)

    def _flush_partials(self, watched: _Watched) -> None:
        lines = []
        for stream, splitter in watched.splitters.items():
            for text, continued in splitter.flush():
                lines.append(self._line(watched, stream, text, continued, time.time()))
        if lines:
            self._hand_over(watched, lines)

    @staticmethod
    def _line(watched: _Watched, stream: str, text: str, continued: bool, ts: float) -> _Line:
        watched.seq += 1
        return stream, text, watched.seq, ts, continued

    def _hand_over(self, watched: _Watched, lines: list[_Line]) -> None:
        """Queue lines for the loop; one wake-up serves everything queued until it runs, so
        a burst of output does not cost a loop wake-up per line."""
        watched.pending.extend(lines)
        if not watched.drain_scheduled:
            watched.drain_scheduled = True
            self._on_loop(self._deliver, watched)

    @staticmethod
    def _deliver(watched: _Watched) -> None:
        watched.drain_scheduled = False  # before popping: later lines schedule a new drain
        pending = watched.pending
        while pending:
            stream, text, seq, ts, continued = pending.popleft()
            if continued:
                watched.on_output(stream, text, seq=seq, ts=ts, continued=True)
            else:
                watched.on_output(stream, text, seq=seq, ts=ts)

    def _on_loop(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        if self._closed.is_set() or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(lambda: fn(*args, **kwargs))

    def _wait(self, watched: _Watched) -> None:
        while not self._closed.is_set():
            started = time.monotonic()
            try:
                self.api.wait(watched.container_id, timeout=WAIT_POLL_S)
                break
            except docker.errors.NotFound:
                break  # removed behind our back; inspect below tells
            except (requests.RequestException, docker.errors.APIError) as exc:
                # A read timeout is the normal poll; anything quicker is a daemon problem.
                if time.monotonic() - started < WAIT_POLL_S / 2:
                    log.warning("task %s: waiting failed: %s", watched.task_id, exc)
                    self._closed.wait(1.0)
        if self._closed.is_set():
            return
        # Every line before the exit report: the log stream ends once the container stops.
        if watched.reader is not None:
            watched.reader.join(LOG_DRAIN_S)
            if watched.reader.is_alive() and watched.stream is not None:
                log.warning("task %s: log did not drain in %.0fs", watched.task_id, LOG_DRAIN_S)
                watched.stream.close()
                watched.reader.join(2.0)
        if not self._closed.is_set():
            self._catch_up(watched)
            self._flush_partials(watched)
        try:
            state = self.api.inspect_container(watched.container_id)["State"]
            outcome = outcome_from_state(state, watched.kill_requested)
        except docker.errors.NotFound:
            outcome = Outcome(TaskState.FAILED, None, "container vanished")
        except docker.errors.DockerException as exc:
            outcome = Outcome(TaskState.FAILED, None, f"cannot inspect container: {exc}")
        if self._closed.is_set():
            return
        # Report first, clean up after: the outcome is known now, and removing a container
        # takes the daemon 30-250 ms that nobody needs to wait for. A runner that dies in
        # between finds the stopped container at adoption, reports it again (the host keeps
        # the first terminal report) and removes it then.
        self._on_loop(self._finish, watched, outcome)
        with contextlib.suppress(docker.errors.NotFound):
            try:
                self.api.remove_container(watched.container_id, v=True, force=True)
            except docker.errors.APIError as exc:
                log.warning("task %s: cannot remove container: %s", watched.task_id, exc)
        shutil.rmtree(watched.task_dir, ignore_errors=True)

    def _finish(self, watched: _Watched, outcome: Outcome) -> None:
        if self._tasks.get(watched.task_id) is watched:
            del self._tasks[watched.task_id]
        watched.on_exit(watched.task_id, outcome)

    # ---- control --------------------------------------------------------------------
    def _mark_kill_requested(self, task_id: int) -> _Watched | None:
        """Flag a watched task as killed on purpose, in memory and on disk.

        Shared by kill and terminate so the waiter (and an agent restarted before it
        reports, through the marker file) tells a requested end from a crash.
        """
        watched = self._tasks.get(task_id)
        if watched is None:
            return None
        watched.kill_requested = True
        with contextlib.suppress(OSError):
            (watched.task_dir / KILLED_MARKER).write_text(str(time.time()))
        return watched

    async def kill(self, task_id: int) -> bool:
        watched = self._mark_kill_requested(task_id)
        if watched is None:
            return False
        try:
            await self._call(self.api.kill, watched.container_id)
        except docker.errors.NotFound:
            return True  # already gone; the waiter reports
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # not running: it ended by itself first
                return True
            raise
        if watched.paused:  # a frozen process only dies once thawed
            with contextlib.suppress(docker.errors.APIError):
                await self._call(self.api.unpause, watched.container_id)
        return True

    async def terminate(self, task_id: int, grace: float) -> bool:
        """`docker stop -t GRACE`: SIGTERM to the container's main process, SIGKILL after."""
        watched = self._mark_kill_requested(task_id)
        if watched is None:
            return False
        if watched.paused:  # a frozen process cannot handle its SIGTERM
            with contextlib.suppress(docker.errors.APIError):
                await self._call(self.api.unpause, watched.container_id)
        try:
            await self._call(self.api.stop, watched.container_id, timeout=max(1, round(grace)))
        except docker.errors.NotFound:
            return True  # already gone; the waiter reports
        return True

    async def _set_paused(self, task_id: int, paused: bool) -> bool:
        watched = self._tasks.get(task_id)
        if watched is None:
            return False
        try:
            fn = self.api.pause if paused else self.api.unpause
            await self._call(fn, watched.container_id)
        except docker.errors.APIError as exc:
            log.info("task %s: %s failed: %s", task_id, "pause" if paused else "resume", exc)
            return False
        watched.paused = paused
        return True

    async def pause(self, task_id: int) -> bool:
        return await self._set_paused(task_id, True)

    async def resume(self, task_id: int) -> bool:
        return await self._set_paused(task_id, False)

    def running(self) -> dict[int, str]:
        return {tid: ("paused" if w.paused else "running") for tid, w in self._tasks.items()}

    def cpu_seconds(self, task_id: int) -> float | None:
        watched = self._tasks.get(task_id)
        return None if watched is None else container_cpu_seconds(watched.container_id)

    async def adopt(
        self, output_for: Callable[[int], OutputCallback], on_exit: ExitCallback
    ) -> list[int]:
        """Take over this runner's containers left by a previous runner process.

        Live ones are watched again; their log is replayed from the container's start with
        the original line numbers (the host drops lines it already has), so lines written
        while no runner was watching are not lost. Finished ones are reported with their real
        status and removed. A container that was created but never started is reported as
        failed and removed."""
        self._loop = asyncio.get_running_loop()
        filters = {"label": [f"{LABEL_RUNNER}={self.runner_name}", f"{LABEL_KIND}={KIND_TASK}"]}
        found = await self._call(self.api.containers, all=True, filters=filters)
        adopted: list[int] = []
        for info in found:
            try:
                task_id = int((info.get("Labels") or {})[LABEL_TASK])
            except (KeyError, ValueError):
                continue
            if task_id in self._tasks:
                continue
            task_dir = self.work_root / str(task_id)
            status = info.get("State", "")
            if status == "created":
                with contextlib.suppress(docker.errors.NotFound):
                    await self._call(self.api.remove_container, info["Id"], v=True, force=True)
                shutil.rmtree(task_dir, ignore_errors=True)
                on_exit(task_id, Outcome(TaskState.FAILED, None, "container never started"))
                adopted.append(task_id)
                continue
            watched = _Watched(
                task_id,
                info["Id"],
                task_dir,
                output_for(task_id),
                on_exit,
                paused=status == "paused",
                kill_requested=(task_dir / KILLED_MARKER).exists(),
            )
            self._watch(watched)
            adopted.append(task_id)
        return adopted

    async def close(self) -> None:
        """Stop watching; containers keep running for the next runner process to adopt."""
        self._closed.set()
        for watched in list(self._tasks.values()):
            if watched.stream is not None:
                with contextlib.suppress(Exception):
                    watched.stream.close()
        self._tasks.clear()
        self._executor.shutdown(wait=False)
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()
