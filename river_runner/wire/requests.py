"""Request bodies of the host's user API, one model per route that takes a JSON body.

Every model forbids unknown fields: a misspelled `gpu` or `cpus` used to be dropped in
silence, giving a task without the GPU or cores its author asked for. Types are strict (no
"true" for a boolean), except where the host has always taken a number written as text.
Rules that depend on who calls (0 cores, privileged containers, host mounts, roles one may
grant) stay in the host's handlers and services; rules about the value alone live here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from river_runner.spec import SpecError
from river_runner.wire.fields import (
    MAX_COUNT,
    Command,
    Cores,
    Count,
    Env,
    EnvironmentName,
    Gpus,
    Image,
    Label,
    Memory,
    Mounts,
    Password,
    Priority,
    Python,
    Role,
    Seconds,
    StoredText,
    Target,
    TimeLimit,
    UserName,
)

SSH_MODES = ("disabled", "none", "upload", "generate")
APPS = ("jupyter", "tensorboard")
MAX_TTL = 7 * 24 * 3600.0
MAX_JOB_NODES = 64  # members of one multi-node job (one per node)


class Request(BaseModel):
    """Base of every request body: unknown fields are an error, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def fields_set(self) -> dict[str, Any]:
        """The fields the caller sent (validated), for services that read a dict."""
        return self.model_dump(exclude_unset=True)


class EmptyBody(Request):
    """Routes whose action needs no input (kill, stop, ...): any field is a mistake."""


# ---- tasks -----------------------------------------------------------------------------


