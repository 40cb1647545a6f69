"""The OpenAPI 3.0 document of River's user API, served at /river/api/openapi.json.

The shapes are generated from river_runner.wire's models (request bodies from
requests.py, answers from responses.py), so the document, the host's validation and the
answers' test (tests/integration/test_response_models.py) share one description; what is
written here is the route table: which shape each route takes and answers, its codes and
who may call it. tests/integration/test_openapi.py fails when a user route of the
extension has no operation here, and schemathesis fuzzes the API against it.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from river_runner.wire import REQUEST_MODELS, RESPONSE_MODELS
from river_runner.wire import queries as qs
from river_runner.wire import requests as wire
from river_runner.wire import responses as out
from river_server.openapi_models import query_parameters, request_schemas, response_schemas

API = "/river/api"

# ---- schemas -------------------------------------------------------------------------------

ID = {"type": "string", "pattern": "^[0-9]{1,19}$", "example": "7312345678901234567"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def model(shape: type[BaseModel]) -> dict[str, str]:
    """A request body or an answer: the schema generated from its river_runner.wire model
    (components/schemas holds every model of REQUEST_MODELS and RESPONSE_MODELS)."""
    return ref(shape.__name__)


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict:
    """An answer's envelope (`{"task": Task}`, `{"tasks": [...], "next": ...}`)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def many(shape: type[BaseModel]) -> dict[str, Any]:
    return {"type": "array", "items": model(shape)}


NEXT = {
    "type": "string",
    "nullable": True,
    "description": "cursor of the following page (pass it as `before`); null on the last",
}


def page(key: str, shape: type[BaseModel]) -> dict[str, Any]:
    """A list route's answer (river_server/paging.py): one page of items and `next`."""
    return obj({key: many(shape), "next": NEXT}, (key, "next"))


USER_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"}

# ---- operations ----------------------------------------------------------------------------

