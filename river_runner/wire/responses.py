"""Response shapes of the host's user API: what the serializers write, field for field.

These models are the one description of River's answers (issue #14): the OpenAPI document
generates its component schemas from them (river_server/openapi.py), and
tests/integration/test_response_models.py validates every GET answer of a live cluster
against them with unknown fields forbidden, so a field the host starts sending without
adding it here fails a test instead of drifting from the document, the docs and the lab
panel. Fields that only some answers carry (a task's `spec`, a new VPS's `private_key`, a
new reservation's `token`) are optional; every other field is always present.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from river_runner.wire.fields import Role

TaskState = Literal[
    "pending_approval",
    "queued",
    "assigning",
    "running",
    "paused",
    "completed",
    "failed",
    "killed",
    "killed_oom",
    "lost",
    "timeout",
]
SshMode = Literal["disabled", "none", "upload", "generate"]
Id = Annotated[str, Field(pattern=r"^[0-9]{1,19}$")]


def _not_null(schema: dict[str, Any]) -> None:
    """The published schema of a field left out of some answers: its type, never null."""
    options = schema.pop("anyOf", None)
    if options is not None:
        schema.update(next(o for o in options if o != {"type": "null"}))
    schema.pop("default", None)


def sometimes(description: str) -> Any:
    """A field only some answers carry: absent otherwise (None in Python), never null."""
    return Field(default=None, description=description, json_schema_extra=_not_null)


class Response(BaseModel):
    """Base of every answer shape: a field the model does not know is an error."""

    model_config = ConfigDict(extra="forbid")


class Error(Response):
    """Every 4xx/5xx answer: one sentence saying what went wrong and what to do."""

    message: str
    reason: str | None = Field(
        default=None, description="the HTTP reason phrase, when the server set one"
    )


# ---- tasks -----------------------------------------------------------------------------


class ResourceRequest(Response):
    """What a task asked for (river_runner.spec.ResourceRequest.to_json)."""

    cores: int
    memory: int | None
    gpus: int
    gpu_indices: list[int]
    target: str | None


class TaskArray(Response):
    """A member's place in a task array (river_server/arrays.py)."""

    id: str
    index: int
    size: int | None = None
    limit: int | None = None


class TaskJobLauncher(Response):
    """How a job's members start their script (river_server/jobs.py launcher_args)."""

    name: Literal["torchrun"]
    nproc_per_node: int


class TaskJob(Response):
    """A member's place in a multi-node job (river_server/jobs.py)."""

    id: Id
    rank: int
    size: int
    network: Literal["overlay", "host"]
    master_addr: str | None = sometimes("rank 0's address, once the job is placed")
    master_port: int | None = sometimes("the rendezvous port, once the job is placed")
    launcher: TaskJobLauncher | None = sometimes("a job run through torchrun (`launcher`)")


class Task(Response):
    """river_server/serialize.py task_json (+ `spec` for the owner and operators)."""

    id: Id
    name: str
    owner: str
    kind: Literal["command", "python", "vps"]
    state: TaskState
    request: ResourceRequest
    node: str | None
    cpus: list[int]
    gpus: list[int]
    memory: int | None
    array: TaskArray | None
    job: TaskJob | None = Field(
        description="a member of a multi-node job (nodes=N); null otherwise"
    )
    overlay_ip: str | None
    exit_code: int | None
    reason: str | None
    queue_position: int | None
    wait_reason: str | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    time_limit: float | None = Field(
        description="seconds it may run (from started_at); at the limit it ends `timeout`"
    )
    priority: int = Field(description="queue priority: higher goes first (default 0)")
    preemptible: bool = Field(
        description="a higher-priority or under-share task may displace it (it is requeued)"
    )
    requeues: int = Field(description="how many times it was displaced and requeued")
    spec: dict[str, Any] | None = sometimes(
        "command/script/env/workdir/...: only for the owner and operators"
    )


class LogLine(Response):
    """One line of a task's output (river_server/logstore.py)."""

    seq: int
    stream: Literal["stdout", "stderr", "river"] = Field(
        description="`river`: a note of the host (where a pulled result went), not output"
    )
    text: str
    ts: float
    continued: bool | None = sometimes(
        "true on a chunk of a line longer than 64 KiB: the stream's next line continues it"
    )
    note: Literal["truncated"] | None = sometimes(
        "`truncated` on the line that says the log reached c.RiverHost.log_max_bytes"
    )


class Blob(Response):
    name: str
    size: int


class TaskTransition(Response):
    """One recorded state change of a task (GET /tasks/{id}/transitions): the task view's
    timeline, with the wait, requeue and end reasons the host wrote at the time."""

    state: TaskState
    at: float = Field(description="when the task entered the state (unix seconds)")
    detail: str | None = Field(description="why: a wait, requeue or end reason; null if none")


