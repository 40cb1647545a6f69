"""River dashboards (ipywidgets) built on river_magics.Client: nodes, the queue, my tasks.

`%river dashboard` shows one; from Python: `Dashboard(Client())`.
"""

from __future__ import annotations

from .dashboard import Dashboard

__all__ = ["Dashboard"]