ERRORS = {
    "400": "the request is malformed (the message says what to fix)",
    "401": "no valid credentials (runner routes, login)",
    "403": "not logged in, or the caller's role is not enough",
    "404": "no such thing, or not yours to see",
    "409": "conflicts with the current state",
    "411": "the upload has no Content-Length (its size is checked before the body)",
    "413": "over a size bound; the message names the setting",
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
    query: type[qs.Query] | None = None,
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
        responses[code] = {"description": ERRORS[code], **_json(model(out.Error))}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    # Query parameters come from the route's river_runner.wire.queries model, the one
    # its handler checks (tests/integration/test_query_params.py holds the two together).
    params = [*(params or []), *(query_parameters(query) if query else [])]
    if params:
        operation["parameters"] = params
    if public:
        operation["security"] = []
    return operation


def path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


TASK_ID = path_param("id", ID)
BLOB_NAME = path_param("name", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"})
ENV_NAME = path_param("name", {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"})
USER = path_param("name", USER_NAME)
GROUP = path_param("name", USER_NAME)
MEMBER = path_param("user", USER_NAME)
NODE_NAME = path_param("name", {"type": "string", "minLength": 1, "maxLength": 64})
DIGEST = path_param("digest", {"type": "string", "pattern": "^[0-9a-f]{64}$"})
NUMBER_ID = path_param("id", {"type": "string", "pattern": "^[0-9]{1,12}$"})


def _task_action(action: str, text: str) -> dict[str, Any]:
    return {
        "post": op(
            text,
            obj({"task": model(out.Task)}),
            params=[TASK_ID],
            errors=("400", "403", "404", "409", "502"),
        )
    }


def _lease_action(text: str) -> dict[str, Any]:
    return {
        "post": op(
            text,
            obj({"lease": model(out.Lease)}, ("lease",)),
            params=[TASK_ID],
            errors=("400", "403", "404", "409"),
            role="user",
        )
    }


def _decision(decision: str) -> dict[str, Any]:
    return {
        "post": op(
            f"{decision.capitalize()} a task waiting in pending_approval",
            obj({"task": model(out.Task)}),
            params=[TASK_ID],
            body=model(wire.TaskDecision),
            errors=("400", "403", "404", "409"),
            role="operator",
        )
    }


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/nodes": {"get": op("List nodes", obj({"nodes": many(out.Node)}))},
        "/share": {
            "get": op(
                "Fair share: each user's decayed usage, share and queue priority",
                obj({"share": model(out.Share)}, ("share",)),
            )
        },
        "/nodes/{name}/history": {
            "get": op(
                "A node's metrics history (CPU, memory, each GPU), averaged per step",
                obj({"history": model(out.NodeHistory)}, ("history",)),
                params=[NODE_NAME],
                query=qs.NodeHistoryQuery,
                errors=("400", "403", "404"),
            )
        },
        "/usage/history": {
            "get": op(
                "Core- and GPU-seconds over time: the cluster's total and per user (your "
                "own below operator)",
                obj({"usage": model(out.UsageHistory)}, ("usage",)),
                query=qs.UsageHistoryQuery,
                errors=("400", "403"),
            )
        },
        "/leases": {
            "post": op(
                "Make a kernel lease for kernel-bound tasks (`lease` on POST /tasks); renew "
                "it within `seconds` or its tasks are killed",
                obj({"lease": model(out.Lease)}, ("lease",)),
                status="201",
                errors=("400", "403"),
                role="user",
            )
        },
        "/leases/{id}/renew": _lease_action("Renew a kernel lease (its owner)"),
        "/leases/{id}/release": _lease_action(
            "Release a kernel lease now: its bound tasks are killed (a clean client close)"
        ),
        "/tasks": {
            "get": op(
                "List tasks (own unless all=1), newest first",
                page("tasks", out.Task),
                query=qs.TaskList,
                errors=("400", "403"),
            ),
            "post": op(
                "Submit a task",
                obj({"task": model(out.Task)}),
                status="201",
                body=model(wire.TaskSubmit),
                errors=("400", "403"),
                role="user",
            ),
        },
        "/tasks/{id}": {
            "get": op(
                "One task (with its spec for the owner and operators)",
                obj({"task": model(out.Task)}),
                params=[TASK_ID],
                errors=("400", "403", "404"),
            )
        },
        "/tasks/{id}/kill": _task_action("kill", "Kill a task (owner or operator)"),
        "/tasks/{id}/pause": _task_action("pause", "Pause a running task (owner or operator)"),
        "/tasks/{id}/resume": _task_action("resume", "Resume a paused task (owner or operator)"),
        "/tasks/{id}/approve": _decision("approve"),
        "/tasks/{id}/reject": _decision("reject"),
        "/tasks/{id}/attach": {
            "get": op(
                "WebSocket (`river attach`): a shell with a TTY in the caller's running "
                "container task. Binary frames carry the terminal's bytes both ways; a text "
                'frame {"resize": [rows, cols]} resizes it. Owner only (operators: 403); a '
                "plain GET is 400; a task without terminals (process backend) is 409",
                None,
                status="101",
                params=[TASK_ID],
                errors=("400", "403", "404", "409", "429", "502", "503"),
            )
        },
        "/tasks/{id}/logs": {
            "get": op(
                "A task's output lines after `since` (owner or operator)",
                obj(
                    {
                        "lines": many(out.LogLine),
                        "next": {"type": "integer"},
                    }
                ),
                params=[TASK_ID],
                query=qs.LogsQuery,
                errors=("400", "403", "404"),
            )
        },
        "/tasks/{id}/transitions": {
            "get": op(
                "A task's recorded state changes, oldest first, with their wait, requeue "
                "and end reasons (owner or operator; the task view's timeline)",
                obj({"transitions": many(out.TaskTransition)}, ("transitions",)),
                params=[TASK_ID],
                errors=("400", "403", "404"),
            )
        },
        "/tasks/{id}/blobs": {
            "get": op(
                "A task's blobs (owner or operator)",
                obj({"blobs": many(out.Blob)}),
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
                    obj({"blob": model(out.Blob)}),
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
        "/tasks/{id}/pulled": {
            "get": op(
                "A python task's pulled values as its runner sent them (a River frame: "
                "pickle protocol 5 with out-of-band buffers); 404 until there are any",
                None,
                content="application/octet-stream",
                params=[TASK_ID],
                errors=("400", "404"),
            )
        },
        "/tasks/{id}/files/put": {
            "post": op(
                "Place an uploaded tar blob at path in your running task or VPS (the id may "
                "be a VPS's); a process task's path stays inside its directory",
                obj({"task": {"type": "string"}, "path": {"type": "string"}}),
                body=model(wire.FilePut),
                params=[TASK_ID],
                errors=("400", "403", "404", "409", "502"),
                role="user",
            )
        },
        "/tasks/{id}/files/get": {
            "post": op(
                "Pack the file or directory at path in your running task or VPS into a "
                "blob of yours (download it from /data/{digest})",
                obj({"task": {"type": "string"}, "blob": model(out.DataBlob)}),
                body=model(wire.FileGet),
                params=[TASK_ID],
                errors=("400", "403", "404", "409", "413", "502"),
                role="user",
            )
        },
        "/data": {
            "post": op(
                "Which of these blobs you must still upload; 413 naming the bound if they "
                "cannot fit (data_task_max_bytes, data_user_max_bytes)",
                obj({"missing": {"type": "array", "items": {"type": "string"}}}),
                body=model(wire.DataCheck),
                errors=("400", "403", "413"),
                role="user",
            )
        },
        "/data/{digest}": {
            "get": op(
                "Read one of your blobs (404 for a blob you never uploaded, whoever has it)",
                None,
                content="application/octet-stream",
                params=[DIGEST],
                errors=("400", "404"),
            ),
            "put": {
                **op(
                    "Upload a blob: Content-Length is checked against the bounds before a "
                    "byte is stored, and the bytes must hash (BLAKE3) to the digest",
                    obj({"blob": model(out.DataBlob)}),
                    status="201",
                    params=[DIGEST],
                    errors=("400", "403", "411", "413"),
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
                page("vps", out.Vps),
                query=qs.VpsList,
                errors=("400", "403"),
            ),
            "post": op(
                "Create a VPS: a long-lived container (docker backend)",
                obj({"vps": model(out.Vps)}),
                status="201",
                body=model(wire.VpsCreate),
                errors=("400", "403", "503"),
                role="user",
            ),
        },
        "/vps/{id}": {
            "get": op(
                "One VPS (owner or operator)",
                obj({"vps": model(out.Vps)}),
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
        "/vps/{id}/forward/{port}": {
            "get": op(
                "WebSocket (`river forward`): raw TCP to PORT in the caller's running VPS. "
                'Binary frames carry the bytes both ways; a text frame {"eof": true} ends '
                "the client's sending side. Owner only (operators: 403); a plain GET is 400",
                None,
                status="101",
                params=[TASK_ID, path_param("port", {"type": "string", "pattern": "^[0-9]{1,5}$"})],
                errors=("400", "403", "404", "409", "429", "502", "503"),
            )
        },
        "/vps/{id}/exec": {
            "post": op(
                "Run a command in a running VPS, no TTY (owner or operator): detached, or "
                "to its end with exit code and output",
                model(out.ExecResult),
                params=[TASK_ID],
                body=model(wire.VpsExec),
                errors=("400", "403", "404", "409", "502"),
            )
        },
        "/vps/{id}/apps": {
            "post": op(
                "Start Jupyter or TensorBoard in a running VPS (owner or operator); it is "
                "recorded in the VPS's ports with the path to open (poll ready_path for 200)",
                obj({"vps": model(out.Vps)}),
                status="201",
                params=[TASK_ID],
                body=model(wire.VpsAppStart),
                errors=("400", "403", "404", "409", "502"),
            )
        },
        "/vps/{id}/snapshots": {
            "get": op(
                "A VPS's snapshots, oldest first (owner or operator)",
                page("snapshots", out.Snapshot),
                params=[TASK_ID],
                query=qs.NumberPage,
                errors=("400", "403", "404"),
            )
        },
        "/vps/{id}/snapshots/{number}": {
            "delete": op(
                "Remove one snapshot from its node (owner or operator)",
                obj({"snapshots": many(out.Snapshot)}),
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
                    obj({"vps": model(out.Vps)}),
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
                    query=qs.EventsQuery,
                    errors=("400", "403", "404"),
                ),
                "x-stream": True,
            }
        },
        "/environments": {
            "get": op(
                "List container environments",
                page("environments", out.Environment),
                query=qs.NamePage,
                errors=("400", "403", "503"),
            ),
            "post": op(
                "Create an environment (a long-lived container to prepare)",
                obj({"environment": model(out.Environment)}),
                status="201",
                body=model(wire.EnvironmentCreate),
                errors=("400", "403", "409", "503", "504"),
                role="user",
            ),
        },
        "/environments/{name}": {
            "get": op(
                "One environment",
                obj({"environment": model(out.Environment)}),
                params=[ENV_NAME],
                errors=("400", "403", "404", "503"),
            ),
            "delete": op(
                "Remove an environment (owner or operator)",
                obj({"name": {"type": "string"}, "removed": {"type": "array"}}),
                params=[ENV_NAME],
                query=qs.EnvironmentDelete,
                errors=("400", "403", "404", "503"),
                role="user",
            ),
        },
        "/environments/{name}/export": {
            "post": op(
                "Export an environment to shared storage for tasks",
                obj({"environment": model(out.Environment)}),
                params=[ENV_NAME],
                errors=("400", "403", "404", "409", "429", "503", "504"),
                role="user",
            )
        },
        "/environments/{name}/exec": {
            "post": op(
                "Run a command in an environment",
                model(out.EnvironmentExecResult),
                params=[ENV_NAME],
                body=model(wire.EnvironmentExec),
                errors=("400", "403", "404", "409", "429", "503", "504"),
                role="user",
            )
        },
        "/overlay": {
            "get": op(
                "The overlay network: layout and each runner's allocation",
                model(out.Overlay),
            )
        },
        "/overlay/allocations/{node}": {
            "delete": op(
                "Release an offline runner's overlay allocation (force=1: even if online)",
                obj({"released": model(out.OverlayAllocation)}),
                params=[path_param("node")],
                query=qs.AllocationRelease,
                errors=("400", "403", "404", "409"),
                role="operator",
            )
        },
        "/overlay/reservations": {
            "get": op(
                "Your IP reservations (all=1: everyone's, operators)",
                page("reservations", out.Reservation),
                query=qs.ReservationList,
                errors=("400", "403"),
            ),
            "post": op(
                "Reserve an overlay IP for a task not yet launched (token shown once)",
                obj({"reservation": model(out.Reservation)}),
                status="201",
                body=model(wire.ReservationCreate),
                errors=("400", "403", "404", "409"),
                role="user",
            ),
        },
        "/overlay/reservations/release": {
            "post": op(
                "Release a reservation by its token",
                obj({"reservation": model(out.Reservation)}),
                body=model(wire.ReservationRelease),
                errors=("400", "403", "404", "409"),
            )
        },
        "/overlay/reservations/{id}": {
            "delete": op(
                "Release a reservation by ID (owner or operator)",
                obj({"reservation": model(out.Reservation)}),
                params=[NUMBER_ID],
                errors=("400", "403", "404", "409"),
            )
        },
        "/me": {"get": op("Who the caller is", obj({"user": model(out.User)}))},
        "/users": {
            "get": op(
                "List users",
                page("users", out.User),
                query=qs.NamePage,
                errors=("400", "403"),
                role="operator",
            ),
            "post": op(
                "Create a user",
                obj({"user": model(out.User)}),
                status="201",
                body=model(wire.UserCreate),
                errors=("400", "403", "409"),
                role="admin",
            ),
        },
        "/users/{name}": {
            "get": op(
                "One user (yourself, or any as an operator)",
                obj({"user": model(out.User)}),
                params=[USER],
                errors=("403", "404"),
            ),
            "patch": op(
                "Change a user: role and quota (admins); password (yourself with "
                "current_password, or an admin)",
                obj({"user": model(out.User)}),
                params=[USER],
                body=model(wire.UserUpdate),
                errors=("400", "403", "404", "409"),
            ),
            "delete": op(
                "Delete a user and their tokens; their unfinished tasks are killed",
                obj({"deleted": {"type": "string"}, "tasks_ended": {"type": "integer"}}),
                params=[USER],
                errors=("403", "404", "409"),
                role="admin",
            ),
        },
        "/tokens": {
            "get": op(
                "Your API tokens (admins: ?user=NAME or ?all=1)",
                page("tokens", out.Token),
                query=qs.TokenList,
                errors=("400", "403", "404"),
            ),
            "post": op(
                "Make an API token; the token is in this answer only",
                obj({"token": {"type": "string"}, "info": model(out.Token)}, ("token", "info")),
                status="201",
                body=model(wire.TokenCreate),
                errors=("400", "403", "404"),
            ),
        },
        "/tokens/{id}": {
            "delete": op(
                "Revoke a token (yours; admins: any); it fails at once",
                obj({"token": model(out.Token)}),
                params=[NUMBER_ID],
                errors=("400", "403", "404"),
            )
        },
        "/invitations": {
            "get": op(
                "List invitations",
                page("invitations", out.Invitation),
                query=qs.IdPage,
                errors=("400", "403"),
                role="operator",
            ),
            "post": op(
                "Invite: a code (shown once) that creates an account with `role`; operators "
                "may invite viewers and users",
                obj({"code": {"type": "string"}, "invitation": model(out.Invitation)}),
                status="201",
                body=model(wire.InvitationCreate),
                errors=("400", "403"),
                role="operator",
            ),
        },
        "/invitations/{id}": {
            "delete": op(
                "Revoke an invitation (operators: their own)",
                obj({"invitation": model(out.Invitation)}),
                params=[NUMBER_ID],
                errors=("400", "403", "404"),
                role="operator",
            )
        },
        "/invitations/redeem": {
            "post": op(
                "Create an account with an invitation code",
                obj({"user": model(out.User)}),
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
                    {
                        "token": {"type": "string"},
                        "info": model(out.Token),
                        "user": model(out.User),
                    },
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
                page("groups", out.Group),
                query=qs.NamePage,
                errors=("400", "403"),
                role="operator",
            ),
            "post": op(
                "Create a group (quota shared by its members)",
                obj({"group": model(out.Group)}),
                status="201",
                body=model(wire.GroupCreate),
                errors=("400", "403", "404", "409"),
                role="admin",
            ),
        },
        "/groups/{name}": {
            "get": op(
                "One group",
                obj({"group": model(out.Group)}),
                params=[GROUP],
                errors=("403", "404"),
                role="operator",
            ),
            "patch": op(
                "Change a group's quota",
                obj({"group": model(out.Group)}),
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
                obj({"group": model(out.Group)}),
                params=[GROUP, MEMBER],
                errors=("403", "404"),
                role="admin",
            ),
            "delete": op(
                "Remove a user from a group",
                obj({"group": model(out.Group)}),
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
            "schemas": {
                **response_schemas(RESPONSE_MODELS),
                **request_schemas(REQUEST_MODELS),
            },
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