class ArraySpec(Request):
    """A task's place in an array (river_server/arrays.py)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    index: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    size: Annotated[int | None, Field(ge=1, le=MAX_COUNT)] = None
    limit: Annotated[int | None, Field(ge=1, le=MAX_COUNT)] = None


class ContainerFields(Request):
    """What a task and a VPS share: resources, container options, an overlay address."""

    name: Annotated[str | None, Field(max_length=256), StoredText] = None
    cores: Cores = 1
    memory: Memory = None
    gpus: Gpus = None
    target: Target = None
    env: Env = None
    image: Image = None
    mounts: Mounts = None
    privileged: bool = False
    time_limit: TimeLimit = None
    priority: Priority = None
    preemptible: bool = Field(
        default=False,
        description="a higher-priority or under-share waiting task may displace it: "
        "SIGTERM, the host's preempt_grace, then it is requeued (docs/scheduling.md)",
    )
    ip_token: Annotated[
        str | None,
        Field(max_length=128, description="a reserved overlay address's token"),
    ] = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or len(value) > 256):
            raise SpecError("'name' must be a string of at most 256 characters")
        return value

    @field_validator("privileged", mode="before")
    @classmethod
    def _privileged(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise SpecError("'privileged' must be true or false")
        return value


class TaskSubmit(ContainerFields):
    """POST /tasks: a command (argv or shell string) or a Python script."""

    kind: Literal["command", "python"] | None = None
    command: Command = None
    script: str | None = None
    workdir: str | None = None
    environment: EnvironmentName = None
    array: ArraySpec | None = None
    nodes: int | None = Field(
        default=None,
        ge=1,
        le=MAX_JOB_NODES,
        description="a multi-node job: this many members, one per node, placed together; "
        "each asks for cores/memory/gpus (river_server/jobs.py)",
    )
    gpus_per_node: int | None = Field(
        default=None, ge=0, description="a job member's GPU count (the same as `gpus`)"
    )
    network: Literal["overlay", "host"] | None = Field(
        default=None,
        description="a job's network: `overlay` (default; each member at its own overlay "
        "address) or `host` (each member in its node's own network stack, a port from the "
        "host's job_port_range; roles of at least c.RiverHost.host_network_role)",
    )
    lease: Annotated[
        str | None,
        Field(
            max_length=32,
            pattern=r"^[0-9]+$",
            description="a kernel lease's id (POST /leases): the task is killed when the "
            "lease lapses, i.e. when the notebook kernel that renews it goes away",
        ),
    ] = None
    launcher: Literal["torchrun"] | None = Field(
        default=None,
        description="a job's launcher: `torchrun` runs each member's script through "
        "`python -m torch.distributed.run` with the rendezvous arguments (needs `nodes`)",
    )
    nproc_per_node: int | None = Field(
        default=None,
        ge=1,
        description="processes torchrun starts on each member (at most its GPUs when it "
        "asks for GPUs, else its cores); only with `launcher`",
    )
    python: Python = None
    data: TaskData | None = Field(
        default=None, description="pushed blobs and pulled names (the data plane)"
    )
    python_fallback: bool = Field(
        default=False,
        description="when `python` is not on the node, run with the runner's own "
        "interpreter and say so (%%river submit's default: the kernel's interpreter)",
    )

    @field_validator("python_fallback", mode="before")
    @classmethod
    def _python_fallback(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise SpecError("'python_fallback' must be true or false")
        return value

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, value: Any) -> Any:
        if value not in (None, "", "overlay", "host"):
            raise SpecError(f"network must be 'overlay' or 'host', not {value!r}")
        return value or None

    @field_validator("launcher", mode="before")
    @classmethod
    def _launcher(cls, value: Any) -> Any:
        if value not in (None, "", "torchrun"):
            raise SpecError(f"launcher must be 'torchrun', not {value!r}")
        return value or None

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _nproc_per_node(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpecError(f"'nproc_per_node' must be a whole number of at least 1, not {value!r}")
        if value is not None and value < 1:
            raise SpecError(f"'nproc_per_node' must be at least 1, not {value}")
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        if value == "":
            return None
        if value is not None and value not in ("command", "python"):
            raise SpecError(f"kind must be one of command, python, not {value!r}")
        return value


class TaskDecision(Request):
    """POST /tasks/{id}/approve|reject."""

    reason: Annotated[str | None, Field(max_length=1000), StoredText] = None


# ---- VPSes -----------------------------------------------------------------------------


class VpsCreate(ContainerFields):
    """POST /vps: a long-lived container."""

    ssh: Literal["disabled", "none", "upload", "generate"] | Literal[False] | None = None
    public_key: Annotated[str | None, Field(max_length=16384)] = None
    backend: Annotated[str | None, Field(description="docker, or vm (as `vm: true`)")] = None
    vm: bool = Field(
        default=False,
        description="a QEMU virtual machine instead of a container (a runner started with "
        "--vm-accel); `image`, `mounts`, `privileged` do not apply",
    )
    disk: Annotated[
        str | int | None,
        Field(description="a VM's disk size, e.g. 20G (default 8G); VMs only"),
    ] = None
    hub_port: Annotated[
        int | None,
        Field(
            ge=1,
            le=65535,
            description="the port of a JupyterHub single-user server in it (RiverSpawner): "
            "the hub-servers listener (c.RiverHost.hub_servers_port) forwards /user/<name>/ "
            "there without River's login (the server checks the Hub's)",
        ),
    ] = None
    no_cull: bool = Field(
        default=False,
        description="never stop this VPS for being idle (c.RiverHost.idle_cull_window); "
        "operators and admins only (403 for a user)",
    )

    @field_validator("ssh", mode="before")
    @classmethod
    def _ssh(cls, value: Any) -> Any:
        if value not in (None, False) and value not in SSH_MODES:
            raise SpecError(f"ssh must be one of {', '.join(SSH_MODES)}, not {value!r}")
        return value


class VpsExec(Request):
    """POST /vps/{id}/exec: a command without a TTY."""

    command: Annotated[list[str], Field(min_length=1)]
    detach: bool = False

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if not (isinstance(value, list) and value and all(isinstance(c, str) for c in value)):
            raise SpecError('command must be a list of strings, e.g. ["ls", "-l"]')
        return value


class VpsAppStart(Request):
    """POST /vps/{id}/apps: Jupyter or TensorBoard inside the VPS."""

    app: Literal["jupyter", "tensorboard"]
    port: Annotated[int | None, Field(ge=1, le=65535)] = None
    logdir: Annotated[str | None, Field(max_length=4096)] = None

    @field_validator("app", mode="before")
    @classmethod
    def _app(cls, value: Any) -> Any:
        if value not in APPS:
            raise SpecError(f"app must be one of {', '.join(APPS)}, not {value!r}")
        return value

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535
        ):
            raise SpecError(f"port must be a number 1-65535, not {value!r}")
        return value


# ---- environments ----------------------------------------------------------------------


class EnvironmentCreate(Request):
    """POST /environments."""

    name: Annotated[str, Field(max_length=63)]
    image: Annotated[str, Field(max_length=255)]


class EnvironmentExec(Request):
    """POST /environments/{name}/exec."""

    command: Annotated[list[str], Field(min_length=1)] | Annotated[str, Field(min_length=1)]
    timeout: Annotated[float | None, Field(gt=0)] = None

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
            return value
        if isinstance(value, str) and value.strip():
            return value
        raise SpecError("'command' must be an argv list (strings) or a non-empty shell string")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise SpecError("'timeout' must be a positive number of seconds")
        return value


# ---- overlay ---------------------------------------------------------------------------


class ReservationCreate(Request):
    """POST /overlay/reservations: hold an overlay address for a task not yet launched."""

    node: Annotated[str | None, Field(max_length=63)] = None
    ttl: Annotated[float | None, Field(gt=0, le=MAX_TTL)] = None
    ip: Annotated[str | None, Field(max_length=64)] = None


class ReservationRelease(Request):
    """POST /overlay/reservations/release: by token, kept out of URLs."""

    token: Annotated[str, Field(pattern=r"^rip_", max_length=128)]


# ---- accounts --------------------------------------------------------------------------


class QuotaFields(Request):
    max_cores: Count = None
    max_gpus: Count = None


class UserCreate(QuotaFields):
    """POST /users (admins)."""

    name: UserName
    role: Role = "user"
    password: Password | None = None


class UserUpdate(QuotaFields):
    """PATCH /users/{name}: role and quota (admins), password (yourself or an admin)."""

    role: Role | None = None
    password: Password | None = None
    current_password: Annotated[str | None, Field(max_length=1024)] = None


class TokenCreate(Request):
    """POST /tokens."""

    label: Label = None
    expires_in: Seconds = None
    user: UserName | None = None


class InvitationCreate(Request):
    """POST /invitations (operators)."""

    role: Role = "user"
    uses: Annotated[int, Field(ge=1, le=10_000)] = 1
    expires_in: Seconds = 7 * 86400


class InvitationRedeem(Request):
    """POST /invitations/redeem: make an account with a code."""

    code: Annotated[str, Field(max_length=256)]
    name: UserName
    password: Password


class LoginRequest(Request):
    """POST /login: a user name and password for a new API token."""

    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(max_length=1024)]
    label: Label = None
    expires_in: Seconds = None


class GroupCreate(QuotaFields):
    """POST /groups (admins)."""

    name: UserName
    members: list[UserName] | None = None


class GroupUpdate(QuotaFields):
    """PATCH /groups/{name} (admins)."""


# ---- the data plane (river_server/datastore.py) ----------------------------------------

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="BLAKE3 of the bytes (64 hex digits)")]


class BlobRef(Request):
    """One blob by digest and size."""

    digest: Digest
    size: Annotated[int, Field(ge=0)]


class DataCheck(Request):
    """POST /data: which of these blobs must still be uploaded (and do they fit)."""

    blobs: Annotated[list[BlobRef], Field(max_length=1024)]


def check_file_name(name: str) -> str:
    """A pushed file's NAME: relative, without `..`, placed under the task's directory
    (the same rule on client, host and runner); the cleaned name or a SpecError."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or ".." in parts or "\0" in name or len(name) > 4096:
        raise SpecError(
            f"file name {name!r} must be a relative path without '..' (e.g. data/input.csv)"
        )
    return "/".join(parts)


