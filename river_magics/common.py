"""What the sync and async clients share: URLs, errors, request bodies, arrays, watch state.

No I/O here, so both clients (and the tests) use exactly the same rules.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from river_runner.containers import parse_mount
from river_runner.durations import parse_duration
from river_runner.ids import parse_id
from river_runner.protocol import TERMINAL_STATES
from river_runner.spec import parse_memory, parse_target

from .errors import RiverError
from .payload import check_names, pickle_values, wrap_script

NO_HOST_MESSAGE = "no River host: run %river connect URL --token T or set RIVER_URL"
API_PREFIX = "/river/api"

# The host sends a keepalive comment every 15 s; a read that waits much longer than
# that means the connection is dead, not that the task is quiet.
EVENTS_READ_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
MAX_ARRAY = 10_000
_ARRAY_SPEC = re.compile(r"\s*([0-9,\-:\s]+?)\s*(?:%\s*(\d+)\s*)?")

TERMINAL = frozenset(state.value for state in TERMINAL_STATES)
WAITING = frozenset({"queued", "pending_approval"})


def is_terminal(state: str | None) -> bool:
    """True for states a task never leaves (completed, failed, killed, killed_oom, lost)."""
    return state in TERMINAL


def task_id(value: str | int) -> str:
    """Validate an ID before it goes into a URL (no path tricks, clear message)."""
    return str(parse_id(value))


def normalize_url(url: str) -> tuple[str, str | None]:
    """Accept what users paste: no scheme, a trailing slash, `/river/api`, `?token=...`."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    token = next((value for key, value in query if key == "token"), None)
    rest = [(key, value) for key, value in query if key != "token"]
    path = parts.path.rstrip("/")
    for suffix in (API_PREFIX, "/river", "/lab", "/tree"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    clean = urlunsplit((parts.scheme, parts.netloc, path, urlencode(rest), ""))
    return clean.rstrip("/"), token


def error_from_response(response: httpx.Response, method: str, path: str) -> RiverError:
    """Build a RiverError from the host's JSON `message` (Jupyter APIHandler format)."""
    status = response.status_code
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("reason") or "")
    except ValueError:
        pass
    reason = response.reason_phrase or "error"
    if not message or message.lower() == reason.lower():
        message = f"{reason} (HTTP {status} for {method} {path})"
        if status == 404:
            message += ": is the River extension enabled on this server?"
    if status in (401, 403):
        message += " (check the token: %river connect URL --token T, or RIVER_TOKEN)"
    return RiverError(message, status=status)


def transport_message(url: str, exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"River host at {url} did not answer in time"
    detail = str(exc) or type(exc).__name__
    return f"cannot reach River host at {url}: {detail}"


def client_headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "river-magics"}
    if token:
        headers["Authorization"] = f"token {token}"
    return headers


# ---- submission ------------------------------------------------------------------------


