"""The River client, written once: every request, answer, stream and wait of the API.

`Client` (blocking, river_magics/client.py) and `AsyncClient` (asyncio, aclient.py) are this
class plus their I/O: an httpx client and the `_io_*` primitives below. The code here is
asyncio code; river_magics/bridge.py explains how the blocking classes run it unchanged, so
a method added here exists on both with the same signature by construction.

Request bodies, array specs and pickling come from river_magics.common, the watch rules
from river_magics.watching; this module only sequences them with I/O.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import httpx

from river_runner.durations import parse_duration
from river_runner.protocol import EVENT_LOG, EVENT_TASK, LEADER_HEADER, ROLE_HEADER, HostList

from .bridge import io_iterator, io_method
from .common import (
    API_PREFIX,
    CONNECT_TIMEOUT,
    EVENTS_READ_TIMEOUT,
    NO_HOST_MESSAGE,
    REQUEST_TIMEOUT,
    array_field,
    client_headers,
    error_from_response,
    job_fields,
    new_array_id,
    normalize_url,
    parse_array,
    submit_body,
    task_id,
    transport_message,
)
from .dataplane import Frame, data_spec, frames_of, upload_chunks, wrap_data_script
from .errors import RiverConnectionError, RiverError
from .events import aparse_sse
from .file_copy import file_blob, file_chunks, file_name, pack, unpack
from .lease import KernelLease
from .payload import PUSH_LIMIT, check_names
from .progress import Progress
from .resolve import check_ref, not_found_message, pick
from .watching import WatchPacer, WatchSet

if TYPE_CHECKING:
    from .task_handles import GroupCore, HandleCore

# Environment builds (image pulls, docker commit of a whole container) take minutes.
ENV_TIMEOUT = 1800.0
ENV_EXEC_TIMEOUT = 300.0
# Data-plane transfers: no overall bound, but a stalled connection is an error.
UPLOAD_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=600.0)

Event = tuple[str, dict[str, Any]]
StreamedResponse = tuple[httpx.Response, AsyncIterator[str]]

# With several host URLs (a leader and its standbys), how long a request keeps looking for
# the leader before it gives up: a takeover takes a second or two (docs/database.md).
FAILOVER_WAIT = 20.0
FAILOVER_PAUSE = 0.25  # between rounds of the URLs that found no leader


def is_standby_refusal(response: httpx.Response) -> bool:
    """A standby's 503 (river_server/standby.py), not the leader's own 503s."""
    return response.status_code == 503 and response.headers.get(ROLE_HEADER) == "standby"


def split_urls(url: str | Sequence[str]) -> list[str]:
    """`a,b` or a list: the URLs a client may try, as given."""
    items = url.split(",") if isinstance(url, str) else list(url)
    return [item.strip() for item in items if item and item.strip()]


def _history_params(since: float | None, step: float | None) -> dict[str, str]:
    """The history routes' query: only what the caller set (the host has the defaults)."""
    fields = (("since", since), ("step", step))
    return {key: repr(float(value)) for key, value in fields if value is not None}


def _env_name(name: str) -> str:
    from river_runner.containers import parse_env_name

    try:
        return parse_env_name(name)
    except ValueError as exc:
        raise RiverError(str(exc)) from None


