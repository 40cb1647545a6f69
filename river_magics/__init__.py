"""River from a notebook: `%load_ext river_magics`, then `%river --help`.

The Python API (`Client`, `TaskHandle`, `TaskGroup`, and `AsyncClient` for asyncio code)
needs only httpx; IPython is imported only when the extension is loaded, so scripts can use
the client without it.
"""

from __future__ import annotations

from typing import Any

from .aclient import AsyncClient, AsyncTaskGroup, AsyncTaskHandle
from .client import Client, TaskGroup, TaskHandle, is_terminal
from .errors import RiverConnectionError, RiverError
from .payload import PayloadError

__all__ = [
    "AsyncClient",
    "AsyncTaskGroup",
    "AsyncTaskHandle",
    "Client",
    "PayloadError",
    "RiverConnectionError",
    "RiverError",
    "TaskGroup",
    "TaskHandle",
    "is_terminal",
    "load_ipython_extension",
]


def load_ipython_extension(ip: Any) -> None:
    """Register `%river` / `%%river` (called by `%load_ext river_magics`)."""
    from .magics import RiverMagics

    ip.register_magics(RiverMagics(ip))
