"""Query parameters of the host's user API, one model per route that takes any.

Checked like request bodies (requests.py): an unknown or misspelled parameter, a value of
the wrong type or one out of range is a 400 naming the parameter and what is allowed.
They used to be read leniently, so `?all=x` meant "no" and `?limt=5` was ignored in
silence. A URL carries text, so the models are not strict (a number is written as text),
but a flag is exactly 0/1 (or true/false), nothing that merely looks false.

`token` and `_xsrf` are not parameters of any route: they are Jupyter's credentials
(an EventSource cannot send a header), read before a route runs (TRANSPORT); nor is the
bare `?<milliseconds>` that JupyterLab adds to its GETs to defeat caches.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from river_runner.protocol import TaskState
from river_runner.wire.fields import USER_NAME_PATTERN

TRANSPORT = frozenset({"token", "_xsrf"})


def is_cache_buster(name: str, values: list[bytes]) -> bool:
    """JupyterLab's `ServerConnection` appends `?<milliseconds>` (a bare number, no value)
    to every GET it sends with `cache: 'no-store'`, the lab panel's included: not a
    parameter of any route, so it is let through rather than refused."""
    # Milliseconds since 1970 have 13 digits until the year 2286; a short number such as
    # `?0=` is a mistake like any other unknown parameter.
    return name.isdigit() and 12 <= len(name) <= 16 and all(value == b"" for value in values)


MAX_LIMIT = 1000
DEFAULT_LIMIT = 1000  # what `GET /river/api/tasks` always answered with
FLAG_VALUES = ("0", "1", "true", "false")
ID_PATTERN = r"^[0-9]{1,19}$"
STATE_NAMES = tuple(state.value for state in TaskState)
STATES_PATTERN = rf"^({'|'.join(STATE_NAMES)})(,({'|'.join(STATE_NAMES)}))*$"


def _flag(value: Any) -> Any:
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be one of {', '.join(FLAG_VALUES)}, not {value!r}")


# A yes/no parameter; the document shows the four spellings it takes.
Flag = Annotated[
    bool,
    BeforeValidator(_flag),
    Field(json_schema_extra={"type": "string", "enum": list(FLAG_VALUES)}),
]
IdCursor = Annotated[
    str | None,
    Field(
        pattern=ID_PATTERN,
        description="the `next` of the previous page (an ID): the page starts after it",
    ),
]
NameCursor = Annotated[
    str | None,
    Field(min_length=1, max_length=255, description="the `next` of the previous page"),
]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="at most this many items")]


class Query(BaseModel):
    """Base of every query model: unknown parameters are an error."""

    model_config = ConfigDict(extra="forbid")


class NoQuery(Query):
    """Routes that take no query parameter: any one is a mistake."""


class IdPage(Query):
    """A list whose cursor is an ID (tasks and VPSes newest first; tokens, invitations
    and reservations oldest first)."""

    before: IdCursor = None
    limit: Limit = DEFAULT_LIMIT


class NamePage(Query):
    """A list ordered by name (users, groups, environments): the cursor is a name."""

    before: NameCursor = None
    limit: Limit = DEFAULT_LIMIT


class NumberPage(Query):
    """A VPS's snapshots, by number."""

    before: Annotated[
        int | None, Field(ge=0, le=10**12, description="the `next` of the previous page")
    ] = None
    limit: Limit = DEFAULT_LIMIT


class TaskList(IdPage):
    """GET /tasks."""

    all: Annotated[Flag, Field(description="1: everyone's tasks")] = False
    state: Annotated[
        str | None,
        Field(pattern=STATES_PATTERN, description="comma-separated states, e.g. queued,running"),
    ] = None


class VpsList(IdPage):
    """GET /vps."""

    all: Annotated[Flag, Field(description="1: everyone's VPSes (operators)")] = False


class TokenList(IdPage):
    """GET /tokens."""

    user: Annotated[
        str | None, Field(pattern=USER_NAME_PATTERN, description="one user's (admins)")
    ] = None
    all: Annotated[Flag, Field(description="1: everyone's (admins)")] = False


class ReservationList(IdPage):
    """GET /overlay/reservations."""

    all: Annotated[Flag, Field(description="1: everyone's (operators)")] = False


class LogsQuery(Query):
    """GET /tasks/{id}/logs."""

    since: Annotated[
        int, Field(ge=0, le=2**63 - 1, description="the lines after this sequence number")
    ] = 0


class EventsQuery(Query):
    """GET /events: the tasks to watch (repeat `task`), or `tasks=all`."""

    task: Annotated[
        list[Annotated[str, Field(pattern=ID_PATTERN)]],
        Field(max_length=1000, description="a task to watch (repeatable)"),
    ] = []
    since: Annotated[
        int, Field(ge=0, le=2**63 - 1, description="replay log lines after this number")
    ] = 0
    tasks: Annotated[Literal["all"] | None, Field(description="all: every task you may see")] = None


class EnvironmentDelete(Query):
    """DELETE /environments/{name}."""

    tarball: Annotated[Flag, Field(description="1: also remove the exported tarball")] = False


class AllocationRelease(Query):
    """DELETE /overlay/allocations/{node}."""

    force: Annotated[Flag, Field(description="1: even if the runner is online")] = False


Since = Annotated[
    float | None,
    Field(ge=0, le=2**40, description="unix seconds: the points from this time on"),
]


class NodeHistoryQuery(Query):
    """GET /nodes/{name}/history (since defaults to one hour ago)."""

    since: Since = None
    step: Annotated[
        float,
        Field(
            gt=0,
            le=30 * 86400,
            description="seconds between points (widened to the stored resolution, and so "
            "that one answer holds at most 2000 points)",
        ),
    ] = 10.0


class UsageHistoryQuery(Query):
    """GET /usage/history (since defaults to 24 hours ago)."""

    since: Since = None
    step: Annotated[
        float,
        Field(
            gt=0,
            le=366 * 86400,
            description="seconds per bucket, rounded up to whole hours",
        ),
    ] = 3600.0


QUERY_MODELS: tuple[type[Query], ...] = (
    NoQuery,
    IdPage,
    NamePage,
    NumberPage,
    TaskList,
    VpsList,
    TokenList,
    ReservationList,
    LogsQuery,
    EventsQuery,
    EnvironmentDelete,
    AllocationRelease,
    NodeHistoryQuery,
    UsageHistoryQuery,
)
