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

from IPython.core.error import UsageError

from river_runner.ids import parse_id
from river_runner.spec import SpecError, parse_memory, parse_request, parse_target

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


def env_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"environment variables look like KEY=VALUE, not {text!r}")
    return key, value


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `submit`: what the task needs and how to wait for it."""
    parser.add_argument(
        "-t", "--target", type=target_arg, metavar="NODE[:NUMA][::GPU,GPU]", help="where to run"
    )
    parser.add_argument("-c", "--cores", type=count_arg, default=1, help="CPU cores (default 1)")
    parser.add_argument("-m", "--memory", type=memory_arg, metavar="SIZE", help="e.g. 512M, 8G")
    parser.add_argument("--gpus", type=count_arg, default=0, metavar="N", help="GPU count")
    parser.add_argument("--name", help="a label shown in %%river tasks")
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
    parser.add_argument(
        "--detach",
        action="store_true",
        help="return a TaskHandle at once instead of streaming the output",
    )


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=task_id_arg, metavar="ID", help="task ID")


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

    sub.add_parser("nodes", help="show the nodes and their free resources")

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
    if tokens[0] == "run" and "--" in tokens:
        split = tokens.index("--")
        tokens, command = tokens[:split], tokens[split + 1 :]
        raw_command = _text_after_separator(line, split)
    args = parser.parse_args(tokens)
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


def check_request(args: argparse.Namespace) -> None:
    """Cross-field checks (e.g. --gpus vs. GPUs named in the target) via the shared spec."""
    try:
        parse_request(
            {"cores": args.cores, "memory": args.memory, "gpus": args.gpus, "target": args.target}
        )
    except SpecError as exc:
        raise UsageError(str(exc)) from None