def submit_body(
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
    push_limit: int | None = None,
    ip_token: str | None = None,
    python: str | None = None,
    python_fallback: bool = False,
    time_limit: float | str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The POST /tasks body, checked here first so a typo fails before any request.

    Returns (body, names to pull). `push` pickles its values now: an unpicklable one is
    named in the error and nothing is sent.
    """
    if (command is None) == (script is None):
        raise ValueError("give exactly one of command= or script=")
    pull_names = check_names(pull or (), "--pull")
    if (push or pull_names) and script is None:
        raise RiverError("--push and --pull work with Python cells (script=), not commands")
    body: dict[str, Any] = {"cores": cores, "gpus": gpus}
    if script is not None:
        if push or pull_names:
            check_names(push or {}, "--push")
            limit = {} if push_limit is None else {"limit": push_limit}
            script = wrap_script(script, pickle_values(push or {}, **limit), pull_names)
        body.update(kind="python", script=script)
    else:
        body.update(kind="command", command=command if isinstance(command, str) else list(command))
    if memory not in (None, "", 0):
        body["memory"] = parse_memory(memory)
    if target:
        body["target"] = str(parse_target(target))
    if name:
        body["name"] = name
    if env:
        body["env"] = {str(key): str(value) for key, value in env.items()}
    if image and environment:
        raise ValueError("give either image= or environment= (an exported one), not both")
    for key, value in (("workdir", workdir), ("image", image), ("environment", environment)):
        if value:
            body[key] = value
    if mounts:
        body["mounts"] = [parse_mount(m) for m in mounts]  # SpecError (a ValueError) if bad
    if privileged:
        body["privileged"] = True
    if ip_token:  # a reserved overlay address (%river ip reserve)
        body["ip_token"] = str(ip_token).strip()
    if time_limit is not None:  # `90m`, `2h`, seconds: SpecError (a ValueError) if bad
        body["time_limit"] = parse_duration(time_limit)
    if python:  # a script's interpreter on the node (river_runner.interpreters)
        if script is None:
            raise ValueError("python= picks the interpreter of a script, not of a command")
        body["python"] = python
        if python_fallback:
            body["python_fallback"] = True
    return body, pull_names


def parse_array(spec: str | Iterable[int]) -> tuple[list[int], int | None]:
    """`0-31%4` -> (indices 0..31, limit 4). Also `1,3,8-11`, `0-30:2` (step), `5`.

    An iterable of ints is taken as the indices, with no limit.
    """
    if not isinstance(spec, str):
        indices = [int(i) for i in spec]
        limit = None
    else:
        match = _ARRAY_SPEC.fullmatch(spec)
        if not match:
            raise RiverError(f"bad array {spec!r}: write e.g. 0-31, 0-31%4, 1,3,5-9 or 0-30:2")
        indices = []
        for part in match[1].replace(" ", "").split(","):
            numbers = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
            if not numbers:
                raise RiverError(
                    f"bad array {spec!r}: {part!r} is not N, A-B or A-B:STEP (e.g. 0-31%4)"
                )
            start = int(numbers[1])
            end = int(numbers[2]) if numbers[2] else start
            step = int(numbers[3]) if numbers[3] else 1
            if end < start or step < 1:
                raise RiverError(f"bad array {spec!r}: {part!r} is an empty range")
            if len(indices) + (end - start) // step + 1 > MAX_ARRAY:
                raise RiverError(f"an array may have at most {MAX_ARRAY} tasks ({spec!r})")
            indices.extend(range(start, end + 1, step))
        limit = int(match[2]) if match[2] else None
        if limit == 0:
            raise RiverError(f"bad array {spec!r}: the limit after % must be at least 1")
    if len(set(indices)) != len(indices):
        raise RiverError(f"bad array {spec!r}: an index appears twice")
    if not indices:
        raise RiverError(f"bad array {spec!r}: no indices")
    if len(indices) > MAX_ARRAY:
        raise RiverError(f"an array may have at most {MAX_ARRAY} tasks, not {len(indices)}")
    return indices, limit


def array_field(array_id: str, index: int, size: int, limit: int | None) -> dict[str, Any]:
    field: dict[str, Any] = {"id": array_id, "index": index, "size": size}
    if limit:
        field["limit"] = limit
    return field


def new_array_id() -> str:
    return uuid.uuid4().hex[:12]


def job_fields(
    nodes: int,
    gpus_per_node: int | None = None,
    network: str | None = None,
    launcher: str | None = None,
    nproc_per_node: int | None = None,
) -> dict[str, Any]:
    """The body fields of a multi-node job, checked here so a typo fails before a request."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise RiverError(f"nodes must be a whole number of at least 1, not {nodes!r}")
    out: dict[str, Any] = {"nodes": nodes}
    if gpus_per_node is not None:
        if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int):
            raise RiverError(f"gpus_per_node must be a whole number, not {gpus_per_node!r}")
        out["gpus_per_node"] = gpus_per_node
    if network is not None:
        out["network"] = network
    if launcher is not None:
        out["launcher"] = launcher
    if nproc_per_node is not None:
        if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int):
            raise RiverError(f"nproc_per_node must be a whole number, not {nproc_per_node!r}")
        out["nproc_per_node"] = nproc_per_node
    return out
