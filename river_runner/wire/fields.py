"""Field types of the request models, with River's existing rules and messages.

Where a rule already had a message that users (and tests) rely on, the type runs that same
check first (a `BeforeValidator` around the function in river_runner.spec / containers), so
the contract changes where a rule is enforced, not what a user reads. The `Field`
constraints beside it are what the OpenAPI document shows; the check rejects first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo

from river_runner.containers import parse_env_name, parse_image, parse_mount
from river_runner.durations import MAX_TIME_LIMIT, parse_duration
from river_runner.spec import (
    MAX_CORES,
    MAX_GPUS,
    MAX_MEMORY,
    SpecError,
    _as_int,
    parse_memory,
    parse_target,
)

ROLES = ("viewer", "user", "operator", "admin")
Role = Literal["viewer", "user", "operator", "admin"]
MAX_COUNT = 1_000_000  # quotas, array indices: a bound no real cluster reaches
MAX_TOKEN_SECONDS = 10 * 365 * 86400
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
# `python`: a node's named environment (river runner --python-env NAME=PATH) or a path.
PYTHON_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
MAX_PATH = 4096


def checked(check: Callable[[Any], object], *, keep: bool = False) -> BeforeValidator:
    """Run an existing check (raising SpecError / ValueError with its message) before the
    type; `keep`: pass the value on as written (the check's result is another type)."""

    def run(value: Any) -> Any:
        if value is None:
            return None
        result = check(value)
        return value if keep else result

    return BeforeValidator(run)


def _no_nul(value: Any) -> Any:
    """Text the host stores in a column: PostgreSQL's text types cannot hold NUL (SQLite
    can), so a NUL reached the commit as a 500; refuse it where the request is read."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL (\\x00) characters")
    return value


StoredText = checked(_no_nul, keep=True)


def _blank_is_none(check: Callable[[Any], object]) -> Callable[[Any], object]:
    """Fields where the host has always read "" as "not given"."""
    return lambda value: value if value == "" else check(value)


def _cores(value: Any, info: ValidationInfo) -> int:
    """0 (an unpinned task outside quotas) is an operator power: the handler passes the
    caller's minimum in the validation context, so the message says the caller's range."""
    minimum = int((info.context or {}).get("min_cores", 0))
    hint = " (0, an unpinned task outside quotas, needs the operator role)" if minimum else ""
    return _as_int("cores", value, minimum, MAX_CORES, hint)


def _gpus(value: Any) -> int | None:
    # A boolean is refused, not read as 0 (`False or 0`): a count is wanted.
    if value is None:
        return None
    return _as_int("gpus", value if isinstance(value, bool) else value or 0, 0, MAX_GPUS)


def _memory(value: Any) -> int | str | None:
    if value is None:
        return None
    if value == "":
        return ""
    return parse_memory(value)


def _command(value: Any) -> list[str] | str:
    if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise SpecError("'command' must be an argv list (strings) or a non-empty shell string")


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SpecError("'env' must be an object of NAME: value")
    return {k: str(v) for k, v in value.items()}


def _mounts(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise SpecError("'mounts' must be a list of \"SRC:DST[:ro]\" strings")
    return [parse_mount(m) for m in value]


def parse_python(value: Any) -> str:
    """A task's `python`: an absolute path (an interpreter, or a venv/conda directory) or
    an environment's name. Whether it exists is the node's question (river_runner.interpreters):
    the host cannot see the node's files."""
    if isinstance(value, str) and (
        value.startswith("/")
        and len(value) <= MAX_PATH
        and "\0" not in value
        and "\n" not in value
        or PYTHON_ENV_NAME.match(value)
    ):
        return value
    raise SpecError(
        "'python' must be an absolute path (an interpreter such as /usr/bin/python3, or a "
        "venv or conda environment's directory) or the name of an environment the node "
        f"offers (river runner --python-env NAME=PATH), not {value!r}"
    )


Cores = Annotated[
    int,
    Field(ge=0, le=MAX_CORES, description="CPU cores (0: unpinned, operators only)"),
    BeforeValidator(_cores),
]
Gpus = Annotated[int | None, Field(ge=0, le=MAX_GPUS), BeforeValidator(_gpus)]
Memory = Annotated[
    Annotated[int, Field(ge=0, le=MAX_MEMORY)] | Annotated[str, Field(max_length=64)] | None,
    Field(description="bytes, or a size like 512M or 8G"),
    BeforeValidator(_memory),
]
Target = Annotated[
    str | None,
    Field(max_length=256, description="node[:numa][::gpu,gpu]"),
    checked(_blank_is_none(parse_target), keep=True),
]
Command = Annotated[
    Annotated[list[str], Field(min_length=1)] | Annotated[str, Field(min_length=1)] | None,
    Field(description="an argv list or a shell string"),
    checked(_command),
]
Env = Annotated[
    dict[str, str] | None,
    Field(description="environment variables NAME: value"),
    checked(_env),
]
Mounts = Annotated[
    list[str] | None, Field(description='"SRC:DST[:ro]" bind mounts'), checked(_mounts)
]
Image = Annotated[str | None, Field(max_length=255), checked(_blank_is_none(parse_image))]
EnvironmentName = Annotated[
    str | None, Field(max_length=63), checked(_blank_is_none(parse_env_name))
]
UserName = Annotated[str, Field(pattern=USER_NAME_PATTERN)]
Password = Annotated[str, Field(min_length=8, max_length=1024)]
Count = Annotated[int | None, Field(ge=0, le=MAX_COUNT)]
Seconds = Annotated[float | None, Field(gt=0, le=MAX_TOKEN_SECONDS)]
Python = Annotated[
    str | None,
    Field(
        max_length=MAX_PATH,
        description="process backend: the interpreter of a python task; an absolute path "
        "(interpreter, venv or conda directory) or a name from the node's --python-env",
    ),
    checked(parse_python),
]
Label = Annotated[str | None, Field(max_length=128), StoredText]
TimeLimit = Annotated[
    Annotated[float, Field(gt=0, le=MAX_TIME_LIMIT)] | Annotated[str, Field(max_length=32)] | None,
    Field(
        description="how long it may run: seconds, or 90m, 2h, 1d; at the limit SIGTERM, then "
        "SIGKILL after the host's grace, and the task ends `timeout`"
    ),
    checked(parse_duration),
]
