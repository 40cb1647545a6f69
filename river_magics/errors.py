"""Errors the client raises: one type for everything the host or the network refuses."""

from __future__ import annotations


class RiverError(Exception):
    """The host refused a request, or could not be reached; the message says what to fix.

    `status` is the HTTP status for host answers and None for network trouble, so callers
    can tell "the host said no" (do not retry) from "the host is away" (retry later).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class RiverConnectionError(RiverError):
    """The host could not be reached or stopped answering: worth retrying."""
