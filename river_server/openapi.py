"""The OpenAPI 3.0 document of River's user API, served at /river/api/openapi.json.

Hand-written so that it says what the API promises (shapes, codes, who may call), not what
a generator guesses. tests/integration/test_openapi.py fails when a user route of the
extension has no operation here, and schemathesis fuzzes the API against it.
"""

from __future__ import annotations

import copy
from typing import Any

from river_runner.wire import REQUEST_MODELS, Request
from river_runner.wire import requests as wire
from river_server.openapi_models import request_schemas

API = "/river/api"

# ---- schemas -------------------------------------------------------------------------------

NULLABLE_NUMBER = {"type": "number", "nullable": True}
NULLABLE_STRING = {"type": "string", "nullable": True}
NULLABLE_COUNT = {"type": "integer", "minimum": 0, "maximum": 1000000, "nullable": True}
ID = {"type": "string", "pattern": "^[0-9]{1,19}$", "example": "7312345678901234567"}
ROLE = {"type": "string", "enum": ["viewer", "user", "operator", "admin"]}
TASK_STATE = {
    "type": "string",
    "enum": [
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
    ],
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def model(request: type[Request]) -> dict[str, str]:
    """A request body: the schema generated from its river_runner.wire model."""
    return ref(request.__name__)


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


SCHEMAS: dict[str, Any] = {
    "Error": obj({"message": {"type": "string"}}, ("message",)),
    "ResourceRequest": obj(
        {
            "cores": {"type": "integer"},
            "memory": {"type": "integer"},
            "gpus": {"type": "integer"},
            "gpu_indices": {"type": "array", "items": {"type": "integer"}},
            "target": NULLABLE_STRING,
        }
    ),
    "Task": obj(
        {
            "id": ID,
            "name": {"type": "string"},
            "owner": {"type": "string"},
            "kind": {"type": "string", "enum": ["command", "python", "vps"]},
            "state": TASK_STATE,
            "request": ref("ResourceRequest"),
            "node": NULLABLE_STRING,
            "cpus": {"type": "array", "items": {"type": "integer"}},
            "gpus": {"type": "array", "items": {"type": "integer"}},
            "memory": {"type": "integer", "nullable": True},
            "array": {"type": "object", "nullable": True},
            "overlay_ip": NULLABLE_STRING,
            "exit_code": {"type": "integer", "nullable": True},
            "reason": NULLABLE_STRING,
            "queue_position": {"type": "integer", "nullable": True},
            "wait_reason": NULLABLE_STRING,
            "submitted_at": {"type": "number"},
            "started_at": NULLABLE_NUMBER,
            "finished_at": NULLABLE_NUMBER,
            "spec": {
                "type": "object",
                "description": "command/script/env/workdir/...: only for the owner and operators",
            },
        },
        ("id", "owner", "state", "kind"),
    ),
    "Vps": obj(
        {
            "id": ID,
            "name": {"type": "string"},
            "owner": {"type": "string"},
            "state": {
                "type": "string",
                "description": "the current incarnation's task state, or `stopped`",
            },
            "task_state": TASK_STATE,
            "task_id": ID,
            "hostname": NULLABLE_STRING,
            "node": NULLABLE_STRING,
            "image": NULLABLE_STRING,
            "running_image": NULLABLE_STRING,
            "ssh": {"type": "string", "enum": ["disabled", "none", "upload", "generate"]},
            "public_key": NULLABLE_STRING,
            "private_key": {
                "type": "string",
                "description": "ssh=generate only, in the create answer, once; never stored",
            },
            "snapshots": {"type": "array", "items": {"type": "string"}},
            "snapshot_node": NULLABLE_STRING,
            "ports": {
                "type": "array",
                "items": obj(
                    {
                        "port": {"type": "integer"},
                        "name": {"type": "string"},
                        "path": {
                            "type": "string",
                            "description": "what to open, relative to the server's base URL",
                        },
                        "ready_path": {"type": "string"},
                    },
                    ("port",),
                ),
                "description": "apps started in the VPS (POST /vps/{id}/apps)",
            },
            "ssh_proxy_port": {
                "type": "integer",
                "nullable": True,
                "description": "port of the host's SSH proxy (`ssh -p PORT user+ID@host`); "
                "null when SSH is disabled or the host runs no proxy",
            },
            "created_at": NULLABLE_NUMBER,
            "request": ref("ResourceRequest"),
            "cpus": {"type": "array", "items": {"type": "integer"}},
            "gpus": {"type": "array", "items": {"type": "integer"}},
            "memory": {"type": "integer", "nullable": True},
            "reason": NULLABLE_STRING,
        },
        ("id", "owner", "state", "task_id"),
    ),
    "Snapshot": obj(
        {
            "image": {"type": "string"},
            "number": {"type": "integer"},
            "node": NULLABLE_STRING,
        },
        ("image", "number"),
    ),
    "Node": obj(
        {
            "name": {"type": "string"},
            "url": {"type": "string"},
            "state": {"type": "string", "enum": ["online", "offline"]},
            "backend": {"type": "string"},
            "cores": {"type": "integer"},
            "cpus": {"type": "array", "items": {"type": "integer"}},
            "memory": {"type": "integer"},
            "numa": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            "gpus": {"type": "array", "items": {"type": "object"}},
            "free": {"type": "object"},
            "metrics": {"type": "object"},
            "last_seen": {"type": "number"},
            "registered_at": {"type": "number"},
        },
        ("name", "state"),
    ),
    "LogLine": obj(
        {
            "seq": {"type": "integer"},
            "stream": {"type": "string", "enum": ["stdout", "stderr"]},
            "text": {"type": "string"},
            "ts": {"type": "number"},
            # a chunk of a line longer than 64 KiB: the stream's next line continues it
            "continued": {"type": "boolean"},
        },
        ("seq", "stream", "text"),
    ),
    "Blob": obj({"name": {"type": "string"}, "size": {"type": "integer"}}, ("name", "size")),
    "Environment": obj(
        {
            "name": {"type": "string"},
            "owner": NULLABLE_STRING,
            "image": NULLABLE_STRING,
            "state": NULLABLE_STRING,
            "container": NULLABLE_STRING,
            "created_at": NULLABLE_STRING,
            "exported": {"type": "object", "nullable": True},
        },
        ("name",),
    ),
    "Reservation": obj(
        {
            "id": {"type": "string"},
            "ip": {"type": "string"},
            "node": {"type": "string"},
            "owner": {"type": "string"},
            "state": {"type": "string", "enum": ["reserved", "expired", "in_use", "released"]},
            "task_id": NULLABLE_STRING,
            "created_at": {"type": "number"},
            "expires_at": {"type": "number"},
            "used_at": NULLABLE_NUMBER,
            "token": {"type": "string", "description": "only in the answer that made it"},
        },
        ("id", "ip", "node", "state"),
    ),
    "Quota": obj({"max_cores": NULLABLE_COUNT, "max_gpus": NULLABLE_COUNT}),
    "User": obj(
        {
            "name": {"type": "string"},
            "role": ROLE,
            "has_password": {"type": "boolean"},
            "created_at": {"type": "number"},
            "groups": {"type": "array", "items": {"type": "string"}},
            "quota": ref("Quota"),
        },
        ("name", "role"),
    ),
    "Token": obj(
        {
            "id": {"type": "string"},
            "user": {"type": "string"},
            "label": {"type": "string"},
            "created_at": {"type": "number"},
            "expires_at": NULLABLE_NUMBER,
            "revoked": {"type": "boolean"},
            "active": {"type": "boolean"},
        },
        ("id", "user", "revoked", "active"),
    ),
    "Invitation": obj(
        {
            "id": {"type": "string"},
            "role": ROLE,
            "max_uses": {"type": "integer"},
            "uses": {"type": "integer"},
            "expires_at": NULLABLE_NUMBER,
            "created_by": {"type": "string"},
            "created_at": {"type": "number"},
            "revoked": {"type": "boolean"},
            "active": {"type": "boolean"},
        },
        ("id", "role", "max_uses", "uses", "active"),
    ),
    "Group": obj(
        {
            "name": {"type": "string"},
            "max_cores": NULLABLE_COUNT,
            "max_gpus": NULLABLE_COUNT,
            "members": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "number"},
        },
        ("name", "members"),
    ),
}

