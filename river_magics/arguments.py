"""Argument parsing for `%river` / `%%river`: argparse whose errors become UsageErrors.

Validation of resources (target, memory, GPU counts) uses river_runner.spec, the same
parser the host uses, so a typo is refused here, before any request, with the message the
host would give.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any, NoReturn

from river_runner.containers import parse_env_name, parse_mount
from river_runner.durations import parse_duration
from river_runner.ids import parse_id
from river_runner.spec import SpecError, parse_memory, parse_request, parse_target
from river_runner.wire.fields import parse_python

from .common import parse_array
from .errors import RiverError
from .overlay import add_overlay_commands
from .usage import UsageError
from .vps import add_vps_commands

RUN_USAGE = "%river run [options] -- CMD [ARGS ...]"
_SEPARATOR = re.compile(r"(?:^|\s)--(?:\s+|$)")


class HelpShown(Exception):
    """`--help` was printed: the magic returns without doing anything else."""


class MagicArgumentParser(argparse.ArgumentParser):
    """Raises UsageError instead of exiting, so users see a message, never a traceback."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError((message or "invalid arguments").strip())
        if message:
            print(message, end="")
        raise HelpShown()


def _spec_type(parse: Any) -> Any:
    """Wrap a river_runner.spec parser as an argparse type that keeps the spec's message."""

    def convert(text: str) -> str:
        try:
            parse(text)
        except SpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    convert.__name__ = parse.__name__
    return convert


memory_arg = _spec_type(parse_memory)
target_arg = _spec_type(parse_target)
python_arg = _spec_type(parse_python)  # a path or a name: the node resolves it


