"""What of a browser's request may travel on to an app behind `/river/proxy/...`.

The app runs on River's own origin, so the browser sends it River's cookies and whatever
River credential the request carried. The app (task code) must never see them: with the
login cookie or a River token it could act as the user from anywhere, long after the page
is closed. These helpers work on the raw header and query strings, keeping everything else
byte for byte (an app's own cookies and arguments reach it as the browser sent them).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_plus


def cookie_pairs(header: str) -> list[tuple[str, str]]:
    """(name, value) pairs in the order the browser sent them, duplicates included.

    `http.cookies.SimpleCookie` is no good here: it keeps one value per name and silently
    drops everything after a cookie it cannot parse.
    """
    pairs = []
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if name and sep:
            pairs.append((name.strip(), value.strip()))
    return pairs


def cookie_values(header: str, name: str) -> list[str]:
    """Every value sent for cookie `name` (a browser sends one per path that matches)."""
    return [value for key, value in cookie_pairs(header) if key == name]


def forwarded_cookies(header: str, login_cookie: str, xsrf_cookie: str) -> str | None:
    """The Cookie header the app gets: without River's login cookie, and without River's
    XSRF cookie. None when nothing is left.

    River's `_xsrf` is set at River's base URL; an app with a base URL under the proxy
    (Jupyter in a VPS) sets its own `_xsrf` at that longer path. Browsers send cookies of
    longer paths first (RFC 6265 5.4), so River's is the last one of that name: that one
    is dropped and the app's own is kept.
    """
    pairs = cookie_pairs(header)
    xsrf_at = [i for i, (key, _) in enumerate(pairs) if key == xsrf_cookie]
    drop = {xsrf_at[-1]} if xsrf_at else set()
    kept = [
        f"{key}={value}"
        for i, (key, value) in enumerate(pairs)
        if key != login_cookie and i not in drop
    ]
    return "; ".join(kept) or None


def forwarded_query(query: str, is_river_token: Callable[[str], bool]) -> str:
    """The query string without `token=` arguments that are River credentials (River's
    API tokens or the server token, which River accepts in `?token=`). An app's own token
    in the query (Jupyter in a VPS opens with `?token=<its own>`) stays."""
    kept = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if unquote_plus(name) == "token" and value and is_river_token(unquote_plus(value)):
            continue
        if part:
            kept.append(part)
    return "&".join(kept)
