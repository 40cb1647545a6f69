"""`RiverSpawner`: each JupyterHub user's single-user server is a River VPS of that user.

Runs inside the JupyterHub process (`c.JupyterHub.spawner_class = RiverSpawner`), so it
talks to River over HTTP only and imports jupyterhub, which the Hub has anyway.

Why it acts with the server's own token: the Hub makes `self.api_token` for this one spawn,
owned by this one user; with River's access scope in `server_token_scopes` River accepts it
as that user (river_server/hub.py). So the Hub holds no River admin credential and a
spawner can only ever create, stop or read *its own user's* VPSes; River's quotas, queue
and ownership checks apply as for anything else that user does. The token is kept in the
spawner's state (the Hub's database) so a restarted Hub can still poll and stop the server;
the Hub revokes it when the server stops.

Lifecycle: start creates the VPS (`hub_port` = the server's port, which
river_server/hub_servers.py routes `/user/<name>/` to), or restarts it from its newest
snapshot when this spawner already has one, waits for it to run, then starts
`jupyterhub-singleuser` in it (detached exec) with the Hub's environment plus RIVER_URL /
RIVER_TOKEN. The Hub's proxy target is River itself. stop = River's VPS stop (a snapshot:
the home and installed packages come back with the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from jupyterhub.spawner import Spawner
from traitlets import Float, List, Unicode, default

from river_server.hub_spawn import SERVER_ROLE_SCOPES, with_river_off

RUNNING = ("running", "paused")
SERVER_LOG = "/tmp/river-jupyterhub-singleuser.log"
SERVER_EXIT = "/tmp/river-jupyterhub-singleuser.exit"
# "exited N; its last output: ..." once the server's process has ended, else nothing.
SERVER_REPORT = (
    f"[ -f {SERVER_EXIT} ] && printf 'exited %s; its last output:\\n' \"$(cat {SERVER_EXIT})\" "
    f"&& tail -c 3000 {SERVER_LOG}"
)
STARTING = ("pending_approval", "queued", "assigning")

FORM = """
<div class="form-group">
  <label for="river-cores">CPU cores</label>
  <input class="form-control" id="river-cores" name="cores" type="number" min="1"
         step="1" value="{cores:g}">
  <label for="river-memory">Memory (e.g. 2G, 512M)</label>
  <input class="form-control" id="river-memory" name="memory" value="{memory}">
  <label for="river-gpus">GPUs</label>
  <input class="form-control" id="river-gpus" name="gpus" type="number" min="0" value="0">
  <label for="river-image">Image</label>
  <input class="form-control" id="river-image" name="image" value="{image}">
  <label for="river-node">Node (empty: any)</label>
  <input class="form-control" id="river-node" name="node" value="">