class TaskData(Request):
    """A python task's pushed values (name -> blob) and the names it sends back; any
    task's pushed files (relative name -> blob), placed in its directory before it starts."""

    push: Annotated[dict[str, BlobRef], Field(max_length=1024)] = Field(default_factory=dict)
    pull: Annotated[list[str], Field(max_length=1024)] = Field(default_factory=list)
    files: Annotated[dict[str, BlobRef], Field(max_length=1024)] = Field(
        default_factory=dict,
        description="relative file name -> blob: copied into the task's directory first",
    )

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, BlobRef]) -> dict[str, BlobRef]:
        for name in value:
            check_file_name(name)
        return value


TaskPath = Annotated[str, Field(min_length=1, max_length=4096)]


class FilePut(Request):
    """POST /tasks/{id}/files/put: place an uploaded blob (a tar stream) at `path` in a
    running task's or VPS's filesystem (docs/api.md, "Files in and out of tasks")."""

    path: TaskPath
    digest: Digest


class FileGet(Request):
    """POST /tasks/{id}/files/get: pack the file or directory at `path` into a blob."""

    path: TaskPath


REQUEST_MODELS: tuple[type[Request], ...] = (
    EmptyBody,
    TaskSubmit,
    TaskDecision,
    VpsCreate,
    VpsExec,
    VpsAppStart,
    EnvironmentCreate,
    EnvironmentExec,
    ReservationCreate,
    ReservationRelease,
    UserCreate,
    UserUpdate,
    TokenCreate,
    InvitationCreate,
    InvitationRedeem,
    LoginRequest,
    GroupCreate,
    GroupUpdate,
    DataCheck,
    FilePut,
    FileGet,
)
