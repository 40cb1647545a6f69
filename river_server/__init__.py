"""River host: scheduler, node registry and API as a Jupyter server extension."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from river_server.app import RiverHost

    return [{"module": "river_server", "app": RiverHost}]
