"""`%river dashboard`: nodes, the queue and my tasks as ipywidgets, updated in the background.

Two daemon threads keep it current without blocking the kernel (an asyncio task would stall
while a cell blocks; see platform notes):

- the event thread holds the host's event stream open (own tasks and node changes) and
  applies each task record as it arrives, so state changes show within milliseconds;
- the refresh thread re-reads node metrics (they change with heartbeats, which send no
  events), the whole queue (positions move when anyone's task leaves it) and my active
  tasks every `refresh` seconds: three small GETs, not a hammering poll; and every
  `history_refresh` seconds (default: `refresh`, at least 5) the host's metrics and usage
  history for the charts (river_widgets/charts.py: a sparkline per node card, a cluster
  utilisation chart, a per-user usage chart).

Each thread has its own client connection. `get_state()` returns what the widgets show as
plain data, for tests and for code that wants the numbers.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets

from river_magics.client import Client, is_terminal
from river_magics.display import _STATE_COLORS, job_state, status_text
from river_magics.errors import RiverError
from river_runner.loglines import LineRenderer
from river_runner.spec import format_memory
from river_widgets.charts import HistoryCharts
from river_widgets.vps_cards import VpsCard

HISTORY = 60  # CPU samples per node kept in get_state()['nodes'][i]['history']
MAX_TASKS = 15  # rows of "my tasks"
LOG_LINES = 200  # lines shown by a task's "logs" button
RECONNECT_MAX = 10.0


def _percent(used: Any, total: Any) -> float:
    try:
        return max(0.0, min(100.0, 100.0 * float(used) / float(total))) if total else 0.0
    except (TypeError, ValueError):
        return 0.0


def node_load(node: Mapping[str, Any]) -> dict[str, Any]:
    """CPU %, memory % and per-GPU utilisation/memory % of one node record."""
    metrics = node.get("metrics") or {}
    cpu = float(metrics.get("cpu_percent") or 0.0)
    memory = _percent(metrics.get("memory_used"), metrics.get("memory_total") or node.get("memory"))
    gpus = [
        {
            "index": gpu.get("index"),
            "name": gpu.get("name"),
            "util": float(gpu.get("util") or 0.0),
            "memory_percent": _percent(gpu.get("memory_used"), gpu.get("memory")),
        }
        for gpu in node.get("gpus") or []
    ]
    return {"cpu_percent": cpu, "memory_percent": memory, "gpus": gpus}


def _bar(description: str) -> widgets.FloatProgress:
    return widgets.FloatProgress(
        value=0.0,
        min=0.0,
        max=100.0,
        description=description,
        layout=widgets.Layout(width="190px"),
        style={"description_width": "42px"},
    )


class _NodeRow:
    """A node card: state and free resources, CPU/memory/GPU bars, and `spark`, the host's
    history of the node (charts.py)."""

    def __init__(self, name: str, spark: widgets.DOMWidget) -> None:
        self.label = widgets.HTML(layout=widgets.Layout(width="220px"))
        self.cpu = _bar("CPU")
        self.memory = _bar("mem")
        self.gpus: list[widgets.FloatProgress] = []
        self.gpu_box = widgets.HBox()
        self.spark = spark
        self.box = widgets.HBox([self.label, self.cpu, self.memory, self.gpu_box, self.spark])

    def update(self, node: Mapping[str, Any], load: Mapping[str, Any]) -> None:
        state = str(node.get("state"))
        free = node.get("free") or {}
        color = _STATE_COLORS.get(state, "inherit")
        self.label.value = (
            f"<b>{html.escape(str(node.get('name')))}</b> "
            f"<span style='color:{color}'>{html.escape(state)}</span><br>"
            f"<small>{free.get('cores', '-')}/{node.get('cores', '-')} cores free, "
            f"{format_memory(int(free.get('memory') or 0))} free</small>"
        )
        self.cpu.value = load["cpu_percent"]
        self.memory.value = load["memory_percent"]
        gpus = load["gpus"]
        if len(self.gpus) != len(gpus):
            self.gpus = [_bar(f"GPU{g['index']}") for g in gpus]
            self.gpu_box.children = tuple(self.gpus)
        for bar, gpu in zip(self.gpus, gpus, strict=True):
            bar.value = gpu["util"]


def group_jobs(tasks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The rows of "my tasks": (task, members). A multi-node job is one row, at its first
    member's place, standing for the job by its lowest-ranked member shown; a single task
    has no members."""
    members: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        if task.get("job"):
            members.setdefault(str(task["job"]["id"]), []).append(task)
    rows: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for task in tasks:
        job = task.get("job")
        if not job:
            rows.append((task, []))
            continue
        group = members.pop(str(job["id"]), None)
        if group:
            group.sort(key=lambda m: int(m["job"]["rank"]))
            rows.append((group[0], group))
    return rows