</div>
"""


class RiverError(Exception):
    """River refused: the message is River's, shown on the Hub's spawn page."""


class RiverSpawner(Spawner):
    """A Hub user's server in a River VPS of that user (docs/jupyterhub.md)."""

    river_url = Unicode(config=True, help="River as the Hub reaches it, e.g. http://10.0.0.1:8888")
    servers_url = Unicode(
        config=True,
        help="River's JupyterHub-servers listener as the Hub's proxy reaches it "
        "(c.RiverHost.hub_servers_port), e.g. http://10.0.0.1:8890: every server's proxy target",
    )
    river_url_in_server = Unicode(
        "",
        config=True,
        help="RIVER_URL inside a server's container, where River is reached from there "
        "(empty: river_url)",
    )
    river_service_name = Unicode("river", config=True, help="River's name in JupyterHub.services")
    image = Unicode(
        "", config=True, help="Default image of a new server's VPS (it needs jupyterhub-singleuser)"
    )
    default_cores = Float(1.0, config=True, help="The form's default CPU cores")
    default_memory = Unicode("2G", config=True, help="The form's default memory")
    poll_seconds = Float(0.5, config=True, help="How often start() asks River for the VPS state")
    vps_id = Unicode("")
    river_token = Unicode("")

    @default("port")
    def _port(self) -> int:
        return 8888

    @default("ip")
    def _ip(self) -> str:
        return "0.0.0.0"  # inside the VPS: the runner forwards to the container's address

    @default("cmd")
    def _cmd(self) -> list[str]:
        return ["jupyterhub-singleuser", "--allow-root"]

    def get_args(self) -> list[str]:
        """The Hub's arguments, with River's host extension off (hub_spawn.RIVER_OFF_ARG):
        an image with jupyter-river installed for `%river` would enable it."""
        return with_river_off(super().get_args())

    @default("env_keep")
    def _env_keep(self) -> list[str]:
        return []  # the Hub's PATH, PYTHONPATH, VIRTUAL_ENV mean nothing in the container

    @default("server_token_scopes")
    def _scopes(self) -> list[str]:
        return [*SERVER_ROLE_SCOPES, f"access:services!service={self.river_service_name}"]

    @default("options_form")
    def _form(self) -> str:
        return FORM.format(cores=self.default_cores, memory=self.default_memory, image=self.image)

    @default("options_from_form")
    def _from_form(self) -> Any:
        return options_from_form

    events: List = List()

    # ---- state ---------------------------------------------------------------------------
    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.vps_id = state.get("vps_id", "")
        self.river_token = state.get("river_token", "")

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.vps_id:
            state["vps_id"] = self.vps_id
        if self.river_token:
            state["river_token"] = self.river_token
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.river_token = ""  # the VPS id stays: the next start restarts it

    # ---- River ---------------------------------------------------------------------------
    async def _call(self, method: str, path: str, token: str = "", **kwargs: Any) -> Any:
        headers = {"Authorization": f"token {token or self.river_token or self.api_token}"}
        url = f"{self.river_url.rstrip('/')}/river/api{path}"
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.request(method, url, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise RiverError(f"River answered {response.status_code}: {message}")
        return response.json() if response.content else {}

    async def _vps(self) -> dict[str, Any] | None:
        try:
            return (await self._call("GET", f"/vps/{self.vps_id}"))["vps"]
        except RiverError as exc:
            if "answered 404" in str(exc):
                return None
            raise

    def _create_body(self) -> dict[str, Any]:
        options = self.user_options or {}
        body: dict[str, Any] = {
            "name": f"jupyterhub-{self.user.name}",
            "hub_port": self.port,
            "cores": options.get("cores") or self.default_cores,
            "memory": options.get("memory") or self.default_memory,
        }
        image = options.get("image") or self.image
        if image:
            body["image"] = image
        if options.get("gpus"):
            body["gpus"] = options["gpus"]
        if options.get("node"):
            body["target"] = options["node"]
        return body

    def _note(self, message: str) -> None:
        self.events.append({"message": message})
        self.log.info("RiverSpawner %s: %s", self._log_name, message)

    async def start(self) -> str:
        self.river_token = self.api_token
        self.events = []
        vps = await self._vps() if self.vps_id else None
        if vps is not None and vps["state"] in (*RUNNING, *STARTING):
            self._note(f"stopping the old server in VPS {self.vps_id}")
            await self._call("POST", f"/vps/{self.vps_id}/stop")
            vps = await self._wait(lambda v: v["state"] not in (*RUNNING, *STARTING))
        if vps is not None:
            self._note(f"restarting VPS {self.vps_id} from its newest snapshot")
            await self._call("POST", f"/vps/{self.vps_id}/restart")
        else:
            answer = await self._call("POST", "/vps", json=self._create_body())
            self.vps_id = answer["vps"]["id"]
            self._note(f"VPS {self.vps_id} created")
        vps = await self._wait(lambda v: v["state"] in RUNNING, report=True)
        await self._call("POST", f"/vps/{self.vps_id}/exec", json={
            "command": self._command(), "detach": True,
        })  # fmt: skip
        self._note("jupyterhub-singleuser started; waiting for it to answer")
        await self._wait_answering()
        self._note("the server answers")
        return self.servers_url.rstrip("/")

    def _command(self) -> list[str]:
        env = self.get_env()
        env["RIVER_URL"] = self.river_url_in_server or self.river_url.rstrip("/")
        env["RIVER_TOKEN"] = self.api_token
        assignments = [f"{key}={value}" for key, value in env.items()]
        argv = [*self.cmd, *self.get_args()]
        # In the home directory (it is kept by the VPS's snapshots), with the Hub's env; its
        # output and exit status go to files start() reads, so a server that dies says why.
        script = (
            f'rm -f {SERVER_EXIT}; cd "$HOME" || exit 1; '
            f'"$@" >{SERVER_LOG} 2>&1; echo $? >{SERVER_EXIT}'
        )
        return ["/bin/sh", "-c", script, "sh", "env", *assignments, *argv]

    async def _wait_answering(self) -> None:
        """Until the server answers at the Hub's proxy target, or its process has ended:
        then the spawn fails at once with the server's own last output (the Hub would
        otherwise wait out http_timeout and say only that it timed out)."""
        url = f"{self.servers_url.rstrip('/')}{self.user.url.rstrip('/')}/api"
        deadline = time.monotonic() + self.http_timeout
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = await client.get(url)  # jupyter_server's version, no login
                    if answer.status_code == 200 and "version" in answer.json():
                        return
                ended = await self._call("POST", f"/vps/{self.vps_id}/exec", json={
                    "command": ["/bin/sh", "-c", SERVER_REPORT], "detach": False,
                })  # fmt: skip
                output = str(ended.get("output", ""))
                if output.startswith("exited"):
                    raise RiverError(
                        f"jupyterhub-singleuser in VPS {self.vps_id} {output.strip()[:4000]}"
                    )
                if time.monotonic() > deadline:
                    raise RiverError(
                        f"jupyterhub-singleuser in VPS {self.vps_id} did not answer at {url} "
                        f"within {self.http_timeout} s; its output is in {SERVER_LOG} there"
                    )
                await asyncio.sleep(self.poll_seconds)

    async def _wait(self, done: Any, report: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + self.start_timeout
        seen = ""
        while True:
            vps = await self._vps()
            if vps is None:
                raise RiverError(f"VPS {self.vps_id} is gone")
            if report:
                state = vps["state"]
                if state != seen:
                    seen = state
                    where = f" on {vps['node']}" if vps.get("node") else ""
                    reason = f" ({vps['reason']})" if vps.get("reason") else ""
                    self._note(f"VPS {self.vps_id} {state}{where}{reason}")
                if state not in (*RUNNING, *STARTING):
                    raise RiverError(f"VPS {self.vps_id} ended {state}{reason}")
            if done(vps):
                return vps
            if time.monotonic() > deadline:
                raise RiverError(f"VPS {self.vps_id} is still {vps['state']} after "
                                 f"{self.start_timeout} s")  # fmt: skip
            await asyncio.sleep(self.poll_seconds)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """River's VPS states for the Hub's spawn page, as start() sees them."""
        sent = 0
        while True:
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self._spawn_future is not None and self._spawn_future.done():
                return
            await asyncio.sleep(self.poll_seconds)

    async def poll(self) -> int | None:
        if not self.vps_id or not self.river_token:
            return 0
        try:
            vps = await self._vps()
        except RiverError as exc:
            self.log.warning("RiverSpawner %s: poll: %s", self._log_name, exc)
            return None  # River unreachable or refusing: do not declare the server dead
        if vps is None:
            return 0
        return None if vps["state"] in (*RUNNING, *STARTING) else 0

    async def stop(self, now: bool = False) -> None:
        if not self.vps_id:
            return
        vps = await self._vps()
        if vps is not None and vps["state"] in (*RUNNING, *STARTING):
            await self._call("POST", f"/vps/{self.vps_id}/stop")
            self._note(f"VPS {self.vps_id} stopped (snapshot kept)")


def options_from_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """The spawn form's fields, as River's VPS fields (River validates them)."""

    def first(name: str) -> str:
        return (form.get(name) or [""])[0].strip()

    options: dict[str, Any] = {}
    for name in ("memory", "image", "node"):
        if first(name):
            options[name] = first(name)
    for name, kind in (("cores", float), ("gpus", int)):
        if first(name):
            try:
                options[name] = kind(first(name))
            except ValueError:
                raise ValueError(f"{name} must be a number, not {first(name)!r}") from None
    return options
