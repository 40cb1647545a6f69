"""`%river` and `%%river`: the notebook face of River (design §5).

Errors users can fix (bad arguments, a refused request, an unreachable host) become
UsageError: IPython prints one line, no traceback, and "Run All" stops there. A remote
task that fails is not an error of the cell: its status line says so and the cell ends.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from river_runner.protocol import EVENT_LOG

from .arguments import HelpShown, build_parser, parse_line
from .client import Client, TaskHandle, is_terminal
from .display import StatusLine, nodes_bundle, show, status_text, task_bundle, tasks_bundle
from .errors import RiverError

# How long an interrupted cell waits for its killed task to end before giving up.
KILL_WAIT = 10.0


def _write_line(line: dict[str, Any]) -> None:
    """Print one remote line to the matching local stream, at once."""
    out = sys.stderr if line.get("stream") == "stderr" else sys.stdout
    text = str(line.get("text", ""))
    out.write(text if text.endswith("\n") else text + "\n")
    out.flush()


class _Follower:
    """Prints a task's lines and keeps its status line current; resumable after a stop."""

    def __init__(self, handle: TaskHandle, status: StatusLine | None) -> None:
        self.handle = handle
        self.status = status
        self.last_seq = 0
        self.task: dict[str, Any] | None = handle.last

    def run(self, timeout: float | None = None) -> dict[str, Any] | None:
        for kind, data in self.handle.watch(since=self.last_seq, timeout=timeout):
            if kind == EVENT_LOG:
                self.last_seq = max(self.last_seq, int(data.get("seq", 0)))
                _write_line(data)
            else:
                self.task = data
                if self.status is not None:
                    self.status.show(data)
        return self.task


@magics_class
class RiverMagics(Magics):
    """One magic, `%river SUBCOMMAND`, plus `%%river submit` for remote cells."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self._client: Client | None = None
        self._parser = build_parser()

    @property
    def client(self) -> Client:
        """The connected client; made from RIVER_URL/RIVER_TOKEN on first use."""
        if self._client is None:
            self._client = Client()
        return self._client

    @line_cell_magic
    def river(self, line: str, cell: str | None = None) -> Any:
        """Drive a River cluster: `%river --help` lists the commands."""
        try:
            args = parse_line(self._parser, line)
        except HelpShown:
            return None
        if cell is not None and args.command != "submit":
            raise UsageError(f"only `%%river submit` takes a cell; use `%river {args.command}`")
        if args.command == "submit" and cell is None:
            raise UsageError("submit runs a cell: put `%%river submit` on a cell's first line")
        try:
            return getattr(self, f"_do_{args.command}")(args, cell)
        except RiverError as exc:
            raise UsageError(str(exc)) from None

    # -- subcommands ------------------------------------------------------------------

    def _do_connect(self, args: argparse.Namespace, cell: str | None) -> None:
        client = Client(args.url, args.token)
        try:
            nodes = client.nodes()
        except RiverError:
            client.close()
            raise
        if self._client is not None:
            self._client.close()
        self._client = client
        online = [n for n in nodes if n.get("state") == "online"]
        cores = sum(int((n.get("free") or {}).get("cores") or 0) for n in online)
        print(
            f"Connected to {client.url}: {len(online)} of {len(nodes)} node(s) online, "
            f"{cores} core(s) free"
        )

    def _do_nodes(self, args: argparse.Namespace, cell: str | None) -> None:
        show(nodes_bundle(self.client.nodes()))

    def _do_tasks(self, args: argparse.Namespace, cell: str | None) -> None:
        show(tasks_bundle(self.client.tasks(all=args.all, state=args.state)))

    def _do_status(self, args: argparse.Namespace, cell: str | None) -> None:
        show(task_bundle(self.client.task(args.id)))

    def _do_logs(self, args: argparse.Namespace, cell: str | None) -> None:
        handle = self.client.handle(args.id)
        if not args.follow:
            for line in handle.logs():
                _write_line(line)
            return
        follower = _Follower(handle, None)
        try:
            task = follower.run()
        except KeyboardInterrupt:
            print(
                f"Stopped following task {handle.id} (it keeps running; kill it with "
                f"%river kill {handle.id})"
            )
            return
        if task is not None:
            print(f"task {handle.id}: {status_text(task)}")

    def _do_kill(self, args: argparse.Namespace, cell: str | None) -> None:
        task = self.client.kill(args.id)
        verb = "killed" if is_terminal(task.get("state")) else "kill requested"
        print(f"task {args.id}: {verb} ({status_text(task)})")

    def _do_pause(self, args: argparse.Namespace, cell: str | None) -> None:
        task = self.client.pause(args.id)
        print(f"task {args.id}: {status_text(task)}")

    def _do_resume(self, args: argparse.Namespace, cell: str | None) -> None:
        task = self.client.resume(args.id)
        print(f"task {args.id}: {status_text(task)}")

    def _do_run(self, args: argparse.Namespace, cell: str | None) -> TaskHandle | None:
        command: str | list[str] = args.shell_command if args.shell else list(args.cmd)
        return self._launch(args, command=command)

    def _do_submit(self, args: argparse.Namespace, cell: str | None) -> TaskHandle | None:
        if not cell or not cell.strip():
            raise UsageError("the cell is empty: write the Python code to run below %%river submit")
        return self._launch(args, script=cell)

    # -- submission and streaming -----------------------------------------------------

    def _launch(self, args: argparse.Namespace, **what: Any) -> TaskHandle | None:
        handle = self.client.submit(
            name=args.name,
            cores=args.cores,
            memory=args.memory,
            gpus=args.gpus,
            target=args.target,
            env=dict(args.env) or None,
            workdir=args.workdir,
            **what,
        )
        if args.detach:
            state = (handle.last or {}).get("state", "submitted")
            print(f"task {handle.id} {state}; follow it with %river logs {handle.id} --follow")
            return handle
        status = StatusLine()
        if handle.last:
            status.show(handle.last)
        follower = _Follower(handle, status)
        try:
            follower.run()
        except KeyboardInterrupt:
            self._cancel(follower)
        return None

    def _cancel(self, follower: _Follower) -> None:
        """Kernel interrupt while waiting: kill the task and say how it ended."""
        handle, status = follower.handle, follower.status
        try:
            try:
                task = handle.kill()
            except RiverError as exc:  # e.g. it ended just now; say how
                task = handle.info()
                if not is_terminal(task.get("state")):
                    raise exc from None
            if status is not None:
                status.show(task)
            if not is_terminal(task.get("state")):
                task = follower.run(timeout=KILL_WAIT) or task
        except (KeyboardInterrupt, TimeoutError):
            task = handle.last or {}
        except RiverError as exc:
            print(f"Interrupted: could not kill task {handle.id}: {exc}", file=sys.stderr)
            return
        state = task.get("state", "unknown")
        if state == "killed":
            print(f"Interrupted: task {handle.id} killed")
        elif is_terminal(state):
            print(f"Interrupted: task {handle.id} ended as {state}")
        else:
            print(
                f"Interrupted: kill requested for task {handle.id}, still {state}; "
                f"check with %river status {handle.id}"
            )
