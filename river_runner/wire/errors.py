"""Turn a pydantic ValidationError into the one-line message a 400 carries.

A user reads this in a notebook cell or a shell, so it names the field by its path
(`array.index`, `mounts[1]`), says what is allowed, and for an unknown field suggests the
field they probably meant: `"cpus": 4` answers "did you mean 'cores'?", not "'gpus'".
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

# Names people carry over from Slurm, docker or KohakuRiver, and the field that means it.
SYNONYMS = {
    "cpus": "cores",
    "cpu": "cores",
    "ncpus": "cores",
    "cpus_per_task": "cores",
    "mem": "memory",
    "gpu": "gpus",
    "ngpus": "gpus",
    "gres": "gpus",
    "node": "target",
    "nodelist": "target",
    "cmd": "command",
    "environ": "env",
    "volumes": "mounts",
    "user": "username",
}
MAX_ERRORS = 5


def field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the field at `loc` (nested objects), if it is one."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _inner_model(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """`Sub | None` or `list[Sub]` -> Sub."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def suggest(name: str, allowed: list[str]) -> str | None:
    """The allowed field `name` most likely stands for."""
    synonym = SYNONYMS.get(name.lower())
    if synonym in allowed:
        return synonym
    close = difflib.get_close_matches(name.lower(), allowed, n=1, cutoff=0.6)
    return close[0] if close else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_one(model: type[BaseModel], error: Any, noun: str = "field") -> str:
    loc = tuple(error["loc"])
    path = field_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        allowed = sorted(holder.model_fields) if holder else []
        name = str(loc[-1])
        guess = suggest(name, allowed)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        listed = ", ".join(allowed) if allowed else "none"
        return f"unknown {noun} '{path}'{hint}; allowed: {listed}"
    if kind == "missing":
        return f"'{path}' is required"
    if kind == "value_error":
        # A River rule with its own message (river_runner.spec and friends).
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        leaf = str(loc[-1]) if loc else ""
        return message if leaf in message else f"'{path}': {message}"
    if not loc:
        return f"the body must be a JSON object ({error['msg']})"
    return f"'{path}': {error['msg']} (got {_show(error.get('input'))})"


def describe_errors(model: type[BaseModel], exc: ValidationError, noun: str = "field") -> str:
    """All of a body's (or a query's: noun="query parameter") problems in one line, the
    first few in full."""
    errors = exc.errors(include_url=False)
    parts = [describe_one(model, e, noun) for e in errors[:MAX_ERRORS]]
    more = len(errors) - MAX_ERRORS
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