class DataBlob(Response):
    """A data-plane blob (pushed value or pulled result), named by the BLAKE3 of its bytes."""

    digest: str
    size: int


# ---- nodes -----------------------------------------------------------------------------


class NodeFree(Response):
    """What the scheduler has left on a node (dispatcher.free_resources)."""

    cores: int
    memory: int
    gpus: list[int]


class NodeVm(Response):
    """Whether a node runs VM VPSes, as its runner's probe found (river_runner/vm_probe.py)."""

    ok: bool
    reason: str
    accel: str = Field(description="kvm, tcg (emulation, only when asked for) or off")


class Node(Response):
    """river_server/serialize.py node_json; `gpus` and `metrics` are what the runner
    reports (per-GPU util/memory/temperature, CPU and memory use), kept open."""

    name: str
    url: str
    state: Literal["online", "offline"]
    backend: str
    cores: int
    cpus: list[int]
    memory: int
    numa: list[list[int]]
    gpus: list[dict[str, Any]]
    free: NodeFree
    metrics: dict[str, Any]
    last_seen: float
    registered_at: float
    vm: NodeVm = Field(description="VM capability of the connected runner (offline: not ok)")
    version: str | None = Field(
        default=None,
        description="the connected runner's River version (null while offline); "
        "`registered_at` is also when its credential was issued",
    )


class ShareRow(Response):
    """One user's line of `GET /share` (river_server/fairshare.py `table`)."""

    user: str
    core_seconds: float = Field(description="decayed core-seconds")
    gpu_seconds: float = Field(description="decayed GPU-seconds")
    charge: float = Field(description="core_seconds + gpu_weight x gpu_seconds")
    share: float = Field(description="this user's fraction of every user's charge (0..1)")
    priority: int = Field(
        description="1 goes first: the queue is ordered by charge, lightest first"
    )


class Lease(Response):
    """A notebook kernel's lease (POST /leases): tasks submitted with it are killed when it
    lapses unless renewed (river_server/leases.py)."""

    id: Id
    owner: str
    expires_at: float = Field(description="when it lapses unless renewed (unix seconds)")
    seconds: float = Field(description="how far each renewal pushes the expiry")


class Share(Response):
    """GET /share: fair share's settings and every user with recorded usage."""

    enabled: bool = Field(description="whether fair share orders the queue (else FIFO)")
    half_life: float = Field(description="seconds over which usage halves")
    gpu_weight: float = Field(description="core-seconds one GPU-second counts as")
    at: float = Field(description="when the figures were decayed to (unix seconds)")
    users: list[ShareRow]


class GpuPoint(Response):
    """One GPU at one history point (null: the runner did not report the figure)."""

    util: float | None = Field(description="utilisation, percent")
    memory: float | None = Field(description="memory in use, percent")


class NodePoint(Response):
    """A node's metrics averaged over one step of `GET /nodes/{name}/history`."""

    at: float = Field(description="start of the step (unix seconds)")
    cpu: float | None = Field(description="CPU use, percent")
    memory: float | None = Field(description="memory in use, percent")
    gpus: list[GpuPoint]
    samples: int = Field(description="how many recorded samples this point averages")


class NodeHistory(Response):
    """GET /nodes/{name}/history (river_server/history.py)."""

    node: str
    since: float
    step: float = Field(description="seconds per point (widened to at most 2000 points)")
    points: list[NodePoint]


class UsagePoint(Response):
    """Core- and GPU-seconds run in one bucket (undecayed, unlike fair share's)."""

    at: float = Field(description="start of the bucket (unix seconds)")
    core_seconds: float
    gpu_seconds: float


class UserUsage(Response):
    user: str
    points: list[UsagePoint]


class UsageHistory(Response):
    """GET /usage/history: the cluster's total and per-user series (own only below
    operator)."""

    since: float
    step: float = Field(description="seconds per bucket (whole hours)")
    total: list[UsagePoint]
    users: list[UserUsage]


# ---- VPS -------------------------------------------------------------------------------


class VpsPort(Response):
    """An app started in a VPS (POST /vps/{id}/apps)."""

    port: int
    name: str
    path: str = Field(description="what to open, relative to the server's base URL")
    ready_path: str


