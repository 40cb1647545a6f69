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

from tornado import web

DEFAULT_LIMIT = 1000  # what `GET /river/api/tasks` always answered with
MAX_LIMIT = 1000


@dataclass(frozen=True)
class PageRequest:
    before: int | str | None
    limit: int


def page_request(handler: web.RequestHandler, *, numeric: bool = True) -> PageRequest:
    """The caller's `before` and `limit`; a 400 naming the parameter when either is bad."""
    raw_limit = handler.get_argument("limit", None)
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not raw_limit.strip().isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise web.HTTPError(
                400, f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw_limit!r}"
            )
        limit = int(raw_limit)
    raw_before = handler.get_argument("before", None)
    before: int | str | None = None
    if raw_before is not None:
        if numeric:
            if not raw_before.strip().isdigit():
                raise web.HTTPError(
                    400,
                    f"before must be an ID (the `next` of the previous page), not {raw_before!r}",
                )
            before = int(raw_before)
        elif not raw_before:
            raise web.HTTPError(400, "before must be the `next` of the previous page, not empty")
        else:
            before = raw_before
    return PageRequest(before, limit)


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
