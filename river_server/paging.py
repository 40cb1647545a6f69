"""Cursor paging for every list route: `?before=CURSOR&limit=N`, answered with `next`.

One rule for all lists, so clients follow any of them the same way: an answer carries at
most `limit` items and `next`, the cursor of the following page (null on the last one);
pass it back as `before`. Tasks and VPSes are listed newest first, so the cursor is the
ID below which the next page starts; the other lists keep their own order (names, or IDs
oldest first) and the next page starts after the cursor. A cursor is a key, not a
position, so items added or removed between pages shift nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from river_runner.wire.queries import IdPage, NamePage, NumberPage


@dataclass(frozen=True)
class PageRequest:
    before: int | str | None
    limit: int


def page_request(query: IdPage | NamePage | NumberPage) -> PageRequest:
    """The caller's `before` and `limit`, already checked by the route's query model
    (river_runner/wire/queries.py: a bad one is a 400 naming it before the route runs)."""
    before: int | str | None = query.before
    if isinstance(query, IdPage) and query.before is not None:
        before = int(query.before)
    return PageRequest(before, query.limit)


def page_of(
    items: list[dict[str, Any]],
    page: PageRequest,
    key: str,
    *,
    newest_first: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of an already ordered list of JSON items, and the next cursor."""
    if page.before is not None:
        convert: Callable[[Any], Any] = int if isinstance(page.before, int) else str
        cursor = page.before
        if newest_first:
            items = [item for item in items if convert(item[key]) < cursor]
        else:
            items = [item for item in items if convert(item[key]) > cursor]
    chunk = items[: page.limit]
    more = len(items) > page.limit
    return chunk, (str(chunk[-1][key]) if more and chunk else None)
