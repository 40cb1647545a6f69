"""`%river` and `%%river`: the notebook face of River (design §5).

Errors users can fix (bad arguments, a refused request, an unreachable host) become
UsageError: IPython prints one line, no traceback, and "Run All" stops there. A remote
task that fails is not an error of the cell: its status line says so and the cell ends.
"""

from __future__ import annotations

import argparse
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from river_runner.loglines import LineRenderer

from .arguments import HelpShown, build_parser, parse_line
from .client import Client, TaskGroup, TaskHandle, is_terminal
from .display import nodes_bundle, show, status_text, task_bundle, tasks_bundle
from .environments import run_env_command
from .errors import RiverError
from .launch import Follower, launch, write_line
from .overlay import run_ip_command, run_overlay_command
from .share_view import share_bundle
from .vps import run_open_command, run_vps_command


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

    def _do_login(self, args: argparse.Namespace, cell: str | None) -> None:
        """Connect with --token, or trade a user name and password for a new API token."""
        url = args.url or (self._client.url if self._client is not None else None)
        token = args.token
        if not token:
            import getpass

            name = args.user or input("River user name: ").strip()
            with Client(url) as anonymous:
                token = anonymous.login(name, getpass.getpass(f"Password for {name}: "))
        self._do_connect(argparse.Namespace(url=url, token=token), None)
        me = self.client.me()
        print(f"Logged in as {me['name']} ({me['role']})")

    def _do_nodes(self, args: argparse.Namespace, cell: str | None) -> None:
        show(nodes_bundle(self.client.nodes()))

    def _do_share(self, args: argparse.Namespace, cell: str | None) -> None:
        show(share_bundle(self.client.share()))

    def _do_tasks(self, args: argparse.Namespace, cell: str | None) -> None:
        show(tasks_bundle(self.client.tasks(all=args.all, state=args.state)))

    def _do_status(self, args: argparse.Namespace, cell: str | None) -> None:
        show(task_bundle(self.client.task(self.client.resolve_task(args.id))))

    def _do_logs(self, args: argparse.Namespace, cell: str | None) -> None:
        handle = self.client.handle(self.client.resolve_task(args.id))
        if not args.follow:
            renderer = LineRenderer()
            for line in handle.logs():
                write_line(line, renderer=renderer)
            return
        follower = Follower(handle, None)
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
        args.id = self.client.resolve_task(args.id)
        task = self.client.kill(args.id)
        verb = "killed" if is_terminal(task.get("state")) else "kill requested"
        print(f"task {args.id}: {verb} ({status_text(task)})")

    def _do_pause(self, args: argparse.Namespace, cell: str | None) -> None:
        args.id = self.client.resolve_task(args.id)
        task = self.client.pause(args.id)
        print(f"task {args.id}: {status_text(task)}")

    def _do_resume(self, args: argparse.Namespace, cell: str | None) -> None:
        args.id = self.client.resolve_task(args.id)
        task = self.client.resume(args.id)
        print(f"task {args.id}: {status_text(task)}")

    def _do_env(self, args: argparse.Namespace, cell: str | None) -> None:
        run_env_command(self.client, args)

    def _do_overlay(self, args: argparse.Namespace, cell: str | None) -> None:
        run_overlay_command(self.client, args)

    def _do_vps(self, args: argparse.Namespace, cell: str | None) -> None:
        run_vps_command(self.client, args)

    def _do_open(self, args: argparse.Namespace, cell: str | None) -> None:
        run_open_command(self.client, args)

    def _do_ip(self, args: argparse.Namespace, cell: str | None) -> None:
        run_ip_command(self.client, args)

    def _do_run(self, args: argparse.Namespace, cell: str | None) -> TaskHandle | None:
        command: str | list[str] = args.shell_command if args.shell else list(args.cmd)
        return self._launch(args, command=command)

    def _do_submit(self, args: argparse.Namespace, cell: str | None) -> TaskHandle | None:
        if not cell or not cell.strip():
            raise UsageError("the cell is empty: write the Python code to run below %%river submit")
        return self._launch(args, script=cell)

    # -- submission and streaming (river_magics/launch.py) ------------------------------

    def _launch(self, args: argparse.Namespace, **what: Any) -> TaskHandle | TaskGroup | None:
        return launch(self.client, args, self.shell.user_ns if self.shell else {}, **what)

    # -- dashboard --------------------------------------------------------------------

    def _do_dashboard(self, args: argparse.Namespace, cell: str | None) -> Any:
        try:
            from river_widgets import Dashboard
        except ImportError as exc:  # ipywidgets missing
            raise UsageError(
                f"the dashboard needs ipywidgets ({exc}); pip install 'jupyter-river[notebook]'"
            ) from None
        return Dashboard(self.client.clone(), refresh=args.refresh)
