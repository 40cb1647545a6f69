"""Progress of a data-plane transfer: an ipywidgets bar in a notebook, text elsewhere.

Shown only for transfers that last over a second (a small push stays silent). In a kernel
with ipywidgets the bar is a real widget (a text bar written to stderr would be a wall of
carriage returns in a saved notebook); in a terminal, the same bar as one rewritten stderr
line. An interrupted transfer leaves its bar marked as cancelled.
"""

from __future__ import annotations

import sys
import time
from typing import Any

SHOW_AFTER = 1.0  # seconds before a bar appears
EVERY = 0.25  # seconds between updates


def _in_widget_kernel() -> bool:
    """Whether this runs in an IPython kernel (not a terminal IPython) with ipywidgets."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None  # type: ignore[attr-defined]
    except Exception:
        return False
    if ip is None or getattr(ip, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class Progress:
    """Counts bytes of one transfer and shows them once it has run a second."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done = what, total, 0
        self.start = time.monotonic()
        self._last = 0.0
        self._widget: Any = None
        self._text_shown = False
        self._use_widget = _in_widget_kernel()

    @property
    def shown(self) -> bool:
        return self._text_shown or self._widget is not None

    def add(self, size: int) -> None:
        self.done += size
        now = time.monotonic()
        if now - self.start < SHOW_AFTER or now - self._last < EVERY:
            return
        self._last = now
        share = min(self.done / self.total, 1.0) if self.total > 0 else 0.0
        rate = self.done / max(now - self.start, 1e-6) / 2**20
        if self._use_widget:
            self._show_widget(share, rate)
        else:
            bar = "#" * int(share * 30)
            sys.stderr.write(f"\r{self.what} [{bar:<30}] {share:4.0%} {rate:7.1f} MiB/s")
            sys.stderr.flush()
            self._text_shown = True

    def _show_widget(self, share: float, rate: float) -> None:
        import ipywidgets
        from IPython.display import display

        if self._widget is None:
            self._widget = ipywidgets.FloatProgress(
                value=0.0, min=0.0, max=1.0, description=self.what.removeprefix("river: ")
            )
            self._label = ipywidgets.Label()
            display(ipywidgets.HBox([self._widget, self._label]))
        self._widget.value = share
        self._label.value = f"{share:4.0%} {rate:7.1f} MiB/s"

    def close(self) -> None:
        complete = self.total <= 0 or self.done >= self.total
        if self._widget is not None:
            self._widget.bar_style = "success" if complete else "danger"
            if not complete:
                self._label.value = f"cancelled at {self.done / 2**20:.0f} MiB"
        elif self._text_shown:
            sys.stderr.write("\n" if complete else " cancelled\n")
            sys.stderr.flush()