class _TaskRow:
    def __init__(self, dashboard: Dashboard, task_id: str) -> None:
        self.task_id = task_id
        self.label = widgets.HTML(layout=widgets.Layout(width="520px"))
        self.kill = widgets.Button(
            description="kill", button_style="danger", layout=widgets.Layout(width="60px")
        )
        self.logs = widgets.Button(description="logs", layout=widgets.Layout(width="60px"))
        self.kill.on_click(lambda _button: dashboard.kill(task_id))
        self.logs.on_click(lambda _button: dashboard.show_logs(task_id))
        self.box = widgets.HBox([self.label, self.kill, self.logs])

    def update(self, task: Mapping[str, Any], members: list[dict[str, Any]] | None = None) -> None:
        """`members`: a multi-node job's members in rank order, shown as this one row (its
        kill ends the whole job, as killing any member does; logs are rank 0's)."""
        name = f" {html.escape(str(task['name']))}" if task.get("name") else ""
        if members:
            state = job_state(members)
            job = task["job"]
            parts = "; ".join(
                f"rank {m['job']['rank']} <code>{html.escape(str(m['id']))}</code> "
                f"{html.escape(str(m.get('state')))} on {html.escape(str(m.get('node') or '-'))}"
                for m in members
            )
            self.label.value = (
                f"<code>job {html.escape(str(job['id']))}</code>{name} "
                f"({job.get('size', len(members))} nodes, {html.escape(str(job.get('network')))}"
                f"): <span style='color:{_STATE_COLORS.get(state, 'inherit')}'>"
                f"{html.escape(state)}</span><br><small>{parts}</small>"
            )
            self.kill.disabled = all(is_terminal(m.get("state")) for m in members)
            return
        state = str(task.get("state"))
        color = _STATE_COLORS.get(state, "inherit")
        self.label.value = (
            f"<code>{html.escape(self.task_id)}</code>{name}: "
            f"<span style='color:{color}'>{html.escape(status_text(task))}</span>"
        )
        self.kill.disabled = is_terminal(state)