def task_id_arg(text: str) -> str:
    try:
        return str(parse_id(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative (got {value})")
    return value


def array_arg(text: str) -> str:
    try:
        parse_array(text)
    except RiverError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def names_arg(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give variable names, e.g. x,y")
    for name in names:
        if not name.isidentifier():
            raise argparse.ArgumentTypeError(f"{name!r} is not a variable name")
    return names


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {value:g})")
    return value


def time_arg(text: str) -> float:
    """`--time 2h`: seconds, parsed as the host parses `time_limit`, so a typo is a usage
    error before any request."""
    try:
        return parse_duration(text, "--time")
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def env_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"environment variables look like KEY=VALUE, not {text!r}")
    return key, value


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `submit`: what the task needs and how to wait for it."""
    parser.add_argument(
        "-t",
        "--target",
        dest="targets",
        type=target_arg,
        action="append",
        default=[],
        metavar="NODE[:NUMA][::GPU,GPU]",
        help="where to run; repeat for one task per target",
    )
    parser.add_argument(
        "--array",
        type=array_arg,
        metavar="SPEC",
        help="one task per index, e.g. 0-31%%4 (32 tasks, at most 4 at a time); each "
        "task sees RIVER_ARRAY_INDEX",
    )
    parser.add_argument("-c", "--cores", type=count_arg, default=1, help="CPU cores (default 1)")
    parser.add_argument("-m", "--memory", type=memory_arg, metavar="SIZE", help="e.g. 512M, 8G")
    parser.add_argument("--gpus", type=count_arg, default=0, metavar="N", help="GPU count")
    parser.add_argument(
        "--nodes",
        type=count_arg,
        metavar="N",
        help="a multi-node job: N members on distinct nodes, started and ended together; "
        "each gets -c/-m and sees MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE",
    )
    parser.add_argument(
        "--gpus-per-node",
        type=count_arg,
        metavar="G",
        help="GPUs of each member of a --nodes job",
    )
    parser.add_argument(
        "--network",
        choices=("overlay", "host"),
        help="a --nodes job's network: overlay (default; each member at its own overlay "
        "address) or host (members in their nodes' own network, a port River picks)",
    )
    parser.add_argument(
        "--launcher",
        choices=("torchrun",),
        help="a --nodes job's launcher: torchrun runs each member's script as "
        "python -m torch.distributed.run with the job's rendezvous",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=count_arg,
        metavar="K",
        help="processes torchrun starts on each member (at most its GPUs, else its cores)",
    )
    parser.add_argument("--name", help="a label shown in %%river tasks")
    parser.add_argument(
        "--time",
        type=time_arg,
        metavar="LIMIT",
        help="time limit, e.g. 90m, 2h, 1d or seconds: at the limit SIGTERM, then SIGKILL "
        "after the host's grace, and the task ends `timeout` (default: your role's)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="queue priority (default 0): higher goes first, up to what your role allows",
    )
    parser.add_argument(
        "--preemptible",
        action="store_true",
        help="let a higher-priority or under-share task displace it (SIGTERM, then requeued)",
    )
    parser.add_argument(
        "-e",
        "--env",
        type=env_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the task (repeat for several)",
    )
    parser.add_argument("-w", "--workdir", metavar="DIR", help="working directory on the node")
    box = parser.add_mutually_exclusive_group()
    box.add_argument("--image", metavar="IMG", help="run in a container of this docker image")
    box.add_argument(
        "--environment",
        metavar="NAME",
        type=env_name_arg,
        help="run in an exported River environment (%%river env export NAME)",
    )
    parser.add_argument(
        "--mount",
        type=mount_arg,
        action="append",
        default=[],
        metavar="SRC:DST[:ro]",
        help="bind-mount a node path into the container (repeat for several)",
    )
    parser.add_argument(
        "--privileged", action="store_true", help="privileged container (operators only)"
    )
    parser.add_argument(
        "--ip-token",
        metavar="TOKEN",
        help="give the task the overlay address reserved with %%river ip reserve",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="return a TaskHandle at once instead of streaming the output",
    )
    parser.add_argument(
        "--bind-kernel",
        action="store_true",
        help="kill the task when this notebook kernel shuts down or dies (a lease the "
        "kernel renews); default: it runs on, detached from the kernel",
    )


def mount_arg(text: str) -> str:
    try:
        return parse_mount(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def env_name_arg(text: str) -> str:
    try:
        return parse_env_name(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_env_commands(sub: Any) -> None:
    """`%river env create|list|exec|export|delete`: container environments on the host."""
    env = sub.add_parser(
        "env",
        help="container environments: build on the host, export, use with --environment",
        description="Build a container environment on the host, export it to shared storage "
        "and run tasks in it with --environment NAME.",
    )
    actions = env.add_subparsers(dest="env_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="environments and their exported tarballs")
    create = actions.add_parser("create", help="start an environment container from an image")
    create.add_argument("name", type=env_name_arg, metavar="NAME")
    create.add_argument("--image", required=True, metavar="IMG", help="the image to start from")
    run = actions.add_parser(
        "exec",
        usage="%(prog)s NAME -- COMMAND",
        help="run a shell command in the environment container",
        description="Run COMMAND (through /bin/sh -c) in the environment; put it after `--`.",
    )
    run.add_argument("name", type=env_name_arg, metavar="NAME")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")
    export = actions.add_parser("export", help="save the environment to shared storage")
    export.add_argument("name", type=env_name_arg, metavar="NAME")
    delete = actions.add_parser("delete", help="remove the environment container")
    delete.add_argument("name", type=env_name_arg, metavar="NAME")
    delete.add_argument("--tarball", action="store_true", help="also delete the exported tarball")


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "id", metavar="ID", help="task ID, a unique prefix of one, or the task's name"
    )


def build_parser() -> MagicArgumentParser:
    """The `%river` parser; subcommands mirror design §5."""
    parser = MagicArgumentParser(
        prog="%river",
        description="Drive a River cluster from this notebook.",
        epilog="`%river COMMAND --help` describes one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    connect = sub.add_parser(
        "connect",
        help="choose the River host (default: RIVER_URL, RIVER_TOKEN)",
        description="Connect to a River host; with no URL use RIVER_URL and RIVER_TOKEN.",
    )
    connect.add_argument("url", nargs="?", metavar="URL")
    connect.add_argument("--token", metavar="T", help="API token (default: RIVER_TOKEN)")

    login = sub.add_parser(
        "login",
        help="log in: --token T, or a user name and password (asked for) traded for a token",
    )
    login.add_argument("url", nargs="?", metavar="URL")
    login.add_argument("--token", metavar="T", help="an API token (else prompt for a password)")
    login.add_argument("--user", metavar="NAME", help="River user name (else asked for)")

    sub.add_parser("nodes", help="show the nodes and their free resources")
    sub.add_parser(
        "share",
        help="fair share: each user's recent usage, share and queue priority",
        description="Each user's recent (decayed) core- and GPU-seconds, their share of the "
        "total and the resulting queue priority: 1 goes first.",
    )

    tasks = sub.add_parser("tasks", help="show your tasks (--all: everyone's)")
    tasks.add_argument("-a", "--all", action="store_true", help="all users' tasks")
    tasks.add_argument("--state", metavar="S[,S]", help="only these states, e.g. queued,running")

    status = sub.add_parser("status", help="show one task")
    _add_id(status)

    logs = sub.add_parser("logs", help="print a task's output (--follow: until it ends)")
    _add_id(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")

    for name, text in (("kill", "stop"), ("pause", "pause"), ("resume", "resume")):
        _add_id(sub.add_parser(name, help=f"{text} a task"))

    run = sub.add_parser(
        "run",
        usage="%(prog)s [options] -- CMD [ARGS ...]",
        help="run a command on the cluster and stream its output",
        description="Run a command task; put the command after `--`.",
    )
    _add_task_options(run)
    run.add_argument(
        "--shell", action="store_true", help="run CMD through the shell (pipes, &&, globs)"
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and arguments")

    submit = sub.add_parser(
        "submit",
        prog="%%river submit",
        help="(cell magic) run the cell's Python code on the cluster",
        description="Run this cell's Python code on the cluster; output streams into the cell. "
        "Interrupting the kernel kills the task.",
    )
    _add_task_options(submit)
    submit.add_argument(
        "--python",
        metavar="PATH|NAME",
        type=python_arg,
        help="the interpreter on the node: a path, a venv or conda directory, or a node's "
        "--python-env name (default: this kernel's own where the node has the same path, "
        "else the node's)",
    )
    submit.add_argument(
        "--push",
        type=names_arg,
        action="extend",
        default=[],
        metavar="X,Y",
        help="notebook variables to send to the remote cell (pickled)",
    )
    submit.add_argument(
        "--pull",
        type=names_arg,
        action="extend",
        default=[],
        metavar="Z",
        help="remote variables to bring back into the notebook after success",
    )
    _add_env_commands(sub)
    add_overlay_commands(sub, seconds_arg)
    add_vps_commands(sub, count_arg, memory_arg, target_arg, time_arg)
    put = sub.add_parser("put", help="copy a file or directory into a running task or VPS")
    put.add_argument("local", metavar="LOCAL")
    put.add_argument("remote", metavar="ID:PATH")
    get = sub.add_parser("get", help="copy a file or directory out of a running task or VPS")
    get.add_argument("remote", metavar="ID:PATH")
    get.add_argument("local", metavar="LOCAL")

    dashboard = sub.add_parser(
        "dashboard",
        help="a live dashboard: nodes, the queue and your tasks (ipywidgets)",
        description="Show a live dashboard of nodes (CPU, memory, GPU with history), the "
        "queue and your tasks with kill/logs buttons. It updates from the host's event "
        "stream in a background thread; the kernel stays free.",
    )
    dashboard.add_argument(
        "--refresh",
        type=seconds_arg,
        default=5.0,
        metavar="SECONDS",
        help="how often node metrics and the queue are re-read (default 5)",
    )
    return parser


def parse_line(parser: MagicArgumentParser, line: str) -> argparse.Namespace:
    """Split a magic line like a shell would and parse it.

    For `run`, everything after the first `--` is the command, untouched by argparse.
    Raises UsageError for bad input and HelpShown after printing help.
    """
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot split the line: {exc}") from None
    if not tokens:
        parser.print_help()
        raise HelpShown()
    command: list[str] | None = None
    raw_command: str | None = None
    if (tokens[0] == "run" or tokens[:2] == ["env", "exec"]) and "--" in tokens:
        split = tokens.index("--")
        tokens, command = tokens[:split], tokens[split + 1 :]
        raw_command = _text_after_separator(line, split)
    args = parser.parse_args(tokens)
    if args.command == "env" and args.env_command == "exec":
        if command is not None:
            if args.cmd:
                raise UsageError(f"unexpected {' '.join(args.cmd)!r} before `--`")
            args.cmd = command
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        if not args.cmd:
            raise UsageError("env exec needs a command: %river env exec NAME -- COMMAND")
        if len(args.cmd) == 1:
            args.shell_command = args.cmd[0]
        else:
            args.shell_command = ((raw_command or "").strip() if command else "") or " ".join(
                args.cmd
            )
    if args.command == "run":
        if command is not None:
            if args.cmd:
                raise UsageError(f"unexpected {' '.join(args.cmd)!r} before `--`\n{RUN_USAGE}")
            args.cmd = command
        if not args.cmd:
            raise UsageError(f"run needs a command\nusage: {RUN_USAGE}")
        # For --shell: one quoted word is the script (`-- 'a | b'`); several words are
        # passed as typed, so quotes, pipes and globs reach the shell intact.
        if len(args.cmd) == 1:
            args.shell_command = args.cmd[0]
        else:
            args.shell_command = (raw_command or "").strip() or " ".join(args.cmd)
    if args.command in ("run", "submit"):
        args.target = args.targets[0] if len(args.targets) == 1 else None
        if args.array and len(args.targets) > 1:
            raise UsageError("give either --array or several -t targets, not both")
        check_job(args)
        check_request(args)
    return args


def _text_after_separator(line: str, tokens_before: int) -> str | None:
    """The raw text after the `--` that follows `tokens_before` tokens (not a quoted one)."""
    for match in _SEPARATOR.finditer(line):
        try:
            if len(shlex.split(line[: match.start()])) == tokens_before:
                return line[match.end() :]
        except ValueError:  # inside quotes
            continue
    return None


def check_job(args: argparse.Namespace) -> None:
    """--nodes / --gpus-per-node against the options a job cannot take."""
    nodes = getattr(args, "nodes", None)
    if nodes is None:
        if getattr(args, "gpus_per_node", None) is not None:
            raise UsageError("--gpus-per-node is for multi-node jobs: add --nodes N")
        if getattr(args, "network", None) is not None:
            raise UsageError("--network is for multi-node jobs: add --nodes N")
        if getattr(args, "launcher", None) is not None:
            raise UsageError("--launcher is for multi-node jobs: add --nodes N")
        if getattr(args, "nproc_per_node", None) is not None:
            raise UsageError("--nproc-per-node goes with --nodes N --launcher torchrun")
        return
    if getattr(args, "nproc_per_node", None) is not None and not getattr(args, "launcher", None):
        raise UsageError("--nproc-per-node goes with --launcher torchrun")
    if nodes < 1:
        raise UsageError("--nodes must be at least 1")
    if args.targets or args.array:
        raise UsageError("a --nodes job is placed by the scheduler: leave out -t and --array")
    if args.gpus and args.gpus_per_node is not None and args.gpus != args.gpus_per_node:
        raise UsageError("give --gpus-per-node or --gpus for a --nodes job, not both")


def check_request(args: argparse.Namespace) -> None:
    """Cross-field checks (e.g. --gpus vs. GPUs named in the target) via the shared spec."""
    for target in args.targets or [None]:
        try:
            parse_request(
                {"cores": args.cores, "memory": args.memory, "gpus": args.gpus, "target": target}
            )
        except SpecError as exc:
            raise UsageError(str(exc)) from None
