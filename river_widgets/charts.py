"""The dashboard's history charts (issue #21): the same series as the lab panel's charts.ts.

A sparkline per node card (CPU %, memory %, each GPU's utilisation %), a cluster
utilisation chart (the mean over nodes) and a per-user usage chart (core-hours per hour,
the cluster's total and each user the host lets the caller see: below operator, only
their own). Data come from the host's history (`Client.node_history`,
`Client.usage_history`), not from samples the dashboard took itself, so a dashboard opened
late still shows the last hour, and it agrees with the panel beside it.

Drawn by bqplot: widgets whose data are traits, so a chart updates in place (no image
re-encoded per refresh), the kernel-side models hold the points tests and scripts read,
and JupyterLab renders them as SVG through bqplot's prebuilt lab extension. The shaping of
the host's answers into series is pure (`node_series`, `cluster_series`, `usage_series`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
from bqplot import Axis, DateScale, Figure, LinearScale, Lines

from river_magics.client import Client

NODE_WINDOW = 3600.0  # seconds of node history shown (as the panel)
NODE_STEP = 10.0
USAGE_WINDOW = 7 * 86400.0
USAGE_STEP = 3600.0
COLORS = ("#1976d2", "#f57c00", "#388e3c", "#d32f2f", "#0097a7", "#7b1fa2", "#5d4037")
TOTAL_COLOR = "#616161"


@dataclass(frozen=True)
class Series:
    """Lines sharing one time axis: `at` (unix seconds), one row of values per label
    (None where the host had no figure)."""

    at: list[float]
    labels: list[str]
    rows: list[list[float | None]]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def node_series(history: Mapping[str, Any]) -> Series:
    """One node's history as CPU %, memory % and each GPU's utilisation %."""
    points = list(history.get("points") or [])
    width = max((len(p.get("gpus") or []) for p in points), default=0)
    labels = ["CPU %", "Mem %"] + [f"GPU{i} %" for i in range(width)]
    rows: list[list[float | None]] = [
        [_number(p.get("cpu")) for p in points],
        [_number(p.get("memory")) for p in points],
    ]
    for i in range(width):
        rows.append(
            [
                _number(gpus[i].get("util")) if i < len(gpus := p.get("gpus") or []) else None
                for p in points
            ]
        )
    return Series([float(p["at"]) for p in points], labels, rows)


def cluster_series(histories: Sequence[Mapping[str, Any]]) -> Series:
    """Mean CPU % and memory % over the nodes that reported at each time."""
    sums: dict[float, list[float]] = {}
    for history in histories:
        for p in history.get("points") or []:
            cell = sums.setdefault(float(p["at"]), [0.0, 0.0, 0.0, 0.0])
            for offset, key in ((0, "cpu"), (2, "memory")):
                value = _number(p.get(key))
                if value is not None:
                    cell[offset] += value
                    cell[offset + 1] += 1
    at = sorted(sums)
    rows: list[list[float | None]] = [
        [sums[t][0] / sums[t][1] if sums[t][1] else None for t in at],
        [sums[t][2] / sums[t][3] if sums[t][3] else None for t in at],
    ]
    return Series(at, ["CPU %", "Mem %"], rows)


def usage_series(usage: Mapping[str, Any]) -> Series:
    """Core-hours per bucket: the cluster's total, then each user listed (0 where a user
    ran nothing in a bucket the total has). Drawn as steps: a bucket's value holds from its
    start to the next one's, so the series ends with the last bucket's end (which also
    lets one hour of use draw a line)."""
    total = list(usage.get("total") or [])
    at = [float(p["at"]) for p in total]
    if at:
        at.append(at[-1] + float(usage.get("step") or 3600.0))
    index = {t: i for i, t in enumerate(at[:-1])}

    def closed(row: list[float | None]) -> list[float | None]:
        return row + row[-1:]

    labels = ["cluster total"]
    rows = [closed([float(p["core_seconds"]) / 3600 for p in total])]
    for user in usage.get("users") or []:
        row: list[float | None] = [0.0] * len(total)
        for p in user.get("points") or []:
            i = index.get(float(p["at"]))
            if i is not None:
                row[i] = float(p["core_seconds"]) / 3600
        labels.append(str(user.get("user")))
        rows.append(closed(row))
    return Series(at, labels, rows)


# Settings both figure sizes share: a free aspect ratio so the layout box alone sizes
# the figure, no animation (a tick redraws in place), and no y padding so 0 and 100 %
# sit on the frame.
_FIGURE_COMMON: dict[str, Any] = {
    "min_aspect_ratio": 0.01,
    "max_aspect_ratio": 100,
    "animation_duration": 0,
    "padding_y": 0.0,
}


def _figure(lines: Lines, *, compact: bool, title: str, y_label: str) -> Figure:
    if compact:
        return Figure(
            marks=[lines],
            axes=[],
            fig_margin={"top": 2, "bottom": 2, "left": 2, "right": 2},
            layout=widgets.Layout(width="160px", height="44px"),
            **_FIGURE_COMMON,
        )
    scales = lines.scales
    axes = [
        Axis(scale=scales["x"], tick_format="%H:%M", num_ticks=5),
        Axis(scale=scales["y"], side="left", label=y_label, num_ticks=4),
    ]
    return Figure(
        marks=[lines],
        axes=axes,
        title=title,
        legend_location="top-left",
        fig_margin={"top": 40, "bottom": 30, "left": 50, "right": 10},
        layout=widgets.Layout(width="480px", height="220px"),
        **_FIGURE_COMMON,
    )


def _lines(percent: bool, legend: bool) -> Lines:
    y_scale = LinearScale(min=0.0, max=100.0) if percent else LinearScale(min=0.0)
    return Lines(
        interpolation="linear" if percent else "step-after",
        x=np.array([], dtype="datetime64[ms]"),
        y=np.array([], dtype=float),
        scales={"x": DateScale(), "y": y_scale},
        display_legend=legend,
        stroke_width=1.5,
    )


class Chart:
    """One figure and its Lines, redrawn in place from a `Series`."""

    def __init__(self, css: str, *, compact: bool, percent: bool, title: str = "") -> None:
        self.lines = _lines(percent, legend=not compact)
        self.figure = _figure(
            self.lines, compact=compact, title=title, y_label="%" if percent else "core-hours"
        )
        self.figure.add_class(css)
        self.labels: list[str] = []
        self.total_first = False

    def draw(self, series: Series) -> None:
        """Show `series`. Fewer than two points draw nothing: a line needs two, and bqplot
        squeezes a (lines x 1) array into one line of several points."""
        at = series.at if len(series.at) >= 2 else []
        x = (np.array(at, dtype=float) * 1000).astype("datetime64[ms]")
        y = np.array(
            [[np.nan if v is None else v for v in row[: len(at)]] for row in series.rows],
            dtype=float,
        ).reshape(len(series.rows), len(at))
        if len(series.rows) == 1:
            y = y[0]  # one line: bqplot keeps it 1-D
        colors = list(COLORS)
        if self.total_first:
            colors = [TOTAL_COLOR, *COLORS]
        with self.lines.hold_sync():
            self.lines.x = x
            self.lines.y = y
            self.lines.labels = list(series.labels)
            self.lines.colors = [colors[i % len(colors)] for i in range(len(series.labels))]
        self.labels = list(series.labels)

    def points(self) -> list[int]:
        """How many drawn (non-missing) points each line has, in label order."""
        y = np.asarray(self.lines.y, dtype=float)
        if y.size == 0:
            return [0 for _ in self.labels]
        y = np.atleast_2d(y)
        return [int(np.count_nonzero(~np.isnan(row))) for row in y]

    def send_state(self) -> None:
        self.lines.send_state()


class HistoryCharts:
    """The dashboard's charts: `sparkline(node)` for each node card, `overview` (cluster
    utilisation and usage) below the nodes; `refresh(names)` re-reads the host's history.

    Refreshing is blocking I/O (N+1 small GETs), done by the dashboard's refresh thread;
    a lock keeps a `refresh()` from a cell and the thread from interleaving their draws.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()
        self.nodes: dict[str, Chart] = {}
        self.cluster = Chart(
            "river-chart-cluster", compact=False, percent=True, title="Cluster utilisation, %"
        )
        self.usage = Chart(
            "river-chart-usage", compact=False, percent=False, title="Usage, core-hours per hour"
        )
        self.usage.total_first = True
        self.overview = widgets.HBox([self.cluster.figure, self.usage.figure])
        self.refreshed_at: float | None = None

    def sparkline(self, node: str) -> Figure:
        """The node card's sparkline (one figure per node, kept across refreshes)."""
        with self._lock:
            chart = self.nodes.get(node)
            if chart is None:
                chart = self.nodes[node] = Chart("river-spark", compact=True, percent=True)
            return chart.figure

    def refresh(self, names: Sequence[str]) -> None:
        """Fetch each node's last hour and the last week's usage, and redraw. A failing
        call raises (RiverError) and leaves the drawings as they were."""
        now = time.time()
        histories = [
            self.client.node_history(name, since=now - NODE_WINDOW, step=NODE_STEP)
            for name in names
        ]
        usage = self.client.usage_history(since=now - USAGE_WINDOW, step=USAGE_STEP)
        for name in names:
            self.sparkline(name)
        with self._lock:
            for name, history in zip(names, histories, strict=True):
                self.nodes[name].draw(node_series(history))
            self.cluster.draw(cluster_series(histories))
            self.usage.draw(usage_series(usage))
            self.refreshed_at = now

    def send_state(self) -> None:
        with self._lock:
            for chart in [*self.nodes.values(), self.cluster, self.usage]:
                chart.send_state()

    def get_state(self) -> dict[str, Any]:
        """Each chart's line labels and drawn point counts (what get_state reports)."""

        def of(chart: Chart) -> dict[str, Any]:
            return {"labels": list(chart.labels), "points": chart.points()}

        with self._lock:
            return {
                "nodes": {name: of(chart) for name, chart in sorted(self.nodes.items())},
                "cluster": of(self.cluster),
                "usage": of(self.usage),
                "refreshed_at": self.refreshed_at,
            }