class ClientCore:
    """Talks to one River host. Reads RIVER_URL and RIVER_TOKEN when not given them.

    Subclasses provide the I/O (`_open_http` and the `_io_*` methods) and name their
    handle and group classes; everything else is here.
    """

    _handle_class: ClassVar[type[HandleCore]]
    _group_class: ClassVar[type[GroupCore[Any]]]
    _lease: KernelLease | None = None  # made on the first bind_kernel submission

    def __init__(self, url: str | Sequence[str] | None = None, token: str | None = None) -> None:
        given = split_urls(url or os.environ.get("RIVER_URL") or "")
        if not given:
            raise RiverError(NO_HOST_MESSAGE)
        normalized = [normalize_url(u) for u in given]
        url_token = next((t for _, t in normalized if t), None)
        urls = [u for u, _ in normalized]
        # Several URLs: a leader and its standbys; requests follow whichever leads.
        self.hosts = HostList(list(dict.fromkeys(urls)))
        self._token = token or url_token or os.environ.get("RIVER_TOKEN") or None
        self.push_limit = PUSH_LIMIT
        self._http = self._open_http(
            client_headers(self._token), httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
        )

    @property
    def url(self) -> str:
        """The host this client talks to now (the leader, once one answered)."""
        return self.hosts.current

    @property
    def _api(self) -> str:
        return self.url + API_PREFIX

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def clone(self) -> Any:
        """A new client of the same kind for the same host and token, with its own
        connections (e.g. for a background thread that holds an event stream open)."""
        twin = type(self)(self.hosts.urls, self._token)
        twin.hosts.index = self.hosts.index
        twin.push_limit = self.push_limit
        return twin

    # -- the I/O each subclass provides ---------------------------------------------------

    def _open_http(self, headers: dict[str, str], timeout: httpx.Timeout) -> Any:
        raise NotImplementedError

    async def _io_request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request (httpx errors pass through)."""
        raise NotImplementedError

    def _io_stream(
        self, method: str, url: str, **kwargs: Any
    ) -> AbstractAsyncContextManager[StreamedResponse]:
        """A streamed response (its body read when the status is an error) and its lines."""
        raise NotImplementedError

    async def _io_sleep(self, seconds: float) -> None:
        raise NotImplementedError

    # -- plumbing ---------------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> RiverConnectionError:
        return RiverConnectionError(transport_message(self.url, exc))

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        failover = _Failover(self.hosts, method)
        while True:
            try:
                response = await self._io_request(method, self._api + path, **kwargs)
            except httpx.TransportError as exc:
                pause = failover.after_error(exc)
                if pause is None:
                    raise self._transport_error(exc) from None
                await self._io_sleep(pause)
                continue
            if is_standby_refusal(response):
                pause = failover.after_standby(response)
                if pause is not None:
                    await self._io_sleep(pause)
                    continue
            if response.status_code >= 400:
                raise error_from_response(response, method, API_PREFIX + path)
            return response

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise RiverError(
                f"unexpected answer from {self.url}{API_PREFIX}{path} (HTTP "
                f"{response.status_code}, not JSON): is this a River host?",
                status=response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise RiverError(f"unexpected answer from {self.url}{API_PREFIX}{path}: {body!r}")
        return body

    async def _list(self, path: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """A list route's items (written once for every list method)."""
        return list((await self._request("GET", path, **kwargs)).get(key, []))

    # -- account ----------------------------------------------------------------------

    @io_method
    async def login(self, username: str, password: str, label: str = "notebook") -> str:
        """Trade a user name and password for a new API token (shown once: keep it)."""
        body = {"username": username, "password": password, "label": label}
        return str((await self._request("POST", "/login", json=body))["token"])

    @io_method
    async def me(self) -> dict[str, Any]:
        """The calling user: name, role, groups, quota."""
        return dict((await self._request("GET", "/me"))["user"])

    @io_method
    async def tokens(self, all: bool = False, user: str | None = None) -> list[dict[str, Any]]:
        """Your API tokens (no secrets), or everyone's / one user's (admins)."""
        params = {"all": "1"} if all else {"user": user} if user else {}
        return await self._list("/tokens", "tokens", params=params)

    @io_method
    async def create_token(
        self, label: str | None = None, expires_in: float | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """A new API token: {token (shown only now), info}."""
        fields = (("label", label), ("expires_in", expires_in), ("user", user))
        body = {key: value for key, value in fields if value is not None}
        return await self._request("POST", "/tokens", json=body)

    @io_method
    async def revoke_token(self, id: str | int) -> dict[str, Any]:
        """Revoke a token by its id: it fails from the next request on."""
        return await self._request("DELETE", f"/tokens/{task_id(id)}")

    # -- tasks ------------------------------------------------------------------------

    @io_method
    async def share(self) -> dict[str, Any]:
        """Fair share: every user's decayed usage, share and queue priority (1 goes first),
        with the half-life and GPU weight they were computed with."""
        return dict((await self._request("GET", "/share"))["share"])

    @io_method
    async def nodes(self) -> list[dict[str, Any]]:
        """Registered nodes with totals, free resources and metrics."""
        return await self._list("/nodes", "nodes")

    @io_method
    async def node_history(
        self, name: str, since: float | None = None, step: float | None = None
    ) -> dict[str, Any]:
        """A node's metrics over time: {node, since, step, points: [{at, cpu, memory,
        gpus: [{util, memory}], samples}]}. `since` is unix seconds (the host defaults to
        an hour ago); the host may widen `step` (the answer says which it used)."""
        params = _history_params(since, step)
        path = f"/nodes/{quote(name, safe='')}/history"
        return dict((await self._request("GET", path, params=params))["history"])

    @io_method
    async def usage_history(
        self, since: float | None = None, step: float | None = None
    ) -> dict[str, Any]:
        """Core- and GPU-seconds per time bucket: {since, step, total: [{at, core_seconds,
        gpu_seconds}], users: [{user, points}]}. Below operator, `users` holds only your
        own series (the host filters); `since` defaults to a day ago, buckets are hours."""
        params = _history_params(since, step)
        return dict((await self._request("GET", "/usage/history", params=params))["usage"])

    @io_method
    async def tasks(
        self, all: bool = False, state: str | Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Tasks, newest first: your own, or everyone's with `all=True`."""
        params: dict[str, str] = {}
        if all:
            params["all"] = "1"
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        return await self._list("/tasks", "tasks", params=params)

    @io_iterator
    async def iter_tasks(
        self, all: bool = False, state: str | Iterable[str] | None = None, page_size: int = 1000
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every task, newest first, page by page: `tasks()` answers the newest page only;
        this follows the list's `next` cursor to the oldest."""
        params: dict[str, str] = {"limit": str(page_size)}
        if all:
            params["all"] = "1"
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        while True:
            page = await self._request("GET", "/tasks", params=params)
            for task in page.get("tasks", []):
                yield task
            if not page.get("next"):
                return
            params["before"] = str(page["next"])

    @io_method
    async def task(self, id: str | int) -> dict[str, Any]:
        """One task's current record."""
        return dict((await self._request("GET", f"/tasks/{task_id(id)}"))["task"])

    @io_method
    async def submit(
        self,
        command: str | Sequence[str] | None = None,
        *,
        script: str | None = None,
        name: str | None = None,
        cores: int = 1,
        memory: str | int | None = None,
        gpus: int = 0,
        target: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        image: str | None = None,
        environment: str | None = None,
        mounts: Sequence[str] | None = None,
        privileged: bool = False,
        push: Mapping[str, Any] | None = None,
        pull: Iterable[str] | None = None,
        ip_token: str | None = None,
        python: str | None = None,
        python_fallback: bool = False,
        nodes: int | None = None,
        gpus_per_node: int | None = None,
        network: str | None = None,
        launcher: str | None = None,
        nproc_per_node: int | None = None,
        time_limit: float | str | None = None,
        files: Mapping[str, str | os.PathLike[str]] | None = None,
        priority: int | None = None,
        preemptible: bool = False,
        bind_kernel: bool = False,
        _array: dict[str, Any] | None = None,
    ) -> Any:
        """Queue a task: a command (argv list or shell string) or a Python `script`; its
        handle.

        `nodes=N`: a multi-node job instead, N members placed together on distinct nodes
        (each with `cores`, `memory` and `gpus_per_node` GPUs) that end together; the
        answer is a group of the members' handles labelled "rank 0" ... Each member sees
        MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE ... (docs/api.md). With
        `launcher="torchrun", nproc_per_node=K` each member runs the script through
        `python -m torch.distributed.run` (K processes, WORLD_SIZE = nodes x K).

        `time_limit` (seconds, or "90m", "2h", "1d"): at the limit the task gets SIGTERM,
        then SIGKILL after the host's grace, and ends `timeout`. `priority` (higher goes
        first, bounded by role) and `preemptible=True` (it may be displaced and requeued).
        `bind_kernel=True`: the task is killed when this process (the notebook kernel) goes
        away: it names this client's lease, renewed by a daemon thread (river_magics/lease.py).

        `push={"x": x}` makes `x` a variable of the remote script; `pull=["y"]` sends the
        script's `y` back, read with `handle.result()`. Target, memory and pushed values
        are checked here first, so a typo or an unpicklable value fails before any request.

        `files={"data/in.csv": "local.csv"}` (any task, commands too): each local file
        goes over the data plane and is placed at that relative name in the task's
        directory (its working directory unless `workdir` is given; RIVER_FILES_DIR) before
        it starts; a file over the host's bounds is refused (413) before it is uploaded.
        """
        data: dict[str, Any] | None = None
        if (push or pull) and script is not None:
            # The data plane (river_magics/dataplane.py): process and container tasks alike
            # (the docker backend mounts the runner's cache and out directory).
            frames = await self.push_values(push or {})
            pull_list = check_names(pull or (), "--pull")
            script = wrap_data_script(script, frames, pull_list)
            data = data_spec(frames, pull_list)
            push, pull = None, None
        body, pull_names = submit_body(
            command,
            script=script,
            name=name,
            cores=cores,
            memory=memory,
            gpus=gpus,
            target=target,
            env=env,
            workdir=workdir,
            image=image,
            environment=environment,
            mounts=mounts,
            privileged=privileged,
            push=push,
            pull=pull,
            push_limit=self.push_limit,
            ip_token=ip_token,
            python=python,
            python_fallback=python_fallback,
            time_limit=time_limit,
            priority=priority,
            preemptible=preemptible,
        )
        if _array is not None:
            body["array"] = _array
        if bind_kernel:
            body["lease"] = await self._kernel_lease()
        if data is not None:
            body["data"] = data
            pull_names = list(data["pull"])
        if files:
            body["data"] = {**body.get("data", {}), "files": await self._push_files(files)}
        if nodes is not None:
            body.update(job_fields(nodes, gpus_per_node, network, launcher, nproc_per_node))
        elif launcher is not None or nproc_per_node is not None:
            raise RiverError("launcher and nproc_per_node are for multi-node jobs: add nodes=N")
        answer = await self._request("POST", "/tasks", json=body)
        if nodes is not None:
            members = list(answer.get("members") or [answer["task"]])
            handles = [self._handle_class(self, m["id"], m, pull=pull_names) for m in members]
            labels = [f"rank {m['job']['rank']}" for m in members]
            return self._group_class(self, handles, labels)
        task = answer["task"]
        return self._handle_class(self, task["id"], task, pull=pull_names)

    async def _kernel_lease(self) -> str:
        """This client's lease id, made (and its renewer started) on first use."""
        lease = self._lease
        if lease is None or not lease.alive:
            made = (await self._request("POST", "/leases", json={}))["lease"]
            headers = client_headers(self._token)
            lease = KernelLease(made["id"], made["seconds"], self._lease_api, headers)
            self._lease = lease
        return str(lease.id)

    def _lease_api(self) -> str:
        """The API base the lease's renewer posts to: the current host (after failover)."""
        return self._api

    def _release_lease(self) -> None:
        """End this client's lease at once (a clean close): its bound tasks are killed."""
        lease = self._lease
        if lease is not None:
            self._lease = None
            lease.release()

    @io_method
    async def push_values(self, values: Mapping[str, Any]) -> dict[str, Frame]:
        """Pickle `values` and upload those the host does not hold for us yet (by digest)."""
        check_names(values, "--push")
        frames = frames_of(values)
        if not frames:
            return frames
        wanted = [{"digest": f.digest, "size": f.size} for f in frames.values()]
        missing = set((await self._request("POST", "/data", json={"blobs": wanted}))["missing"])
        for made in frames.values():
            if made.digest in missing:
                await self._upload_frame(made)
                missing.discard(made.digest)
        return frames

    async def _push_files(
        self, files: Mapping[str, str | os.PathLike[str]]
    ) -> dict[str, dict[str, Any]]:
        """Upload local files as blobs (those the host does not hold for us yet, by digest,
        after the host said they fit); NAME -> {digest, size} for a task's data.files."""
        refs = {file_name(name): file_blob(local) for name, local in files.items()}
        wanted = [{"digest": d, "size": n} for d, n in {tuple(r) for r in refs.values()}]
        missing = set((await self._request("POST", "/data", json={"blobs": wanted}))["missing"])
        for name, local in files.items():
            digest, size = refs[file_name(name)]
            if digest in missing:
                await self._upload_file(Path(local), digest, size, "river: pushing")
                missing.discard(digest)
        return {name: {"digest": d, "size": n} for name, (d, n) in refs.items()}

    async def _upload_frame(self, made: Frame) -> None:
        progress = Progress("river: pushing", made.size)
        await self._put_data(made.digest, upload_chunks(made, progress), made.size, progress)

    async def _put_data(
        self, digest: str, parts: Iterable[bytes | memoryview], size: int, progress: Progress
    ) -> None:
        """PUT one content-addressed blob, closing PROGRESS however it ends.

        Every upload (pushed values, `put` archives) maps a dropped connection and a
        refusal to the same errors, so they share this one path.
        """
        try:
            response = await self._io_upload(
                f"{self._api}/data/{digest}",
                parts,
                {"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        finally:
            progress.close()
        if response.status_code >= 400:
            raise error_from_response(response, "PUT", f"{API_PREFIX}/data/{digest}")

    async def _download_pulled(self, id: str | int) -> memoryview | None:
        """A task's pulled values as uploaded by its runner (a frame), or None if none."""
        path = f"/tasks/{task_id(id)}/pulled"
        response, data = await self._download(path, Progress("river: pulling", 0))
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise error_from_response(response, "GET", API_PREFIX + path)
        return data

    async def _download(self, path: str, progress: Progress) -> tuple[httpx.Response, memoryview]:
        """GET API PATH's body, closing PROGRESS however it ends; a dropped connection is
        the client's connection error. Status codes stay with the caller: what a 404
        means differs (no pulled values vs. a blob gone)."""
        try:
            return await self._io_download(self._api + path, progress)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        finally:
            progress.close()

    async def _io_upload(
        self, url: str, parts: Iterable[bytes | memoryview], headers: dict[str, str]
    ) -> httpx.Response:
        raise NotImplementedError

    async def _io_download(self, url: str, progress: Progress) -> tuple[httpx.Response, memoryview]:
        raise NotImplementedError

    @io_method
    async def submit_array(
        self, /, array: str | Iterable[int], *, limit: int | None = None, **options: Any
    ) -> Any:
        """Queue one task per index, at most `limit` placed at once (enforced by the host);
        their group.

        `array` is `"0-31%4"` (32 tasks, 4 at a time), `"1,3,8-11"`, `"0-30:2"` or a list
        of ints. Each task sees RIVER_ARRAY_INDEX (and RIVER_ARRAY_SIZE, RIVER_ARRAY_ID).
        Options are those of `submit`. If a submission fails, those already made are
        killed and the error is raised.
        """
        indices, spec_limit = parse_array(array)
        limit = limit or spec_limit
        array_id = new_array_id()
        handles: list[HandleCore] = []
        if options.get("push") and not options.get("image") and not options.get("environment"):
            options["push"] = await self.push_values(options["push"])  # pickled, sent once
        try:
            for index in indices:
                field = array_field(array_id, index, len(indices), limit)
                handles.append(await self.submit(**options, _array=field))
        except BaseException:
            await self._group_class(self, handles).kill()
            raise
        labels = [str(i) for i in indices]
        return self._group_class(self, handles, labels, array_id=array_id, limit=limit)

    @io_method
    async def resolve_task(self, ref: str | int) -> str:
        """The ID of the task `ref` names: a full ID, a unique ID prefix or a name (your
        tasks first, then everyone's); a RiverError listing the candidates when several
        match (river_magics/resolve.py)."""
        text = check_ref(ref)
        if await self._exists("/tasks/", text):
            return task_id(text)
        for everyone in (False, True):
            found = pick(text, [t async for t in self.iter_tasks(all=everyone)])
            if found is not None:
                return found
        raise RiverError(not_found_message(text, "task"), status=404)

    @io_method
    async def resolve_vps(self, ref: str | int) -> str:
        """The ID of the VPS `ref` names (full ID, unique prefix or name), as resolve_task."""
        text = check_ref(ref, "VPS")
        if await self._exists("/vps/", text):
            return task_id(text)
        for everyone in (False, True):
            found = pick(text, await self.vps_list(all_users=everyone), "VPS")
            if found is not None:
                return found
        raise RiverError(not_found_message(text, "VPS"), status=404)

    async def _exists(self, path: str, text: str) -> bool:
        """True when `text` is the full ID of a record at `path` (one cheap GET, no list)."""
        try:
            ident = task_id(text)
        except ValueError:
            return False
        try:
            await self._request("GET", f"{path}{ident}")
        except RiverError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def handle(self, id: str | int) -> Any:
        """A handle for an existing task, e.g. one submitted with --detach."""
        return self._handle_class(self, task_id(id))

    @io_method
    async def kill(self, id: str | int) -> dict[str, Any]:
        """Ask for a task to end: queued ones end at once, placed ones when the runner confirms."""
        return dict((await self._request("POST", f"/tasks/{task_id(id)}/kill"))["task"])

    @io_method
    async def pause(self, id: str | int) -> dict[str, Any]:
        return dict((await self._request("POST", f"/tasks/{task_id(id)}/pause"))["task"])

    @io_method
    async def resume(self, id: str | int) -> dict[str, Any]:
        return dict((await self._request("POST", f"/tasks/{task_id(id)}/resume"))["task"])

    @io_method
    async def logs(self, id: str | int, since: int = 0) -> list[dict[str, Any]]:
        """Log lines with `seq > since` (one page), each {seq, stream, text, ts}."""
        return await self._list(f"/tasks/{task_id(id)}/logs", "lines", params={"since": since})

    @io_method
    async def blobs(self, id: str | int) -> list[dict[str, Any]]:
        """The blobs kept with a task: [{name, size}]."""
        return await self._list(f"/tasks/{task_id(id)}/blobs", "blobs")

    @io_method
    async def get_blob(self, id: str | int, name: str) -> bytes:
        return (await self._send("GET", f"/tasks/{task_id(id)}/blobs/{name}")).content

    @io_method
    async def put_blob(self, id: str | int, name: str, data: bytes) -> dict[str, Any]:
        """Keep `data` with a task (at most the host's blob_max_bytes; 413 beyond)."""
        path = f"/tasks/{task_id(id)}/blobs/{name}"
        return dict((await self._request("PUT", path, content=data))["blob"])

    # -- files in and out of running tasks and VPSes (river_magics/file_copy.py) ----------

    @io_method
    async def put(self, local: str | os.PathLike[str], id: str | int, path: str) -> dict[str, Any]:
        """Copy the file or directory `local` to `path` in the running task or VPS `id`
        (a tar stream over the data plane: uploaded once by digest, within your bounds)."""
        ref = task_id(id)
        archive, digest, size = pack(local, path)
        try:
            wanted = [{"digest": digest, "size": size}]
            missing = (await self._request("POST", "/data", json={"blobs": wanted}))["missing"]
            if missing:
                await self._upload_file(archive, digest, size)
        finally:
            archive.unlink(missing_ok=True)
        body = {"path": path, "digest": digest}
        answer = await self._request("POST", f"/tasks/{ref}/files/put", json=body)
        return {**answer, "size": size}

    @io_method
    async def get_file(
        self, id: str | int, path: str, local: str | os.PathLike[str]
    ) -> dict[str, Any]:
        """Copy the file or directory at `path` in the running task or VPS `id` to `local`
        (inside it, if `local` is a directory); where it went and how many bytes came."""
        ref = task_id(id)
        answer = await self._request("POST", f"/tasks/{ref}/files/get", json={"path": path})
        digest = answer["blob"]["digest"]
        progress = Progress("river: getting", int(answer["blob"]["size"]))
        response, data = await self._download(f"/data/{digest}", progress)
        if response.status_code >= 400:
            raise error_from_response(response, "GET", f"{API_PREFIX}/data/{digest}")
        return {"path": str(unpack(data, local)), "size": len(data)}

    async def _upload_file(
        self, archive: Any, digest: str, size: int, label: str = "river: putting"
    ) -> None:
        progress = Progress(label, size)
        await self._put_data(digest, file_chunks(archive, progress), size, progress)

    # -- container environments (river_server/environments.py) -------------------------

    @io_method
    async def environments(self) -> list[dict[str, Any]]:
        return await self._list("/environments", "environments")

    @io_method
    async def environment(self, name: str) -> dict[str, Any]:
        return dict((await self._request("GET", f"/environments/{_env_name(name)}"))["environment"])

    @io_method
    async def create_environment(self, name: str, image: str) -> dict[str, Any]:
        body = {"name": _env_name(name), "image": image}
        answer = await self._request("POST", "/environments", json=body, timeout=ENV_TIMEOUT)
        return dict(answer["environment"])

    @io_method
    async def exec_environment(
        self, name: str, command: str, timeout: float = ENV_EXEC_TIMEOUT
    ) -> dict[str, Any]:
        """Run a shell command in an environment's container: {output, exit_code}."""
        return await self._request(
            "POST",
            f"/environments/{_env_name(name)}/exec",
            json={"command": command, "timeout": timeout},
            timeout=timeout + 30,
        )

    @io_method
    async def export_environment(self, name: str) -> dict[str, Any]:
        path = f"/environments/{_env_name(name)}/export"
        return dict((await self._request("POST", path, timeout=ENV_TIMEOUT))["environment"])

    @io_method
    async def delete_environment(self, name: str, tarball: bool = False) -> dict[str, Any]:
        params = {"tarball": "1"} if tarball else {}
        path = f"/environments/{_env_name(name)}"
        return await self._request("DELETE", path, params=params, timeout=ENV_TIMEOUT)

    # -- VPSes (river_server/vps.py) ------------------------------------------------------

    @io_method
    async def vps_list(self, all_users: bool = False) -> list[dict[str, Any]]:
        return await self._list("/vps", "vps", params={"all": "1"} if all_users else {})

    @io_method
    async def vps_create(self, /, **body: Any) -> dict[str, Any]:
        """Create a VPS (image, cores, memory, gpus, target, ssh, public_key, name; vm=True
        and disk="20G" for a QEMU virtual machine; time_limit: seconds or "8h", after which
        it is stopped with a snapshot); with ssh="generate" the answer holds `private_key`,
        shown this once."""
        if body.get("time_limit") is not None:  # a typo fails here, before any request
            body["time_limit"] = parse_duration(body["time_limit"])
        return dict((await self._request("POST", "/vps", json=body))["vps"])

    @io_method
    async def vps(self, vps_id: str) -> dict[str, Any]:
        return dict((await self._request("GET", f"/vps/{vps_id}"))["vps"])

    @io_method
    async def vps_action(self, vps_id: str, action: str) -> dict[str, Any]:
        """stop | restart | pause | resume | snapshot."""
        return dict((await self._request("POST", f"/vps/{vps_id}/{action}", timeout=120))["vps"])

    @io_method
    async def vps_delete(self, vps_id: str) -> dict[str, Any]:
        return await self._request("DELETE", f"/vps/{vps_id}", timeout=120)

    @io_method
    async def vps_exec(
        self, vps_id: str, command: list[str], detach: bool = False
    ) -> dict[str, Any]:
        """Run a command in the VPS (no TTY): `{exit_code, output}`, or `{detached: true}`."""
        body = {"command": list(command), "detach": detach}
        return await self._request("POST", f"/vps/{vps_id}/exec", json=body, timeout=120)

    @io_method
    async def vps_start_app(self, /, vps_id: str, app: str, **options: Any) -> dict[str, Any]:
        """Start "jupyter" or "tensorboard" (port=, logdir=) in the VPS; the VPS, whose
        `ports` now list it with the `path` to open and the `ready_path` to poll."""
        body = {"app": app, **{k: v for k, v in options.items() if v is not None}}
        answer = await self._request("POST", f"/vps/{vps_id}/apps", json=body, timeout=120)
        return dict(answer["vps"])

    @io_method
    async def vps_snapshots(self, vps_id: str) -> list[dict[str, Any]]:
        return list((await self._request("GET", f"/vps/{vps_id}/snapshots"))["snapshots"])

    @io_method
    async def vps_delete_snapshot(self, vps_id: str, number: int) -> list[dict[str, Any]]:
        path = f"/vps/{vps_id}/snapshots/{int(number)}"
        return list((await self._request("DELETE", path, timeout=120))["snapshots"])

    def proxy_url(self, ident: str, port: int, path: str = "", absolute: bool = False) -> str:
        """The URL of a VPS's (or task's) PORT through the host's proxy."""
        form = "absolute/" if absolute else ""
        return f"{self.url}/river/proxy/{form}{ident}/{int(port)}/{path.lstrip('/')}"

    @io_method
    async def wait_url(self, url: str, timeout: float = 60.0) -> int:
        """Poll a proxied URL until it answers with something other than 502/503/409 (the
        app is still starting); its status. Raises RiverError when the time is up."""
        deadline = time.monotonic() + timeout
        status = 0
        while time.monotonic() < deadline:
            try:
                status = (await self._io_request("GET", url, timeout=5)).status_code
            except httpx.TransportError as exc:
                raise self._transport_error(exc) from None
            if status not in (409, 502, 503):
                return status
            await self._io_sleep(0.25)
        raise RiverError(f"{url} did not answer within {timeout:.0f} s (last status {status})")

    # -- overlay network (river_server/overlay.py) ---------------------------------------

    @io_method
    async def overlay(self) -> dict[str, Any]:
        """The overlay's layout and each runner's allocation (index, VXLAN id, subnet)."""
        return await self._request("GET", "/overlay")

    @io_method
    async def reserve_ip(
        self, node: str | None = None, ttl: float | None = None, ip: str | None = None
    ) -> dict[str, Any]:
        """Hold an overlay address for `ttl` seconds (default 600). The answer has `ip` and
        the `token` (shown only now): pass it as `submit(..., ip_token=token)`."""
        body = {k: v for k, v in (("node", node), ("ttl", ttl), ("ip", ip)) if v is not None}
        return dict(
            (await self._request("POST", "/overlay/reservations", json=body))["reservation"]
        )

    @io_method
    async def ip_reservations(self, all: bool = False) -> list[dict[str, Any]]:
        params = {"all": "1"} if all else {}
        return await self._list("/overlay/reservations", "reservations", params=params)

    @io_method
    async def release_ip(self, id_or_token: str | int) -> dict[str, Any]:
        """Give back a reservation, by its id or its token."""
        key = str(id_or_token).strip()
        if key.startswith("rip_"):  # tokens travel in the body, never in a URL
            path = "/overlay/reservations/release"
            body = await self._request("POST", path, json={"token": key})
        elif key.isdigit():
            body = await self._request("DELETE", f"/overlay/reservations/{key}")
        else:
            raise RiverError(f"give a reservation id (a number) or its rip_... token, not {key!r}")
        return dict(body["reservation"])

    # -- events -----------------------------------------------------------------------

    @io_iterator
    async def events(
        self,
        task_ids: Iterable[str | int] | None = None,
        since: int = 0,
        all_tasks: bool = False,
        *,
        keepalive: bool = False,
        read_timeout: float = EVENTS_READ_TIMEOUT,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """`(kind, data)` from the host's event stream until it closes.

        Kinds: hello, task, log, node (see docs/api.md); with `keepalive=True` also
        ("keepalive", None) for each keepalive comment. Closing the iterator closes the
        connection.
        """
        params: list[tuple[str, str | int]] = [("task", task_id(t)) for t in task_ids or ()]
        if since:
            params.append(("since", since))
        if all_tasks:
            params.append(("tasks", "all"))
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=read_timeout)
        path = "/events"
        headers = {"Accept": "text/event-stream"}
        try:
            async with self._io_stream(
                "GET", self._api + path, params=params, headers=headers, timeout=timeout
            ) as (response, lines):
                if is_standby_refusal(response) and self.hosts.several:
                    # A standby streams nothing: move to the leader it names; the watch
                    # polls (which finds the leader) and reopens the stream there.
                    self.hosts.follow(response.headers.get(LEADER_HEADER))
                    raise RiverConnectionError(f"{self.url} is a standby; following the leader")
                if response.status_code >= 400:
                    raise error_from_response(response, "GET", API_PREFIX + path)
                async with aclosing(aparse_sse(lines, keepalive=keepalive)) as parsed:
                    async for event in parsed:
                        yield event
        except httpx.TransportError as exc:
            if self.hosts.several:
                self.hosts.next()  # the leader may have gone: the next try goes elsewhere
            raise self._transport_error(exc) from None

    @io_iterator
    async def watch(
        self,
        handles: Sequence[HandleCore],
        *,
        logs: bool = True,
        since: Mapping[str, int] | int = 0,
        timeout: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """("task", record) on each change and ("log", line) per new line of several
        tasks, each task's lines in order and once, until all are terminal.

        A task's terminal record comes after its last line. Survives dropped streams:
        reconnects with `since`, polling in between, so no line is lost or repeated.
        Raises TimeoutError past `timeout`, and RiverError if the host stays unreachable
        for UNREACHABLE_LIMIT seconds.
        """
        watch = WatchSet(handles, logs, since)
        pacer = WatchPacer(timeout)
        while not watch.done:
            if pacer.use_stream:
                try:
                    async for event in self._watch_stream(watch, pacer):
                        yield event
                except RiverError as exc:
                    if not pacer.stream_failed(exc):
                        raise
                if watch.done:
                    return
                if pacer.reopen_now(watch):
                    continue  # a working stream ended, dropped or timed out: reopen
            pacer.check_deadline(watch.pending)
            try:
                async for event in self._watch_poll(watch):
                    yield event
                pacer.polled()
            except RiverConnectionError:
                if pacer.unreachable_too_long():
                    raise
            if watch.done:
                return
            await self._io_sleep(pacer.next_pause())

    async def _watch_stream(
        self, watch: WatchSet, pacer: WatchPacer
    ) -> AsyncGenerator[Event, None]:
        read_timeout, refreshing = pacer.open_stream(watch)
        events = self.events(
            watch.pending, since=watch.stream_since(), keepalive=True, read_timeout=read_timeout
        )
        try:
            async for kind, data in events:
                tail_id = watch.tail_needed(kind, data)
                if tail_id is not None:
                    async for event in self._tail(watch, tail_id):
                        yield event
                classified = watch.events_for(kind, data)
                if classified is not None:
                    yield classified
                    if watch.done:
                        return
                if watch.should_reopen(kind, refreshing):
                    return  # only queued tasks left: reopen with the short timeout
                pacer.check_deadline(watch.pending)
        except RiverConnectionError:
            pacer.check_deadline(watch.pending)
            raise
        finally:
            await events.aclose()

    async def _watch_poll(self, watch: WatchSet) -> AsyncGenerator[Event, None]:
        for id in watch.pending:
            record = await self.task(id)
            if watch.logs:
                async for event in self._tail(watch, id):
                    yield event
            if watch.task(record) is not None:
                yield EVENT_TASK, record

    async def _tail(self, watch: WatchSet, id: str) -> AsyncGenerator[Event, None]:
        """The lines of task `id` after the last one seen (lines written just before the
        end may still be on their way when the terminal record arrives)."""
        since = watch.tasks[id].last_seq
        while True:
            page = watch.lines(id, await self.logs(id, since=since))
            if not page:
                return
            for line in page:
                yield EVENT_LOG, line
            since = page[-1]["seq"]


class _Failover:
    """One request's search for the leader among several hosts: which URL to try next and
    how long to pause, or None to give up (one host; a request that may have been applied;
    FAILOVER_WAIT spent)."""

    def __init__(self, hosts: HostList, method: str) -> None:
        self.hosts = hosts
        self.method = method.upper()
        self.started = time.monotonic()
        self.tried = 0

    def _step(self) -> float | None:
        if time.monotonic() - self.started > FAILOVER_WAIT:
            return None
        self.tried += 1
        # A full round of the URLs found no leader: pause before the next round.
        return FAILOVER_PAUSE if self.tried % len(self.hosts.urls) == 0 else 0.0

    def after_error(self, exc: httpx.TransportError) -> float | None:
        if not self.hosts.several:
            return None
        # A write whose connection broke after it was sent may have been applied: do not
        # send it twice. A refused connection never reached any host.
        if self.method not in ("GET", "HEAD") and not isinstance(exc, httpx.ConnectError):
            return None
        self.hosts.next()
        return self._step()

    def after_standby(self, response: httpx.Response) -> float | None:
        if not self.hosts.several:
            return None
        self.hosts.follow(response.headers.get(LEADER_HEADER))
        return self._step()
