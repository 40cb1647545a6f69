"""The access-log line of a response whose body Tornado did not send.

Why: Tornado logs a request in `finish()` (through Jupyter's `log_request`, the
`log_function` of its settings), but a handler that `detach`es its stream is marked
finished without that call, so a download sent on the detached connection
(river_server/fileserve.py) would leave no line at all. This writes the line Jupyter would
have written, when the body has really ended, with what Jupyter's lacks and a download
needs: the bytes sent out of the bytes due, and whether the reader left early.

Same logger and format as jupyter_server.log.log_request (the handler's `log`, else
`tornado.access`; "STATUS METHOD URI (user@ip) N.NNms", the query's secrets scrubbed), and
its levels: a whole 2xx body is a debug line, as Jupyter's successes are; a cut-off one is
an info line, since a transfer that did not complete is worth seeing at the default level
(docs/design-decisions.md).
"""

from __future__ import annotations

import logging
from typing import Any

from tornado import web
from tornado.log import access_log


def _uri(handler: web.RequestHandler) -> str:
    """The URI as Jupyter logs it: token=, auth=, key= ... (and the server's extra keys)
    scrubbed by Jupyter's own function; without it, the path alone (no query at all)."""
    try:
        from jupyter_server.log import _scrub_uri
    except ImportError:  # pragma: no cover - a Jupyter that renamed it
        return handler.request.path
    extra = handler.settings.get("extra_log_scrub_param_keys", [])
    return str(_scrub_uri(handler.request.uri or "", extra))


def _username(handler: web.RequestHandler) -> str:
    try:
        user: Any = handler.current_user
    except Exception:  # as Jupyter: a mixin's odd current_user never breaks the log
        return ""
    return str(getattr(user, "username", None) or "unknown") if user else ""


def log_sent(handler: web.RequestHandler, sent: int | None, size: int) -> None:
    """One access-log line for `handler`'s request, whose body of `size` bytes ended after
    `sent` bytes (None: unknown, the sending was cancelled)."""
    try:
        logger: logging.Logger | logging.LoggerAdapter[Any] = handler.log  # type: ignore[attr-defined]
    except AttributeError:
        logger = access_log
    status, request = handler.get_status(), handler.request
    whole = sent == size
    line = (
        f"{status} {request.method} {_uri(handler)} ({_username(handler)}@{request.remote_ip}) "
        f"{1000.0 * request.request_time():.2f}ms"
    )
    if whole:
        line += f" {size} bytes sent"
    else:
        got = "?" if sent is None else str(sent)
        line += f" {got} of {size} bytes sent (cut off: the reader left or the host stopped)"
    if status >= 400:
        level = logging.WARNING if status < 500 else logging.ERROR
    elif whole:
        level = logging.DEBUG if status < 300 or status == 304 else logging.INFO
    else:
        level = logging.INFO
    logger.log(level, line)
