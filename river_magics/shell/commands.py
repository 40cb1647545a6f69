"""The user commands of `river` (login, submit, run, tasks, status, logs, kill, nodes, vps,
env; forward and attach from streams.py): each parses its arguments, talks to the host through the one `Client`, and prints a
table for people or JSON for scripts (`--json`).

Task options are the magics' own (river_magics/arguments.py `_add_task_options`, the
VPS options from river_magics/vps.py), so `river submit -c 2 -m 1G` means what
`%%river submit -c 2 -m 1G` means. Every ID may be a unique prefix or a name
(river_magics/resolve.py). Exit codes: 0 success, 1 the host refused or is unreachable,
2 bad usage; `river run` exits with the task's own code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from river_runner.loglines import LineRenderer

from ..arguments import (
    _add_env_commands,
    _add_task_options,
    check_job,
    check_request,
    count_arg,
    env_name_arg,
    memory_arg,
    target_arg,
    time_arg,
)
from ..client import Client, TaskHandle, is_terminal
from ..common import normalize_url
from ..display import nodes_bundle, status_text, task_bundle, tasks_bundle
from ..environments import environments_bundle
from ..errors import RiverError
from ..launch import Follower, job_options, task_options, write_line
from ..share_view import share_bundle
from ..usage import UsageError
from ..vps import _create_body, add_vps_commands, vps_bundle
from ..vps_apps import ssh_command, ssh_config, start_jupyter, start_tensorboard, terminal_url
from . import config
from .files import COMMANDS as FILE_COMMANDS
from .follow import INTERRUPTED, exit_code, follow, note
from .parsing import ShellParser, connection_options, split_command
from .payload_files import file_pushes, pull_targets, push_files, write_pulled
from .streams import COMMANDS as STREAM_COMMANDS

Command = Callable[[list[str]], int]


def _client(args: argparse.Namespace) -> Client:
    url, token = config.connection(args.url, args.token)
    return Client(url, token)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _show(args: argparse.Namespace, value: Any, bundle: dict[str, str]) -> None:
    if args.json:
        _print_json(value)
    else:
        print(bundle["text/plain"])


def guarded(name: str, body: Callable[[list[str]], int]) -> Command:
    """Turn a command body into an entry point whose failures are one line on stderr:
    exit 2 for usage, 1 for the host's (or the network's) refusal, 130 for Ctrl+C."""

    def command(argv: list[str]) -> int:
        try:
            return body(argv)
        except UsageError as exc:
            print(f"river {name}: {exc}", file=sys.stderr)
            return 2
        except (RiverError, TimeoutError) as exc:
            print(f"river {name}: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # a spec the client checks before sending (mounts, ...)
            print(f"river {name}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"river {name}: interrupted", file=sys.stderr)
            return INTERRUPTED

    command.__name__ = f"{name}_command"
    command.__doc__ = body.__doc__
    return command


# ---- login ------------------------------------------------------------------------------


def _login(argv: list[str]) -> int:
    """river login [URL] [--token T | --user NAME]"""
    parser = ShellParser(
        prog="river login",
        description="Check a host and token and save them (0600) for the next commands. "
        "With --user, trade the user's password (asked for, or --password-stdin) for a "
        f"new API token. The file: {config.config_path()}",
    )
    parser.add_argument("url", nargs="?", metavar="URL", help="default: $RIVER_URL, the saved one")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--token", metavar="T", help="an API token (default: $RIVER_TOKEN)")
    who.add_argument("--user", metavar="NAME", help="log in with this user's password")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (scripts)"
    )
    args = parser.parse_args(argv)
    url, token = config.connection(args.url, None if args.user else args.token)
    url = normalize_url(url)[0]
    if args.user:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"Password for {args.user} at {url}: ")
        with Client(url) as anonymous:
            token = anonymous.login(args.user, password, label="river login")
    if not token:
        raise UsageError("give --token T or --user NAME (or set RIVER_TOKEN)")
    with Client(url, token) as client:
        me = client.me()
    path = config.save(url, token)
    print(f"Logged in to {url} as {me['name']} ({me['role']}); saved in {path}")
    return 0


# ---- submit and run -------------------------------------------------------------------------


def _task_parser(prog: str, description: str) -> ShellParser:
    parser = ShellParser(
        prog=prog,
        usage=f"{prog} [options] (SCRIPT [ARGS ...] | -- COMMAND [ARGS ...])",
        description=description,
        parents=[connection_options()],
    )
    _add_task_options(parser)
    parser.add_argument(
        "--shell", action="store_true", help="run COMMAND through /bin/sh -c (pipes, &&, globs)"
    )
    parser.add_argument(
        "script",
        nargs="?",
        metavar="SCRIPT",
        help="a script file: Python (.py or a python "
        "#! line) runs as a River Python task, anything else through its #! interpreter "
        "(default /bin/sh)",
    )
    parser.add_argument(
        "--push",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a Python SCRIPT gets FILE's bytes as its variable NAME; a command finds FILE "
        "at NAME (a relative path) in its working directory (repeatable)",
    )
    parser.add_argument(
        "--pull",
        action="append",
        default=[],
        metavar="NAME[=FILE]",
        help="river run: after success, write the script's variable NAME to FILE "
        "(default NAME): bytes and text as they are, other values pickled (repeatable)",
    )
    parser.add_argument("script_args", nargs="*", metavar="ARGS", help="arguments for SCRIPT")
    return parser


def _what(args: argparse.Namespace, command: list[str] | None) -> dict[str, Any]:
    """The task's body: the command after `--`, or the script file's text."""
    if command is not None:
        if args.script:
            raise UsageError("give a SCRIPT file or a command after `--`, not both")
        if not command:
            raise UsageError("nothing after `--`: give the command to run")
        return {"command": " ".join(command) if args.shell else command}
    if not args.script:
        raise UsageError("give a SCRIPT file, or a command after `--` (river run -- hostname)")
    path = Path(args.script)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the script {path}: {exc}") from None
    first = text.splitlines()[0] if text else ""
    shebang = first[2:].split() if first.startswith("#!") else []
    if path.suffix == ".py" or any("python" in word for word in shebang[:2]):
        if args.script_args:
            raise UsageError("a Python script takes no ARGS here; pass values with --env")
        return {"script": text}
    interpreter = shebang or ["/bin/sh"]
    return {"command": [*interpreter, "-c", text, path.name, *args.script_args]}


def _submit_handles(
    client: Client, args: argparse.Namespace, what: dict[str, Any]
) -> tuple[list[TaskHandle], list[str] | None]:
    """Submit one task, an --array, or one per -t target; the handles and their labels."""
    options = task_options(args)
    if "script" not in what:  # a command: --push NAME=FILE places FILE at NAME in its dir
        if args.pull:
            raise UsageError("--pull works with a Python SCRIPT (.py), not a command")
        if args.push:
            options.update(files=file_pushes(args.push))
    elif args.push or args.pull:  # the magic's --push/--pull, with files (payload_files.py)
        options.update(push=push_files(args.push), pull=list(pull_targets(args.pull)))
    if getattr(args, "nodes", None) is not None:
        group = client.submit(**what, **options, **job_options(args))
        return list(group.handles), list(group.labels)
    if args.array:
        group = client.submit_array(args.array, target=args.target, **what, **options)
        return list(group.handles), list(group.labels)
    if len(args.targets) > 1:
        handles: list[TaskHandle] = []
        try:
            for target in args.targets:
                handles.append(client.submit(target=target, **what, **options))
        except BaseException:
            for handle in handles:
                handle.kill()
            raise
        return handles, list(args.targets)
    return [client.submit(target=args.target, **what, **options)], None


def _parse_task_args(parser: ShellParser, argv: list[str]) -> tuple[argparse.Namespace, dict]:
    before, command = split_command(argv)
    args = parser.parse_args(before)
    args.target = args.targets[0] if len(args.targets) == 1 else None
    if args.array and len(args.targets) > 1:
        raise UsageError("give either --array or several -t targets, not both")
    check_job(args)
    check_request(args)
    return args, _what(args, command)


def _submit(argv: list[str]) -> int:
    """river submit [options] (SCRIPT | -- COMMAND): queue and print the ID (like sbatch)."""
    parser = _task_parser(
        "river submit",
        "Queue a task and print its ID at once (like sbatch); follow it with "
        "`river logs ID -f`. --detach is the default here (accepted for the magic's sake).",
    )
    args, what = _parse_task_args(parser, argv)
    if args.pull:
        raise UsageError(
            "--pull needs the task's end: use `river run --pull ...`, which waits for it"
        )
    with _client(args) as client:
        handles, _labels = _submit_handles(client, args, what)
        if args.json:
            _print_json([h.last for h in handles] if len(handles) > 1 else handles[0].last)
        else:
            for handle in handles:
                print(handle.id)
    return 0


def _run(argv: list[str]) -> int:
    """river run [options] (SCRIPT | -- COMMAND): stream the output, exit with its code."""
    parser = _task_parser(
        "river run",
        "Run a task and stream its output here (like srun); exit with the task's exit "
        "code. Ctrl+C kills the task. --detach prints the ID and returns.",
    )
    args, what = _parse_task_args(parser, argv)
    if args.pull and (args.detach or args.array or len(args.targets) > 1):
        raise UsageError(
            "--pull brings back one task's values: not with --detach, --array or -t -t"
        )
    with _client(args) as client:
        handles, labels = _submit_handles(client, args, what)
        if args.detach:
            for handle in handles:
                print(handle.id)
            return 0
        if args.json:
            raise UsageError("river run streams text; use `river submit --json` for the record")
        note(f"task {', '.join(h.id for h in handles)} submitted")
        code = follow(client, handles, labels)
        if args.pull and code == 0:
            write_pulled(handles[0].result(), pull_targets(args.pull))
        return code


# ---- tasks ----------------------------------------------------------------------------------


def _tasks(argv: list[str]) -> int:
    """river tasks [--all] [--state S,S]"""
    parser = ShellParser(
        prog="river tasks",
        parents=[connection_options()],
        description="Your tasks, newest first (--all: everyone's).",
    )
    parser.add_argument("-a", "--all", action="store_true", help="all users' tasks")
    parser.add_argument("--state", metavar="S[,S]", help="only these states, e.g. queued,running")
    args = parser.parse_args(argv)
    with _client(args) as client:
        tasks = client.tasks(all=args.all, state=args.state)
    _show(args, tasks, tasks_bundle(tasks))
    return 0


def _id_parser(prog: str, description: str, many: bool = False) -> ShellParser:
    parser = ShellParser(prog=prog, description=description, parents=[connection_options()])
    parser.add_argument(
        "ids" if many else "id",
        nargs="+" if many else None,
        metavar="ID",
        help="a task ID, a unique prefix of one, or the task's name",
    )
    return parser


def _status(argv: list[str]) -> int:
    """river status ID"""
    args = _id_parser("river status", "One task's record.").parse_args(argv)
    with _client(args) as client:
        task = client.task(client.resolve_task(args.id))
    _show(args, task, task_bundle(task))
    return 0


def _logs(argv: list[str]) -> int:
    """river logs ID [-f]"""
    parser = _id_parser("river logs", "A task's output so far (-f: until it ends).")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    args = parser.parse_args(argv)
    with _client(args) as client:
        handle = client.handle(client.resolve_task(args.id))
        if not args.follow:
            lines = handle.logs()
            if args.json:
                _print_json(lines)
                return 0
            renderer = LineRenderer()
            for line in lines:
                write_line(line, renderer=renderer)
            return 0
        if args.json:
            for _kind, line in ((k, d) for k, d in handle.watch() if k == "log"):
                print(json.dumps(line), flush=True)
            return 0
        try:
            task = Follower(handle, None).run()
        except KeyboardInterrupt:
            note(f"stopped following task {handle.id} (it keeps running)")
            return INTERRUPTED
        note(f"task {handle.id} {status_text(task or {})}")
        return exit_code(task)


def _kill(argv: list[str]) -> int:
    """river kill ID [ID ...]"""
    args = _id_parser("river kill", "Kill tasks (queued ones end at once).", many=True).parse_args(
        argv
    )
    failed = 0
    killed: list[dict[str, Any]] = []
    with _client(args) as client:
        for ref in args.ids:
            try:
                task = client.kill(client.resolve_task(ref))
            except RiverError as exc:
                print(f"river kill: {ref}: {exc}", file=sys.stderr)
                failed += 1
                continue
            killed.append(task)
            if not args.json:
                verb = "killed" if is_terminal(task.get("state")) else "kill requested"
                print(f"task {task['id']}: {verb} ({status_text(task)})")
    if args.json:
        _print_json(killed)
    return 1 if failed else 0


def _listing(
    name: str,
    description: str,
    fetch: Callable[[Client], Any],
    bundle: Callable[[Any], dict[str, str]],
) -> Command:
    """A read-only `river NAME` that fetches one listing and shows it.

    nodes and share differ only in what they fetch and how it prints; one builder keeps
    their options, exit code and --json output the same.
    """

    def command(argv: list[str]) -> int:
        parser = ShellParser(
            prog=f"river {name}", parents=[connection_options()], description=description
        )
        args = parser.parse_args(argv)
        with _client(args) as client:
            value = fetch(client)
        _show(args, value, bundle(value))
        return 0

    command.__doc__ = f"river {name}"
    return command


_nodes = _listing(
    "nodes", "The nodes and their free resources.", lambda client: client.nodes(), nodes_bundle
)
_share = _listing(
    "share",
    "Fair share: each user's recent usage, share and queue priority.",
    lambda client: client.share(),
    share_bundle,
)


def _vps(argv: list[str]) -> int:
    """river vps create|list|status|stop|restart|pause|resume|snapshot|delete ..."""
    parser = ShellParser(prog="river", description="Persistent machines (docs/vps.md).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_vps_commands(sub, count_arg, memory_arg, target_arg, time_arg)
    _add_connection_options(sub.choices["vps"])
    args = parser.parse_args(["vps", *argv])
    action = args.vps_command
    with _client(args) as client:
        ident = client.resolve_vps(args.id) if getattr(args, "id", None) else None
        if action == "list":
            items = client.vps_list(all_users=args.all)
            _show(args, items, vps_bundle(items))
        elif action == "create":
            vps = client.vps_create(**_create_body(args))
            if args.json:
                _print_json(vps)
            else:
                print(f"VPS {vps['id']}: {vps['state']}")
                if vps.get("private_key"):
                    note("private key (shown once; River does not keep it) follows")
                    print(vps["private_key"])
        elif action == "status":
            vps = client.vps(ident)
            _show(args, vps, vps_bundle([vps]))
        elif action == "delete":
            answer = client.vps_delete(ident)
            _show(args, answer, {"text/plain": f"VPS {ident}: deleted, with its snapshots"})
        elif action == "snapshots":
            if args.delete is not None:
                client.vps_delete_snapshot(ident, args.delete)
            found = client.vps_snapshots(ident)
            text = "\n".join(f"{s['number']}  {s['image']}" for s in found) or "no snapshots"
            _show(args, found, {"text/plain": text})
        elif action in ("ssh", "ssh-config"):
            vps = client.vps(ident)
            print(ssh_command(client, vps) if action == "ssh" else ssh_config(client, vps))
        elif action == "terminal":
            client.vps(ident)
            print(terminal_url(client, ident))
        elif action == "jupyter":
            print(start_jupyter(client, ident, args.port))
        elif action == "tensorboard":
            print(start_tensorboard(client, ident, args.logdir, args.port))
        else:
            vps = client.vps_action(ident, action)
            _show(args, vps, {"text/plain": f"VPS {ident}: {action} ({vps.get('state')})"})
    return 0


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Give each ACTION of `parser` the shared options, so they go after it
    (`river vps list --json`)."""
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for child in getattr(action, "choices", {}).values():
            for option in connection_options()._actions:
                child._add_action(option)