USER_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"}

# ---- operations ----------------------------------------------------------------------------

ERRORS = {
    "400": "the request is malformed (the message says what to fix)",
    "401": "no valid credentials (runner routes, login)",
    "403": "not logged in, or the caller's role is not enough",
    "404": "no such thing, or not yours to see",
    "409": "conflicts with the current state",
    "429": "too many failed logins for this name",
    "502": "the node running the task did not answer",
    "503": "a service this route needs (e.g. the host's Docker daemon) is unavailable",
    "504": "the operation took too long",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def op(
    summary: str,
    ok: dict[str, Any] | None,
    *,
    status: str = "200",
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("403",),
    public: bool = False,
    content: str = "application/json",
    role: str | None = None,
) -> dict[str, Any]:
    description = f"Needs the {role} role." if role else ""
    responses: dict[str, Any] = {
        status: {"description": "OK", **(_json(ok) if ok is not None else {})}
    }
    if content != "application/json" and ok is None:
        responses[status] = {
            "description": "OK",
            "content": {content: {"schema": {"type": "string"}}},
        }
    for code in errors:
        responses[code] = {"description": ERRORS[code], **_json(ref("Error"))}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if params:
        operation["parameters"] = params
    if public:
        operation["security"] = []
    return operation


def path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


TASK_ID = path_param("id", ID)
BLOB_NAME = path_param("name", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"})
ENV_NAME = path_param("name", {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"})
USER = path_param("name", USER_NAME)
GROUP = path_param("name", USER_NAME)
MEMBER = path_param("user", USER_NAME)
NUMBER_ID = path_param("id", {"type": "string", "pattern": "^[0-9]{1,12}$"})
FLAG = {"type": "string", "enum": ["0", "1"]}


def _task_action(action: str, text: str) -> dict[str, Any]:
    return {
        "post": op(
            text,
            obj({"task": ref("Task")}),
            params=[TASK_ID],
            errors=("400", "403", "404", "409", "502"),
        )
    }


def _decision(decision: str) -> dict[str, Any]:
    return {
        "post": op(
            f"{decision.capitalize()} a task waiting in pending_approval",
            obj({"task": ref("Task")}),
            params=[TASK_ID],
            body=model(wire.TaskDecision),
            errors=("400", "403", "404", "409"),
            role="operator",
        )
    }


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/nodes": {
            "get": op("List nodes", obj({"nodes": {"type": "array", "items": ref("Node")}}))
        },
        "/tasks": {
            "get": op(
                "List tasks (own unless all=1), newest first",
                obj({"tasks": {"type": "array", "items": ref("Task")}}),
                params=[
                    query("all", FLAG, "1: everyone's tasks"),
                    query("state", {"type": "string"}, "comma-separated states"),
                ],
            ),
            "post": op(
                "Submit a task",
                obj({"task": ref("Task")}),
                status="201",
                body=model(wire.TaskSubmit),
                errors=("400", "403"),
                role="user",
            ),
        },
        "/tasks/{id}": {
            "get": op(
                "One task (with its spec for the owner and operators)",
                obj({"task": ref("Task")}),
                params=[TASK_ID],
                errors=("400", "403", "404"),
            )
        },
        "/tasks/{id}/kill": _task_action("kill", "Kill a task (owner or operator)"),
        "/tasks/{id}/pause": _task_action("pause", "Pause a running task (owner or operator)"),
        "/tasks/{id}/resume": _task_action("resume", "Resume a paused task (owner or operator)"),
        "/tasks/{id}/approve": _decision("approve"),
        "/tasks/{id}/reject": _decision("reject"),
        "/tasks/{id}/logs": {
            "get": op(
                "A task's output lines after `since` (owner or operator)",
                obj(
                    {
                        "lines": {"type": "array", "items": ref("LogLine")},
                        "next": {"type": "integer"},
                    }
                ),
                params=[TASK_ID, query("since", {"type": "integer", "minimum": 0})],
                errors=("400", "403", "404"),
            )
        },
        "/tasks/{id}/blobs": {
            "get": op(
                "A task's blobs (owner or operator)",
                obj({"blobs": {"type": "array", "items": ref("Blob")}}),
                params=[TASK_ID],
                errors=("400", "403", "404"),
            )
        },
        "/tasks/{id}/blobs/{name}": {
            "get": op(
                "Read a blob (owner or operator)",
                None,
                content="application/octet-stream",
                params=[TASK_ID, BLOB_NAME],
                errors=("400", "403", "404", "409"),
            ),
            "put": {
                **op(
                    "Write a blob (owner or operator)",
                    obj({"blob": ref("Blob")}),
                    status="201",
                    params=[TASK_ID, BLOB_NAME],
                    errors=("400", "403", "404", "409"),
                    role="user",
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
            },
        },
        "/vps": {
            "get": op(
                "List my VPSes (everyone's with all=1, operators), newest first",
                obj({"vps": {"type": "array", "items": ref("Vps")}}),
                params=[query("all", FLAG, "1: everyone's VPSes (operators)")],
            ),
            "post": op(
                "Create a VPS: a long-lived container (docker backend)",
                obj({"vps": ref("Vps")}),
                status="201",
                body=model(wire.VpsCreate),
                errors=("400", "403", "503"),
                role="user",
            ),
        },
        "/vps/{id}": {
            "get": op(
                "One VPS (owner or operator)",
                obj({"vps": ref("Vps")}),
                params=[TASK_ID],
                errors=("400", "403", "404"),
            ),
            "delete": op(
                "Delete a VPS, its container and its snapshots (owner or operator)",
                obj({"deleted": ID}),
                params=[TASK_ID],
                errors=("400", "403", "404", "409", "502"),
            ),
        },
        "/vps/{id}/terminal": {
            "post": op(
                "Open a JupyterLab terminal with a shell in a running VPS (owner or operator); "
                "open it with the terminal:open command and the name",
                obj({"name": {"type": "string"}}, ("name",)),
                status="201",
                params=[TASK_ID],
                errors=("400", "403", "404", "409", "502", "503"),
            )
        },
        "/vps/{id}/exec": {
            "post": op(
                "Run a command in a running VPS, no TTY (owner or operator): detached, or "
                "to its end with exit code and output",
                obj(
                    {
                        "exit_code": {"type": "integer", "nullable": True},
                        "output": {"type": "string"},
                        "detached": {"type": "boolean"},
                    }
                ),
                params=[TASK_ID],
                body=model(wire.VpsExec),
                errors=("400", "403", "404", "409", "502"),
            )
        },
        "/vps/{id}/apps": {
            "post": op(
                "Start Jupyter or TensorBoard in a running VPS (owner or operator); it is "
                "recorded in the VPS's ports with the path to open (poll ready_path for 200)",
                obj({"vps": ref("Vps")}),
                status="201",
                params=[TASK_ID],
                body=model(wire.VpsAppStart),
                errors=("400", "403", "404", "409", "502"),
            )
        },
        "/vps/{id}/snapshots": {
            "get": op(
                "A VPS's snapshots, oldest first (owner or operator)",
                obj({"snapshots": {"type": "array", "items": ref("Snapshot")}}),
                params=[TASK_ID],
                errors=("400", "403", "404"),
            )
        },
        "/vps/{id}/snapshots/{number}": {
            "delete": op(
                "Remove one snapshot from its node (owner or operator)",
                obj({"snapshots": {"type": "array", "items": ref("Snapshot")}}),
                params=[
                    TASK_ID,
                    {
                        "name": "number",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                errors=("400", "403", "404", "409", "502"),
            )
        },
        **{
            f"/vps/{{id}}/{action}": {
                "post": op(
                    text,
                    obj({"vps": ref("Vps")}),
                    params=[TASK_ID],
                    errors=("400", "403", "404", "409", "502"),
                )
            }
            for action, text in (
                ("stop", "Stop a VPS: snapshot (docker commit), then remove the container"),
                ("restart", "Start a stopped VPS again from its newest snapshot"),
                ("pause", "Pause a running VPS"),
                ("resume", "Resume a paused VPS"),
                ("snapshot", "Snapshot a running VPS (newest vps_snapshots_keep kept)"),
            )
        },
        "/events": {
            "get": {
                **op(
                    "Server-sent events: task states, log lines, node changes",
                    None,
                    content="text/event-stream",
                    params=[
                        {
                            "name": "task",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "array", "items": ID},
                            "style": "form",
                            "explode": True,
                        },
                        query("since", {"type": "integer", "minimum": 0}),
                        query("tasks", {"type": "string", "enum": ["all"]}),
                    ],
                    errors=("400", "403", "404"),
                ),
                "x-stream": True,
            }
        },
        "/environments": {
            "get": op(
                "List container environments",
                obj({"environments": {"type": "array", "items": ref("Environment")}}),
                errors=("403", "503"),
            ),
            "post": op(
                "Create an environment (a long-lived container to prepare)",
                obj({"environment": ref("Environment")}),
                status="201",
                body=model(wire.EnvironmentCreate),
                errors=("400", "403", "409", "503", "504"),
                role="user",
            ),
        },
        "/environments/{name}": {
            "get": op(
                "One environment",
                obj({"environment": ref("Environment")}),
                params=[ENV_NAME],
                errors=("400", "403", "404", "503"),
            ),
            "delete": op(
                "Remove an environment (owner or operator)",
                obj({"name": {"type": "string"}, "removed": {"type": "array"}}),
                params=[ENV_NAME, query("tarball", FLAG)],
                errors=("400", "403", "404", "503"),
                role="user",
            ),
        },
        "/environments/{name}/export": {
            "post": op(
                "Export an environment to shared storage for tasks",
                obj({"environment": ref("Environment")}),
                params=[ENV_NAME],
                errors=("400", "403", "404", "409", "429", "503", "504"),
                role="user",
            )
        },
        "/environments/{name}/exec": {
            "post": op(
                "Run a command in an environment",
                {"type": "object"},
                params=[ENV_NAME],
                body=model(wire.EnvironmentExec),
                errors=("400", "403", "404", "409", "429", "503", "504"),
                role="user",
            )
        },
        "/overlay": {
            "get": op(
                "The overlay network: layout and each runner's allocation",
                obj(
                    {
                        "enabled": {"type": "boolean"},
                        "subnet": {"type": "string"},
                        "allocations": {"type": "array", "items": {"type": "object"}},
                    },
                    ("enabled", "allocations"),
                ),
            )
        },
        "/overlay/allocations/{node}": {
            "delete": op(
                "Release an offline runner's overlay allocation (force=1: even if online)",
                obj({"released": {"type": "object"}}),
                params=[path_param("node"), query("force", FLAG)],
                errors=("400", "403", "404", "409"),
                role="operator",
            )
        },
        "/overlay/reservations": {
            "get": op(
                "Your IP reservations (all=1: everyone's, operators)",
                obj({"reservations": {"type": "array", "items": ref("Reservation")}}),
                params=[query("all", FLAG)],
            ),
            "post": op(
                "Reserve an overlay IP for a task not yet launched (token shown once)",
                obj({"reservation": ref("Reservation")}),
                status="201",
                body=model(wire.ReservationCreate),
                errors=("400", "403", "404", "409"),
                role="user",
            ),
        },
        "/overlay/reservations/release": {
            "post": op(
                "Release a reservation by its token",
                obj({"reservation": ref("Reservation")}),
                body=model(wire.ReservationRelease),
                errors=("400", "403", "404", "409"),
            )
        },
        "/overlay/reservations/{id}": {
            "delete": op(
                "Release a reservation by ID (owner or operator)",
                obj({"reservation": ref("Reservation")}),
                params=[NUMBER_ID],
                errors=("400", "403", "404", "409"),
            )
        },
        "/me": {"get": op("Who the caller is", obj({"user": ref("User")}))},
        "/users": {
            "get": op(
                "List users",
                obj({"users": {"type": "array", "items": ref("User")}}),
                role="operator",
            ),
            "post": op(
                "Create a user",
                obj({"user": ref("User")}),
                status="201",
                body=model(wire.UserCreate),
                errors=("400", "403", "409"),
                role="admin",
            ),
        },
        "/users/{name}": {
            "get": op(
                "One user (yourself, or any as an operator)",
                obj({"user": ref("User")}),
                params=[USER],
                errors=("403", "404"),
            ),
            "patch": op(
                "Change a user: role and quota (admins); password (yourself with "
                "current_password, or an admin)",
                obj({"user": ref("User")}),
                params=[USER],
                body=model(wire.UserUpdate),
                errors=("400", "403", "404", "409"),
            ),
            "delete": op(
                "Delete a user and their tokens",
                obj({"deleted": {"type": "string"}}),
                params=[USER],
                errors=("403", "404", "409"),
                role="admin",
            ),
        },
        "/tokens": {
            "get": op(
                "Your API tokens (admins: ?user=NAME or ?all=1)",
                obj({"tokens": {"type": "array", "items": ref("Token")}}),
                params=[query("user", USER_NAME), query("all", FLAG)],
                errors=("403", "404"),
            ),
            "post": op(
                "Make an API token; the token is in this answer only",
                obj({"token": {"type": "string"}, "info": ref("Token")}, ("token", "info")),
                status="201",
                body=model(wire.TokenCreate),
                errors=("400", "403", "404"),
            ),
        },
        "/tokens/{id}": {
            "delete": op(
                "Revoke a token (yours; admins: any); it fails at once",
                obj({"token": ref("Token")}),
                params=[NUMBER_ID],
                errors=("400", "403", "404"),
            )
        },
        "/invitations": {
            "get": op(
                "List invitations",
                obj({"invitations": {"type": "array", "items": ref("Invitation")}}),
                role="operator",
            ),
            "post": op(
                "Invite: a code (shown once) that creates an account with `role`; operators "
                "may invite viewers and users",
                obj({"code": {"type": "string"}, "invitation": ref("Invitation")}),
                status="201",
                body=model(wire.InvitationCreate),
                errors=("400", "403"),
                role="operator",
            ),
        },
        "/invitations/{id}": {
            "delete": op(
                "Revoke an invitation (operators: their own)",
                obj({"invitation": ref("Invitation")}),
                params=[NUMBER_ID],
                errors=("400", "403", "404"),
                role="operator",
            )
        },
        "/invitations/redeem": {
            "post": op(
                "Create an account with an invitation code",
                obj({"user": ref("User")}),
                status="201",
                body=model(wire.InvitationRedeem),
                errors=("400", "403", "409"),
                public=True,
            )
        },
        "/login": {
            "post": op(
                "Exchange a user name and password for a new API token",
                obj(
                    {"token": {"type": "string"}, "info": ref("Token"), "user": ref("User")},
                    ("token",),
                ),
                status="201",
                body=model(wire.LoginRequest),
                errors=("400", "401", "429"),
                public=True,
            )
        },
        "/groups": {
            "get": op(
                "List groups and their quotas",
                obj({"groups": {"type": "array", "items": ref("Group")}}),
                role="operator",
            ),
            "post": op(
                "Create a group (quota shared by its members)",
                obj({"group": ref("Group")}),
                status="201",
                body=model(wire.GroupCreate),
                errors=("400", "403", "404", "409"),
                role="admin",
            ),
        },
        "/groups/{name}": {
            "get": op(
                "One group",
                obj({"group": ref("Group")}),
                params=[GROUP],
                errors=("403", "404"),
                role="operator",
            ),
            "patch": op(
                "Change a group's quota",
                obj({"group": ref("Group")}),
                params=[GROUP],
                body=model(wire.GroupUpdate),
                errors=("400", "403", "404"),
                role="admin",
            ),
            "delete": op(
                "Delete a group",
                obj({"deleted": {"type": "string"}}),
                params=[GROUP],
                errors=("403", "404"),
                role="admin",
            ),
        },
        "/groups/{name}/members/{user}": {
            "put": op(
                "Add a user to a group",
                obj({"group": ref("Group")}),
                params=[GROUP, MEMBER],
                errors=("403", "404"),
                role="admin",
            ),
            "delete": op(
                "Remove a user from a group",
                obj({"group": ref("Group")}),
                params=[GROUP, MEMBER],
                errors=("403", "404"),
                role="admin",
            ),
        },
        "/openapi.json": {"get": op("This document", {"type": "object"}, errors=(), public=True)},
    }
    return {f"{API}{path}": item for path, item in paths.items()}


def openapi_document(base_url: str = "/") -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "River",
            "version": "1",
            "description": "River's user API on the host's Jupyter server (see docs/api.md). "
            "Runner routes (/river/api/runner/*) take runner credentials only and are not "
            "part of this document.",
        },
        "servers": [{"url": base_url.rstrip("/") or "/"}],
        "paths": copy.deepcopy(_paths()),
        "components": {
            "schemas": {**copy.deepcopy(SCHEMAS), **request_schemas(REQUEST_MODELS)},
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`token <TOKEN>`: a River API token or the server token",
                }
            },
        },
        "security": [{"token": []}],
    }