class Dashboard:
    """A live view of a River cluster. Display it (it is the cell's result), or `.widget`."""

    def __init__(
        self,
        client: Client,
        *,
        refresh: float = 5.0,
        history_refresh: float | None = None,
        history: int = HISTORY,
        max_tasks: int = MAX_TASKS,
        start: bool = True,
    ) -> None:
        self.client = client
        self.refresh_interval = refresh
        self.history_interval = max(refresh, 5.0) if history_refresh is None else history_refresh
        self._charts_due = 0.0
        self.charts = HistoryCharts(client)
        self.max_tasks = max_tasks
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events_client: Client | None = None
        self.nodes: dict[str, dict[str, Any]] = {}
        self.history: dict[str, deque[float]] = {}
        self._history_len = history
        self.tasks: dict[str, dict[str, Any]] = {}  # my tasks, by ID
        self.queue: list[dict[str, Any]] = []  # everyone's queued tasks, in queue order
        self.transitions: dict[str, list[str]] = {}
        self._task_seen_at: dict[str, float] = {}  # when each task's row was last written
        self.events = 0
        self.refreshes = 0
        self.error: str | None = None
        self.logs_for: str | None = None

        self.vps: dict[str, dict[str, Any]] = {}  # my VPSes, by ID
        self._node_rows: dict[str, _NodeRow] = {}
        self._task_rows: dict[str, _TaskRow] = {}
        self._vps_cards: dict[str, VpsCard] = {}
        self.vps_box = widgets.VBox()
        self.header = widgets.HTML()
        self.nodes_box = widgets.VBox()
        self.queue_html = widgets.HTML()
        self.tasks_box = widgets.VBox()
        self.logs_html = widgets.HTML()
        self.widget = widgets.VBox(
            [
                self.header,
                widgets.HTML("<b>Nodes</b>"),
                self.nodes_box,
                widgets.HTML("<b>History</b>"),
                self.charts.overview,
                widgets.HTML("<b>Queue</b>"),
                self.queue_html,
                widgets.HTML("<b>My tasks</b>"),
                self.tasks_box,
                self.logs_html,
                widgets.HTML("<b>My VPSes</b>"),
                self.vps_box,
            ]
        )
        if start:
            self.start()

    # ---- display ------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return (
            f"<river Dashboard {self.client.url}: {len(self.nodes)} nodes, {len(self.tasks)} tasks>"
        )

    # ---- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Load everything once, then keep it current from two daemon threads."""
        self._stop.clear()
        self._refresh_all(first=True)
        self._events_client = self.client.clone()
        for target, name in ((self._event_loop, "events"), (self._refresh_loop, "refresh")):
            thread = threading.Thread(target=target, name=f"river-dashboard-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the background threads (the widgets stay as they are)."""
        self._stop.set()
        if self._events_client is not None:
            self._events_client.close()  # wakes the event thread from its read
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def close(self) -> None:
        self.stop()
        self.widget.close()

    def refresh(self) -> None:
        """Re-read the cluster now and redraw every part (sending each widget's full state,
        also what did not change: a frontend that missed updates is whole again)."""
        self._refresh_all()
        self._refresh_charts()
        self.charts.send_state()
        with self._lock:
            parts: list[widgets.Widget] = [self.header, self.queue_html, self.logs_html]
            for node_row in self._node_rows.values():
                parts += [node_row.label, node_row.cpu, node_row.memory]
                parts += node_row.gpus
            for task_row in self._task_rows.values():
                parts += [task_row.label, task_row.kill]
            for widget in parts:
                widget.send_state()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ---- background work ----------------------------------------------------------------
    def _event_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            client = self._events_client
            assert client is not None
            try:
                for kind, data in client.events(keepalive=True):
                    if self._stop.is_set():
                        return
                    backoff = 0.5
                    if kind == "task":
                        self._apply_tasks([data["task"]])
                    elif kind == "node":
                        self._apply_nodes([data["node"]], sample=False)
                    else:
                        continue
                    self.events += 1
            except RiverError as exc:
                if self._stop.is_set():
                    return
                self._note_error(f"event stream: {exc}")
            except Exception as exc:  # a closed client mid-read, etc.
                if self._stop.is_set():
                    return
                self._note_error(f"event stream: {type(exc).__name__}: {exc}")
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, RECONNECT_MAX)
            self._guard(self._refresh_all)  # catch up on what the gap hid

    def _refresh_loop(self) -> None:
        self._guard(self._refresh_charts)  # here, not in start(): the cell returns at once
        while not self._stop.wait(self.refresh_interval):
            self._guard(self._refresh_all)
            if time.monotonic() >= self._charts_due:
                self._guard(self._refresh_charts)

    def _refresh_charts(self) -> None:
        """Re-read the host's history of every known node and the usage, and redraw."""
        self._charts_due = time.monotonic() + self.history_interval
        with self._lock:
            names = sorted(self.nodes)
        self.charts.refresh(names)

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except RiverError as exc:
            self._note_error(str(exc))

    def _note_error(self, message: str) -> None:
        with self._lock:
            self.error = message
            self._render_header()

    def _refresh_all(self, first: bool = False) -> None:
        client = self.client
        asked_at = time.monotonic()
        nodes = client.nodes()
        queue = client.tasks(all=True, state="queued")
        mine = client.tasks() if first else client.tasks(state="queued,assigning,running,paused")
        vpses = client.vps_list()
        with self._lock:
            self.queue = sorted(queue, key=lambda t: (t.get("queue_position") or 0, t["id"]))
            self.error = None
            self.refreshes += 1
        self._apply_nodes(nodes, sample=True)
        self._apply_tasks(mine[: self.max_tasks * 2] if first else mine, as_of=asked_at)
        self._apply_vps(vpses)

    # ---- state --------------------------------------------------------------------------
    def _apply_nodes(self, nodes: list[dict[str, Any]], *, sample: bool) -> None:
        with self._lock:
            for node in nodes:
                name = str(node.get("name"))
                self.nodes[name] = node
                if sample:
                    history = self.history.setdefault(name, deque(maxlen=self._history_len))
                    history.append(node_load(node)["cpu_percent"])
            self._render_nodes()
            self._render_header()

    def _apply_tasks(self, tasks: list[dict[str, Any]], *, as_of: float | None = None) -> None:
        """Write tasks into the view; `as_of` is when a listing was asked for.

        A listing asked for before an event arrived may still show the state the event
        replaced (running after completed), so such a task keeps the event's state.
        """
        now = time.monotonic()
        with self._lock:
            for task in tasks:
                task_id = str(task["id"])
                if as_of is not None and self._task_seen_at.get(task_id, -1.0) > as_of:
                    continue
                self._task_seen_at[task_id] = now
                seen = self.transitions.setdefault(task_id, [])
                if not seen or seen[-1] != task.get("state"):
                    seen.append(str(task.get("state")))
                self.tasks[task_id] = task
                if task.get("state") == "queued":
                    if all(q["id"] != task_id for q in self.queue):
                        self.queue.append(task)
                else:
                    self.queue = [q for q in self.queue if q["id"] != task_id]
            self._render_tasks()
            self._render_queue()
            self._render_header()

    def _apply_vps(self, vpses: list[dict[str, Any]]) -> None:
        with self._lock:
            self.vps = {str(v["id"]): v for v in vpses}
            self._render_vps()

    def _refresh_vps(self) -> None:
        """After a card changed its VPS (an app started): re-read the VPSes."""
        self._guard(lambda: self._apply_vps(self.client.vps_list()))

    def kill(self, task_id: str) -> dict[str, Any] | None:
        """What the kill button does: ask the host to end the task."""
        try:
            task = self.client.kill(task_id)
        except RiverError as exc:
            self._note_error(f"kill {task_id}: {exc}")
            return None
        self._apply_tasks([task])
        return task

    def show_logs(self, task_id: str) -> list[dict[str, Any]]:
        """What the logs button does: show the task's last lines under the table."""
        try:
            lines = self.client.handle(task_id).logs()
        except RiverError as exc:
            self._note_error(f"logs {task_id}: {exc}")
            return []
        # As a terminal shows them: chunks of a long line joined, progress bars at their
        # last state (river_runner.loglines).
        renderer, whole = LineRenderer(), []
        for line in lines:
            stream = str(line.get("stream", ""))
            if stream == "river":
                continue
            text = renderer.feed(stream, str(line.get("text", "")), bool(line.get("continued")))
            if text is not None:
                whole.append({**line, "text": text})
        shown = whole[-LOG_LINES:]
        text = "\n".join(
            ("! " if line.get("stream") == "stderr" else "") + line["text"] for line in shown
        )
        with self._lock:
            self.logs_for = task_id
            self.logs_html.value = (
                f"<b>Output of task {html.escape(task_id)}</b> (last {len(shown)} lines)"
                f"<pre style='max-height:20em;overflow:auto'>{html.escape(text)}</pre>"
            )
        return shown

    # ---- rendering (under the lock) ------------------------------------------------------
    def _render_header(self) -> None:
        online = sum(1 for n in self.nodes.values() if n.get("state") == "online")
        active = sum(1 for t in self.tasks.values() if not is_terminal(t.get("state")))
        error = (
            f" <span style='color:#c62828'>({html.escape(self.error)})</span>" if self.error else ""
        )
        self.header.value = (
            f"<b>River</b> {html.escape(self.client.url)}: {online}/{len(self.nodes)} nodes "
            f"online, {len(self.queue)} queued, {active} of my tasks active "
            f"<small>(updated {time.strftime('%H:%M:%S')})</small>{error}"
        )

    def _render_nodes(self) -> None:
        for name in sorted(self.nodes):
            row = self._node_rows.get(name)
            if row is None:
                row = self._node_rows[name] = _NodeRow(name, self.charts.sparkline(name))
            node = self.nodes[name]
            row.update(node, node_load(node))
        boxes = tuple(self._node_rows[name].box for name in sorted(self.nodes))
        if self.nodes_box.children != boxes:
            self.nodes_box.children = boxes

    def _render_queue(self) -> None:
        if not self.queue:
            self.queue_html.value = "<i>empty</i>"
            return
        rows = "".join(
            "<tr>"
            f"<td>{task.get('queue_position') or '-'}</td>"
            f"<td><code>{html.escape(str(task['id']))}</code></td>"
            f"<td>{html.escape(str(task.get('owner') or ''))}</td>"
            f"<td>{html.escape(str(task.get('name') or ''))}</td>"
            f"<td>{html.escape(str(task.get('wait_reason') or ''))}</td>"
            "</tr>"
            for task in self.queue[:50]
        )
        more = f"<i>... and {len(self.queue) - 50} more</i>" if len(self.queue) > 50 else ""
        self.queue_html.value = (
            "<table><thead><tr><th>#</th><th>id</th><th>owner</th><th>name</th>"
            f"<th>waiting for</th></tr></thead><tbody>{rows}</tbody></table>{more}"
        )

    def _shown_tasks(self) -> list[dict[str, Any]]:
        """Active tasks first, then the newest finished ones, at most max_tasks."""
        ordered = sorted(self.tasks.values(), key=lambda t: int(t["id"]), reverse=True)
        active = [t for t in ordered if not is_terminal(t.get("state"))]
        done = [t for t in ordered if is_terminal(t.get("state"))]
        return (active + done)[: self.max_tasks]

    def _render_tasks(self) -> None:
        grouped = group_jobs(self._shown_tasks())
        shown = [task for task, _ in grouped]
        for task, members in grouped:
            row = self._task_rows.get(task["id"])
            if row is None:
                row = self._task_rows[task["id"]] = _TaskRow(self, task["id"])
            row.update(task, members)
        keep = {t["id"] for t in shown}
        for task_id in [t for t in self._task_rows if t not in keep]:
            self._task_rows.pop(task_id).box.close()
        boxes = tuple(self._task_rows[t["id"]].box for t in shown)
        if self.tasks_box.children != boxes:
            self.tasks_box.children = boxes
        if not shown:
            self.tasks_box.children = (widgets.HTML("<i>no tasks yet</i>"),)

    def _render_vps(self) -> None:
        for vps_id, vps in self.vps.items():
            card = self._vps_cards.get(vps_id)
            if card is None:
                card = self._vps_cards[vps_id] = VpsCard(self.client, vps_id, self._refresh_vps)
            card.update(vps)
        for vps_id in [v for v in self._vps_cards if v not in self.vps]:
            self._vps_cards.pop(vps_id).box.close()
        if not self.vps:
            self.vps_box.children = (widgets.HTML("<i>no VPSes</i>"),)
            return
        boxes = tuple(self._vps_cards[v].box for v in sorted(self.vps, reverse=True))
        if self.vps_box.children != boxes:
            self.vps_box.children = boxes

    # ---- for tests and scripts -----------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """What the dashboard shows, as plain data (widget values included)."""
        with self._lock:
            nodes = []
            for name in sorted(self.nodes):
                node = self.nodes[name]
                row = self._node_rows.get(name)
                nodes.append(
                    {
                        "name": name,
                        "state": node.get("state"),
                        **node_load(node),
                        "history": list(self.history.get(name, ())),
                        "bars": {
                            "cpu": row.cpu.value if row else None,
                            "memory": row.memory.value if row else None,
                            "gpus": [bar.value for bar in row.gpus] if row else [],
                        },
                    }
                )
            return {
                "nodes": nodes,
                "queue": [
                    {k: t.get(k) for k in ("id", "owner", "name", "queue_position", "wait_reason")}
                    for t in self.queue
                ],
                "tasks": [
                    {k: t.get(k) for k in ("id", "name", "state", "node")}
                    for t in self._shown_tasks()
                ],
                "transitions": {k: list(v) for k, v in self.transitions.items()},
                "rows": {
                    task_id: {"label": row.label.value, "kill_disabled": row.kill.disabled}
                    for task_id, row in self._task_rows.items()
                },
                "vps": [
                    {
                        "id": vps_id,
                        "state": self.vps[vps_id].get("state"),
                        "label": card.label.value,
                        "links": card.links.value,
                        "note": card.note.value,
                        "ssh_disabled": card.ssh.disabled,
                    }
                    for vps_id, card in sorted(self._vps_cards.items(), reverse=True)
                ],
                "charts": self.charts.get_state(),
                "header": self.header.value,
                "logs_for": self.logs_for,
                "events": self.events,
                "refreshes": self.refreshes,
                "error": self.error,
                "running": self.running,
            }
