"""Server-sent events parsing, kept apart from the HTTP client so it can be tested alone."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from typing import Any

# Kind yielded for `: keepalive` comments when asked for: lets a waiter check its deadline
# even while nothing happens.
KEEPALIVE = "keepalive"


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sse(lines: Iterable[str], *, keepalive: bool = False) -> Iterator[tuple[str, Any]]:
    """Turn text/event-stream lines into `(kind, data)` pairs, data decoded from JSON.

    Follows the WHATWG rules that matter here: `data:` lines of one event are joined
    with newlines, one space after the colon is dropped, events without data are not
    dispatched, `id:`/`retry:` are ignored and a half-received trailing event is dropped.
    """
    kind = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield kind or "message", _decode("\n".join(data))
            kind, data = "", []
            continue
        if line.startswith(":"):
            if keepalive:
                yield KEEPALIVE, None
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)


async def aparse_sse(
    lines: AsyncIterator[str], *, keepalive: bool = False
) -> AsyncGenerator[tuple[str, Any], None]:
    """`parse_sse` over an async line source: buffered per event, so the rules are the same
    and each event is passed on as soon as its blank line arrives."""
    buffer: list[str] = []
    async for line in lines:
        buffer.append(line)
        if line.rstrip("\r\n") == "" or (line.startswith(":") and len(buffer) == 1):
            for event in parse_sse(buffer, keepalive=keepalive):
                yield event
            buffer = []
