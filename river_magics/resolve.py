"""Which task or VPS a user means by what they typed: a full ID, a unique prefix of one,
or a name.

IDs are 64-bit snowflakes (17+ digits): nobody types them whole. The shell CLI and the
magics both resolve through `ClientCore.resolve_task` / `resolve_vps`, which fetch the
candidates and call `pick` here, so the rule and its messages are written once:

1. an exact ID wins;
2. otherwise every item whose ID starts with the text, or whose name equals it;
3. one such item is the answer; none is an error; several are an error that lists them
   (ID, name, state), so the user can type a longer prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import RiverError

SHOWN_CANDIDATES = 10


def check_ref(ref: str | int, kind: str = "task") -> str:
    """The text stripped; a clear error for an empty one."""
    text = str(ref).strip()
    if not text:
        raise RiverError(f"give a {kind} ID, a unique prefix of one, or a {kind} name")
    return text


def matches(ref: str, item: Mapping[str, Any]) -> bool:
    return str(item.get("id", "")).startswith(ref) or (
        bool(item.get("name")) and item.get("name") == ref
    )


def pick(ref: str, items: Iterable[Mapping[str, Any]], kind: str = "task") -> str | None:
    """The one item `ref` names, None when nothing matches; RiverError when several do."""
    found: dict[str, Mapping[str, Any]] = {}
    for item in items:
        ident = str(item.get("id", ""))
        if ident == ref:
            return ident
        if matches(ref, item):
            found.setdefault(ident, item)
    if not found:
        return None
    if len(found) == 1:
        return next(iter(found))
    raise RiverError(ambiguous_message(ref, list(found.values()), kind))


def ambiguous_message(ref: str, candidates: list[Mapping[str, Any]], kind: str) -> str:
    shown = [
        f"{c.get('id')} ({c.get('name') or '-'}, {c.get('state') or '-'})"
        for c in candidates[:SHOWN_CANDIDATES]
    ]
    more = len(candidates) - len(shown)
    tail = f" and {more} more" if more > 0 else ""
    return (
        f"{ref!r} matches {len(candidates)} {kind}s: {'; '.join(shown)}{tail}; "
        f"give a longer ID prefix"
    )


def not_found_message(ref: str, kind: str) -> str:
    return f"no {kind} has an ID starting with {ref!r} or the name {ref!r}"