def _env(argv: list[str]) -> int:
    """river env list|show|create|exec|export|delete"""
    parser = ShellParser(prog="river", description="Container environments (docs/docker.md).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_env_commands(sub)  # the magic's own definitions: `%river env ...`
    actions = sub.choices["env"]._subparsers._group_actions[0]  # type: ignore[union-attr]
    show = actions.add_parser("show", help="one environment's record")
    show.add_argument("name", type=env_name_arg, metavar="NAME")
    _add_connection_options(sub.choices["env"])
    before, command = split_command(argv)
    args = parser.parse_args(["env", *before])
    action = args.env_command
    with _client(args) as client:
        if action == "list":
            envs = client.environments()
            _show(args, envs, environments_bundle(envs))
        elif action == "show":
            env = client.environment(args.name)
            _show(args, env, environments_bundle([env]))
        elif action == "create":
            env = client.create_environment(args.name, args.image)
            text = f"environment {env['name']} running (from {env.get('image')})"
            _show(args, env, {"text/plain": text})
        elif action == "exec":
            words = [*args.cmd, *(command or [])]
            if not words:
                raise UsageError("give the command after `--`: river env exec NAME -- COMMAND")
            result = client.exec_environment(args.name, " ".join(words))
            if args.json:
                _print_json(result)
            else:
                sys.stdout.write(result.get("output") or "")
            return min(int(result.get("exit_code") or 0), 255)
        elif action == "export":
            env = client.export_environment(args.name)
            path = (env.get("exported") or {}).get("path")
            _show(args, env, {"text/plain": f"environment {env['name']} exported to {path}"})
        else:  # delete
            result = client.delete_environment(args.name, tarball=args.tarball)
            removed = " and ".join(result.get("removed") or []) or "nothing"
            _show(args, result, {"text/plain": f"environment {args.name}: removed {removed}"})
    return 0


COMMANDS: dict[str, Command] = {
    name: guarded(name, body)
    for name, body in (
        ("login", _login),
        ("submit", _submit),
        ("run", _run),
        ("tasks", _tasks),
        ("status", _status),
        ("logs", _logs),
        ("kill", _kill),
        ("nodes", _nodes),
        ("share", _share),
        ("vps", _vps),
        ("env", _env),
        *STREAM_COMMANDS.items(),
        *FILE_COMMANDS.items(),
    )
}