class Vps(Response):
    """river_server/vps.py VpsService.to_json."""

    id: Id
    name: str
    owner: str
    hostname: str | None
    state: TaskState | Literal["stopped"] = Field(
        description="the current incarnation's task state, or `stopped`"
    )
    task_state: TaskState
    task_id: Id
    node: str | None
    image: str | None
    running_image: str | None
    ssh: SshMode
    public_key: str | None
    snapshots: list[str]
    snapshot_node: str | None
    vm: bool = Field(description="a QEMU virtual machine (else a container)")
    disk: int | None = Field(description="a VM's disk size in bytes; null for a container")
    overlay_ip: str | None = Field(
        default=None,
        description="its address on the overlay (reserved with ip_token; a VM's second NIC); "
        "null without a reservation",
    )
    ports: list[VpsPort] = Field(description="apps started in the VPS (POST /vps/{id}/apps)")
    ssh_proxy_port: int | None = Field(
        description="port of the host's SSH proxy (`ssh -p PORT user+ID@host`); null when "
        "SSH is disabled or the host runs no proxy"
    )
    created_at: float | None
    request: ResourceRequest
    cpus: list[int]
    gpus: list[int]
    memory: int | None
    reason: str | None
    no_cull: bool = Field(
        default=False, description="never stopped for being idle (set by an operator)"
    )
    preemptible: bool = Field(
        default=False,
        description="urgent work may displace it: snapshotted, queued, then restarted from "
        "that snapshot as the same VPS (docs/scheduling.md)",
    )
    private_key: str | None = sometimes(
        "ssh=generate only, in the create answer, once; never stored"
    )


class Snapshot(Response):
    image: str
    number: int
    node: str | None


class ExecResult(Response):
    """POST /vps/{id}/exec: detached, or the command's end."""

    exit_code: int | None = Field(default=None, description="absent when detached")
    output: str | None = sometimes("absent when detached")
    detached: bool | None = sometimes("true when detached; else absent")


# ---- environments ----------------------------------------------------------------------


class EnvironmentExport(Response):
    """An environment's tarball on shared storage, as the database recorded it."""

    path: str
    size: int
    sha256: str
    exported_at: float
    exported_by: str
    owner: str
    image: str | None


class Environment(Response):
    name: str
    owner: str | None
    image: str | None
    state: str | None
    container: str | None
    created_at: str | None
    exported: EnvironmentExport | None


class EnvironmentExecResult(Response):
    name: str
    exit_code: int | None
    output: str
    truncated: bool
    seconds: float


# ---- overlay ---------------------------------------------------------------------------


class OverlayAllocation(Response):
    """One runner's share of the overlay (river_server/overlay.py allocation_json)."""

    node: str
    index: int
    vxlan_id: int
    subnet: str
    host_ip: str
    runner_ip: str
    workload_range: list[str]
    underlay_ip: str | None
    online: bool
    host_links: str
    direct: bool = Field(
        default=False,
        description="whether this runner gets direct paths to its peers (no hub hairpin)",
    )
    allocated_at: float | None
    registered_at: float | None


class Overlay(Response):
    """GET /overlay: the layout and each runner's allocation."""

    enabled: bool
    subnet: str
    network: str
    max_runners: int
    host_underlay_ip: str | None
    mtu: int
    vxlan_base: int
    problem: str | None
    allocations: list[OverlayAllocation]


class Reservation(Response):
    id: str
    ip: str
    node: str
    owner: str
    state: Literal["reserved", "expired", "in_use", "released"]
    task_id: str | None
    created_at: float
    expires_at: float
    used_at: float | None
    token: str | None = sometimes("only in the answer that made it")


# ---- accounts --------------------------------------------------------------------------

Count = Annotated[int | None, Field(ge=0, le=1_000_000)]


class Quota(Response):
    max_cores: Count
    max_gpus: Count


class User(Response):
    name: str
    role: Role
    has_password: bool
    created_at: float
    groups: list[str]
    quota: Quota


class Token(Response):
    id: str
    user: str
    label: str
    created_at: float
    expires_at: float | None
    revoked: bool
    active: bool


class Invitation(Response):
    id: str
    role: Role
    max_uses: int
    uses: int
    expires_at: float | None
    created_by: str
    created_at: float
    revoked: bool
    active: bool


class Group(Response):
    name: str
    max_cores: Count
    max_gpus: Count
    members: list[str]
    created_at: float


RESPONSE_MODELS: tuple[type[Response], ...] = (
    Error,
    ResourceRequest,
    Task,
    LogLine,
    Blob,
    TaskTransition,
    DataBlob,
    Node,
    ShareRow,
    Share,
    GpuPoint,
    NodePoint,
    NodeHistory,
    UsagePoint,
    UserUsage,
    UsageHistory,
    Lease,
    Vps,
    Snapshot,
    ExecResult,
    Environment,
    EnvironmentExecResult,
    Overlay,
    Reservation,
    User,
    Token,
    Invitation,
    Group,
)
