"""The runner agent: registers with the host, heartbeats, runs what it is given, reports.

Every report to the host goes through one ordered outbox that is retried until the host
acknowledges it, so a host restart or a dropped connection loses no status and no log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import river_runner
from river_runner import metrics
from river_runner.backends.base import Backend, Outcome, TaskLaunch
from river_runner.data import DataCache, DataFetchError, cache_dir_name
from river_runner.data_out import results_dir
from river_runner.durations import timeout_reason
from river_runner.gpu import GpuInventory
from river_runner.overlay import OverlayMember
from river_runner.protocol import (
    LEADER_HEADER,
    MSG_LOG,
    ROLE_HEADER,
    HostList,
    TaskState,
    runner_auth_header,
    split_host_urls,
    status_message,
)
from river_runner.task_cpu import MAX_REPORTED, CpuMeter
from river_runner.task_inputs import fetch_files

log = logging.getLogger("river.runner")

MAX_BATCH = 500
# A POST must stay under the host's request body bound (c.RiverHost.max_request_body,
# 16 MiB by default) or the host refuses it and the outbox stalls: a log message grows
# to at most MAX_MESSAGE_CHARS of text (JSON may escape a character to 6 bytes), and a
# batch takes messages while it stays under MAX_BATCH_BYTES.
MAX_MESSAGE_CHARS = 1024 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024


FETCHING = "fetching data"  # a launched task's report while its pushed blobs arrive


@dataclass
class RunnerConfig:
    host_url: str  # one URL, or several comma-separated (a leader and its standbys)
    join_token: str
    name: str = field(default_factory=socket.gethostname)
    url: str = "http://127.0.0.1:8001"  # where the host reaches this runner
    cpus: list[int] = field(default_factory=metrics.usable_cpus)
    memory: int = 0  # bytes offered; 0 = the machine's total
    data_dir: Path = Path.home() / ".local/share/river-runner"
    backend: str = "process"
    overlay_ip: str | None = None  # underlay address for the VXLAN overlay (None: stay off it)
    overlay_direct: bool = True  # peers' underlay reachable: direct overlay paths (no hub)
    data_cache_bytes: int = 16 * 1024**3  # pushed blobs kept on this node (LRU beyond)
    data_link: bool = True  # link pushed blobs from a host on this machine (samehost.py)
    results_in_memory: bool = True  # tasks write pulled values to /dev/shm (data_out.py)
    # Whether this runner runs VM VPSes: {"ok", "reason", "accel"} (river_runner/vm_probe.py)
    vm: dict[str, Any] = field(
        default_factory=lambda: {"ok": False, "reason": "VMs are off on this runner"}
    )


class RunnerAgent:
    def __init__(self, config: RunnerConfig, backend: Backend, gpus: GpuInventory) -> None:
        self.config = config
        self.backend = backend
        self.gpus = gpus
        self.cpu_meter = CpuMeter()
        self.overlay = OverlayMember(
            config.overlay_ip,
            config.data_dir,
            docker=backend if backend.name == "docker" else None,  # containers join the overlay
            backend=backend,
            direct=config.overlay_direct,
        )
        self.inbound_secret = secrets.token_urlsafe(32)  # what the host must present to us
        self.credential: str | None = self._load_credential()
        self.heartbeat_interval = 5.0
        self.host_boot_id: str | None = None
        self.registered = asyncio.Event()
        self._outbox: deque[dict[str, Any]] = deque()
        self._outbox_wakeup = asyncio.Event()
        # Messages at the head of the outbox that a POST in flight carries: they must not
        # grow (lines appended after the body was built would be dropped with them on ack).
        self._in_flight = 0
        self._line_seq: dict[int, int] = {}
        self._tail_chars = 0  # text in the outbox's last log message
        self._starting: set[int] = set()
        self._started_at: dict[int, float] = {}  # perf_counter when the backend started it
        # Every host URL we were given; we talk to the one that leads (river_runner.protocol).
        self.hosts = HostList(split_host_urls(config.host_url))
        data_root = self._data_root()
        self.data = DataCache(
            data_root,
            config.data_cache_bytes,
            link=config.data_link and self._tasks_cannot_write_cache(),
            out=results_dir(config.name, config.data_dir, data_root / "out")
            if config.results_in_memory
            else None,
        )
        self._pulling: set[int] = set()  # tasks whose pulled values go up when they end
        self._fetching: dict[int, asyncio.Future[None]] = {}  # pushed data on its way
        self._sending: set[int] = set()  # ended tasks whose pulled values are going up
        # Time limits: a timer per limited task; a task whose timer fired ends `timeout`.
        self._limit_timers: dict[int, asyncio.TimerHandle] = {}
        self._timed_out: dict[int, str] = {}
        self._stops: set[asyncio.Future[bool]] = set()
        self._http = httpx.AsyncClient(timeout=10.0)
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def _data_root(self) -> Path:
        """Where pushed blobs are cached: beside the tasks' scratch directories when tasks
        run as another account (the runner's own directory holds its credential and is
        closed to them), else in the runner's data directory. The name carries the data
        directory's digest: two runners (or test clusters) of the same name never share."""
        account = getattr(self.backend, "account", None)  # the process backend's
        scratch = getattr(self.backend, "scratch_root", None)
        if account is not None and account.switches and scratch is not None:
            return Path(scratch) / cache_dir_name(self.config.name, self.config.data_dir)
        return self.config.data_dir / "data"

    def _tasks_cannot_write_cache(self) -> bool:
        """Whether no task can write the cache's files: containers mount blobs read-only,
        and process tasks under another account see them 0644 and not theirs. A linked
        blob is the host's own file (river_runner/samehost.py), so only then may it be."""
        if self.config.backend == "docker":
            return True
        account = getattr(self.backend, "account", None)
        return account is not None and account.switches

    # ---- credential -----------------------------------------------------------------
    @property
    def _credential_path(self) -> Path:
        return self.config.data_dir / "credential"

    def _load_credential(self) -> str | None:
        try:
            return self._credential_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _save_credential(self, credential: str) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._credential_path.with_suffix(".tmp")
        tmp.write_text(credential)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._credential_path)
        self.credential = credential

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        adopted = await self.backend.adopt(self._output_callback, self._on_exit)
        if adopted:
            log.info("adopted %d task(s) from a previous run: %s", len(adopted), adopted)
        self._tasks = [
            asyncio.ensure_future(self._register_loop()),
            asyncio.ensure_future(self._heartbeat_loop()),
            asyncio.ensure_future(self._outbox_loop()),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await self.backend.close()
        await self._http.aclose()
        with contextlib.suppress(OSError):  # nothing left to send: leave no empty dir in memory
            self.data.out.rmdir()

    def node_facts(self) -> dict[str, Any]:
        cpus = self.config.cpus
        memory = self.config.memory or metrics.sample()["memory_total"]
        return {
            "name": self.config.name,
            "url": self.config.url,
            "cpus": cpus,
            "numa": metrics.numa_layout(cpus),
            "memory": memory,
            "gpus": self.gpus.describe(),
            "backend": self.backend.name,
            "vm": self.config.vm,
            "version": river_runner.__version__,
        }

    # ---- talking to the leader ------------------------------------------------------
    async def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST to the host we follow. With several hosts, a refused connection or a
        standby's 503 moves us on (to the leader it names, if it is one of ours) and we
        register there before anything else is sent."""
        try:
            response = await self._http.post(self.hosts.current + path, **kwargs)
        except httpx.TransportError:
            if self.hosts.several:
                self._switch(self.hosts.next())
            raise
        standby = response.headers.get(ROLE_HEADER) == "standby"
        if response.status_code == 503 and standby and self.hosts.several:
            self._switch(self.hosts.follow(response.headers.get(LEADER_HEADER)))
        return response

    def _switch(self, url: str) -> None:
        log.warning("following the leader: trying %s", url)
        self.registered.clear()

    # ---- registration and heartbeat -------------------------------------------------
    async def _register_loop(self) -> None:
        delay = 0.2
        # A failover takes a second or two: with standbys, retry at least every second.
        longest = 1.0 if self.hosts.several else 5.0
        while not self._stopping:
            if self.registered.is_set():
                await self._wait_unregistered()
                continue
            try:
                await self._register()
                delay = 0.2
            except Exception as exc:  # host down or refusing: keep trying
                log.warning("registration failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    async def _wait_unregistered(self) -> None:
        while self.registered.is_set() and not self._stopping:
            await asyncio.sleep(0.05)

    async def _register(self) -> None:
        secret = self.credential or self.config.join_token
        body = {
            **self.node_facts(),
            "inbound_secret": self.inbound_secret,
            "running": self._running_report(),
            **self.overlay.registration_fields(),
        }
        response = await self._post(
            "/river/api/runner/register", json=body, headers=runner_auth_header(secret)
        )
        if response.status_code == 401 and self.credential:
            # Our stored credential is not known (e.g. a new host DB): join afresh.
            response = await self._post(
                "/river/api/runner/register",
                json=body,
                headers=runner_auth_header(self.config.join_token),
            )
        if response.status_code >= 400:
            raise RuntimeError(f"host said {response.status_code}: {response.text[:200]}")
        data = response.json()
        if data.get("credential"):
            self._save_credential(data["credential"])
        self.heartbeat_interval = float(data.get("heartbeat_interval", 5.0))
        self.host_boot_id = data.get("boot_id")
        self._apply_reconcile(data)
        await self.overlay.on_registered(data)  # set up / repair the overlay spoke
        self.registered.set()
        self._outbox_wakeup.set()
        log.info("registered with %s as %s", self.hosts.current, self.config.name)

    def _running_report(self) -> dict[str, str]:
        """Tasks this runner holds: running ones, and finished ones whose final status the
        host has not acknowledged yet (so the host does not take them for lost)."""
        report = {
            message["task_id"]: "reporting"
            for message in self._outbox
            if message["kind"] == "status"
        }
        report.update({str(tid): "starting" for tid in self._starting})
        report.update({str(tid): FETCHING for tid in self._fetching})
        report.update({str(tid): "sending results" for tid in self._sending})
        report.update({str(tid): state for tid, state in self.backend.running().items()})
        return report

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            await self.registered.wait()
            await asyncio.sleep(self.heartbeat_interval)
            if not self.registered.is_set():
                continue
            try:
                await self._heartbeat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _heartbeat(self) -> None:
        body = {
            "metrics": metrics.sample(),
            "gpus": self.gpus.describe(),
            "running": self._running_report(),
            "task_cpu": await self._task_cpu(),
        }
        response = await self._post("/river/api/runner/heartbeat", json=body, headers=self._auth())
        if response.status_code in (401, 404):
            self.registered.clear()
            return
        response.raise_for_status()
        data = response.json()
        if data.get("boot_id") != self.host_boot_id:
            # The host restarted and no longer knows how to reach us: register again.
            self.registered.clear()
            return
        self._apply_reconcile(data)
        await self.overlay.on_heartbeat(data)  # direct overlay paths to peer runners

    async def _task_cpu(self) -> dict[str, float]:
        """Each running task's CPU percent since the last beat (the host's idle culling);
        read off the loop: a process tree is a /proc walk."""
        running = [tid for tid, state in self.backend.running().items() if state == "running"]

        def read() -> dict[int, float | None]:
            return {tid: self.backend.cpu_seconds(tid) for tid in running[: MAX_REPORTED * 2]}

        readings = await asyncio.get_running_loop().run_in_executor(None, read)
        return self.cpu_meter.percents(readings)

    def _apply_reconcile(self, data: dict[str, Any]) -> None:
        for task_id in data.get("kill", []):
            log.info("host says task %s is over; stopping it", task_id)
            asyncio.ensure_future(self.backend.kill(int(task_id)))

    def _auth(self) -> dict[str, str]:
        return runner_auth_header(self.credential or self.config.join_token)

    # ---- tasks ----------------------------------------------------------------------
    async def launch(self, launch: TaskLaunch) -> int | str:
        """Start a task; one with pushed data is acknowledged at once and starts once its
        blobs are in the local cache (a 1 GiB fetch must not hold the host's launch call,
        which gives up after seconds). Until then heartbeats report it as "fetching data",
        so the host neither requeues nor loses it; a failed fetch ends it failed."""
        if launch.data and (launch.data.get("push") or launch.data.get("files")):
            self._starting.add(launch.task_id)
            job = asyncio.ensure_future(self._fetch_then_start(launch))
            self._fetching[launch.task_id] = job
            job.add_done_callback(lambda _: self._fetching.pop(launch.task_id, None))
            return FETCHING
        return await self._start(launch)

    async def _fetch_then_start(self, launch: TaskLaunch) -> None:
        task_id = launch.task_id
        try:
            began = time.monotonic()
            await self._prepare_data(launch)
            log.info("task %s: pushed data ready in %.1fs", task_id, time.monotonic() - began)
            await self._start(launch)
        except asyncio.CancelledError:  # killed while fetching (cancel_fetch)
            log.info("task %s: killed while fetching its pushed data; not started", task_id)
            self._starting.discard(task_id)
            self._pulling.discard(task_id)
            self._report_exit(
                task_id, Outcome(TaskState.KILLED, None, "killed while fetching its pushed data")
            )
        except DataFetchError as exc:
            self._starting.discard(task_id)
            self._pulling.discard(task_id)
            log.warning("task %s: %s", task_id, exc)
            self._report_exit(
                task_id, Outcome(TaskState.FAILED, None, f"could not fetch pushed data: {exc}")
            )
        except Exception as exc:
            self._starting.discard(task_id)
            self._pulling.discard(task_id)
            log.warning("could not start task %s", task_id, exc_info=True)
            self._report_exit(task_id, Outcome(TaskState.FAILED, None, f"could not start: {exc}"))

    def cancel_fetch(self, task_id: int) -> bool:
        """Stop a task still fetching its pushed data (a kill); whether there was one."""
        job = self._fetching.get(task_id)
        if job is None or job.done():
            return False
        job.cancel()
        return True

    async def _prepare_data(self, launch: TaskLaunch) -> None:
        """Pushed blobs into the local cache; the task's env says where (and where to
        write what it pulls)."""
        account_for = getattr(self.backend, "account_for", None)  # process backend's
        account = account_for(launch) if account_for is not None else None
        owner = (account.uid, account.gid) if account is not None else None
        assert launch.data is not None
        env = await self.data.prepare(
            self._http, self._auth(), launch.task_id, launch.data, owner, base=self.hosts.current
        )
        launch.env = {**launch.env, **env}
        if launch.data.get("files"):  # pushed files (river_runner/task_inputs.py)
            launch.files = await fetch_files(
                self.data,
                self._http,
                self._auth(),
                launch.task_id,
                launch.data["files"],
                self.hosts.current,
            )
        if launch.data.get("pull"):
            self._pulling.add(launch.task_id)

    async def _start(self, launch: TaskLaunch) -> int | str:
        # Until the backend has it, the task is reported as "starting": a host that does not
        # see it in a heartbeat could otherwise requeue it and run it twice.
        self._starting.add(launch.task_id)
        began = time.perf_counter()
        try:
            if launch.data and launch.task_id not in self._fetching:
                await self._prepare_data(launch)  # pull only: nothing to fetch
            handle = await self.backend.start(
                launch, self._output_callback(launch.task_id), self._on_exit
            )
        finally:
            self._starting.discard(launch.task_id)
        if launch.time_limit:
            self._limit_timers[launch.task_id] = asyncio.get_running_loop().call_later(
                launch.time_limit,
                self._time_up,
                launch.task_id,
                launch.time_limit,
                launch.kill_grace,
            )
        self._send(status_message(launch.task_id, TaskState.RUNNING, handle=str(handle)))
        self._started_at[launch.task_id] = time.perf_counter()
        if launch.data:
            log.info(
                "river-timing task=%s stage=start seconds=%.3f",
                launch.task_id,
                self._started_at[launch.task_id] - began,
            )
        return handle

    def _time_up(self, task_id: int, limit: float, grace: float) -> None:
        """The limit is here: SIGTERM now, SIGKILL after the grace (the backend's), and
        whatever way it then ends is reported as `timeout` (_report_exit)."""
        self._limit_timers.pop(task_id, None)
        self._timed_out[task_id] = timeout_reason(limit, grace)
        log.info("task %s reached its time limit (%ss); terminating", task_id, limit)
        stop = asyncio.ensure_future(self.backend.terminate(task_id, grace))
        self._stops.add(stop)
        stop.add_done_callback(self._stops.discard)

    def _output_callback(self, task_id: int):
        def on_output(
            stream: str,
            text: str,
            seq: int | None = None,
            ts: float | None = None,
            continued: bool = False,
        ) -> None:
            self._on_output_for(task_id, stream, text, seq, ts, continued)

        return on_output

    def _on_output_for(
        self,
        task_id: int,
        stream: str,
        text: str,
        seq: int | None,
        ts: float | None,
        continued: bool = False,
    ) -> None:
        if seq is None:
            seq = self._line_seq.get(task_id, 0) + 1
        self._line_seq[task_id] = seq
        line: dict[str, Any] = {"seq": seq, "stream": stream, "text": text, "ts": ts or time.time()}
        if continued:  # a chunk of a longer line (river_runner.loglines)
            line["continued"] = True
        last = self._outbox[-1] if len(self._outbox) > self._in_flight else None
        if (
            last
            and last["kind"] == MSG_LOG
            and last["task_id"] == str(task_id)
            and len(last["lines"]) < MAX_BATCH
            and self._tail_chars + len(text) <= MAX_MESSAGE_CHARS
        ):
            last["lines"].append(line)
            self._tail_chars += len(text)
        else:
            self._outbox.append({"kind": MSG_LOG, "task_id": str(task_id), "lines": [line]})
            self._tail_chars = len(text)
        self._outbox_wakeup.set()

    def report_pause(self, task_id: int, paused: bool) -> None:
        state = TaskState.PAUSED if paused else TaskState.RUNNING
        self._send(status_message(task_id, state))

    def _on_exit(self, task_id: int, outcome: Outcome) -> None:
        started = self._started_at.pop(task_id, None)
        if started is not None:  # stage timings (bench/data_plane.py reads them)
            log.info(
                "river-timing task=%s stage=run seconds=%.3f",
                task_id,
                time.perf_counter() - started,
            )
        if task_id in self._pulling:  # upload the pulled values, then report the end
            self._pulling.discard(task_id)
            self._sending.add(task_id)  # still reported, so the host does not lose it
            asyncio.ensure_future(self._send_pulled_then_exit(task_id, outcome))
            return
        self._report_exit(task_id, outcome)

    async def _send_pulled_then_exit(self, task_id: int, outcome: Outcome) -> None:
        try:
            problem = await self.data.send_result(
                self._http, self._auth(), task_id, base=self.hosts.current
            )
            if problem:
                log.warning("task %s: %s", task_id, problem)
                self._on_output_for(task_id, "stderr", f"river: {problem}", None, None)
                if outcome.state == TaskState.COMPLETED:  # its results are what it was for
                    outcome = Outcome(TaskState.FAILED, outcome.exit_code, problem)
        finally:
            self._report_exit(task_id, outcome)
            self._sending.discard(task_id)

    def _report_exit(self, task_id: int, outcome: Outcome) -> None:
        self._line_seq.pop(task_id, None)
        timer = self._limit_timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()
        timed_out = self._timed_out.pop(task_id, None)
        if timed_out and outcome.state != TaskState.KILLED_OOM:
            outcome = Outcome(TaskState.TIMEOUT, outcome.exit_code, timed_out)
        extra: dict[str, Any] = {"detail": outcome.detail}
        if outcome.exit_code is not None:
            extra["exit_code"] = outcome.exit_code
        self._send(status_message(task_id, outcome.state, **extra))

    def _send(self, message: dict[str, Any]) -> None:
        self._outbox.append(message)
        self._outbox_wakeup.set()

    async def _outbox_loop(self) -> None:
        delay = 0.05
        while not self._stopping:
            await self._outbox_wakeup.wait()
            self._outbox_wakeup.clear()
            while self._outbox and self.registered.is_set():
                batch = self._next_batch()
                self._in_flight = len(batch)
                try:
                    response = await self._post(
                        "/river/api/runner/events", json={"messages": batch}, headers=self._auth()
                    )
                except httpx.HTTPError as exc:
                    log.warning("cannot reach host (%s); retrying", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if response.status_code in (401, 404):
                    self.registered.clear()
                    break
                if response.status_code >= 400:
                    log.error(
                        "host refused a batch: %s %s", response.status_code, response.text[:300]
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                for _ in batch:
                    self._outbox.popleft()
                self._in_flight = 0
                self._after_ack(batch)
                self._apply_reconcile(response.json())
            if self._outbox and not self.registered.is_set():
                await self.registered.wait()
                self._outbox_wakeup.set()

    def _next_batch(self) -> list[dict[str, Any]]:
        """The head of the outbox, at most MAX_BATCH messages and about MAX_BATCH_BYTES."""
        batch: list[dict[str, Any]] = []
        size = 0
        for i in range(min(len(self._outbox), MAX_BATCH)):
            message = self._outbox[i]
            size += len(json.dumps(message))
            if batch and size > MAX_BATCH_BYTES:
                break
            batch.append(message)
        return batch

    def _after_ack(self, batch: list[dict[str, Any]]) -> None:
        """The host has everything about a finished task: its files can go."""
        forget = getattr(self.backend, "forget", None)
        if forget is None:
            return
        for message in batch:
            if message["kind"] == "status" and TaskState(message["state"]).terminal:
                forget(int(message["task_id"]))


def dump(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
