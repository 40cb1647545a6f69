"""Per-task supervisor for the process backend.

Runs as its own session so a task outlives a runner crash: it starts the task, writes its
stdout/stderr as numbered records to one append-only file (so a restarted runner can pick
up where it stopped without duplicates), enforces the memory limit, and leaves the exit
status in `result.json`. The runner only tails files and sends signals.

It imports only the standard library and runs with `python -S`, so starting it costs a
few milliseconds; memory is read from /proc for every process in the task's session.

Record format in `output.log`: `SEQ<TAB>STREAM<TAB>TS<TAB>TEXT[<TAB>c]` with TEXT escaped by
`encode_text` so a record is always one line (no raw `\n`, `\r` or tab), and a final `c` on
a chunk of a longer line (`continued`). How bytes become lines is river_runner.loglines.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

if __package__:
    from river_runner import loglines
else:  # run as a script with -S: loglines.py sits next to this file on sys.path[0]
    import loglines  # type: ignore[no-redef]

OUTPUT_FILE = "output.log"
RESULT_FILE = "result.json"
PID_FILE = "supervisor.pid"
CHILD_PID_FILE = "child.pid"
KILL_GRACE_SECONDS = 1.0
MEMORY_POLL_SECONDS = 0.2
CLONE_NEWNET = 0x40000000


def encode_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def decode_text(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_UNESCAPE.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_record(line: str) -> tuple[int, str, float, str, bool] | None:
    """One output record (seq, stream, ts, text, continued), or None for a torn
    (partially written) line."""
    if not line.endswith("\n"):
        return None
    parts = line[:-1].split("\t")
    if len(parts) == 5 and parts[4] == "c":
        continued = True
    elif len(parts) == 4:
        continued = False
    else:
        return None
    return int(parts[0]), parts[1], float(parts[2]), decode_text(parts[3]), continued


class _OutputWriter:
    """Numbers lines across both streams in arrival order and appends them durably."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._seq = 0
        self._splitters = {"stdout": loglines.LineSplitter(), "stderr": loglines.LineSplitter()}

    def feed(self, stream: str, data: bytes) -> None:
        for text, continued in self._splitters[stream].feed(data):
            self._write(stream, text, continued)

    def flush_partials(self) -> None:
        for stream, splitter in self._splitters.items():
            for text, continued in splitter.flush():
                self._write(stream, text, continued)

    def _write(self, stream: str, text: str, continued: bool = False) -> None:
        self._seq += 1
        flag = "\tc" if continued else ""
        self._file.write(f"{self._seq}\t{stream}\t{time.time():.6f}\t{encode_text(text)}{flag}\n")

    def close(self) -> None:
        self._file.close()


def session_rss(session_id: int) -> int:
    """Resident memory of every process in a session (the task and all it spawned)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        # fields[0] is field 3 (state): session is field 6, rss (pages) field 24.
        if int(fields[3]) == session_id:
            total += int(fields[21]) * page
    return total


class _Doorbell:
    """Tells the runner (on our stdout, a pipe it reads) that new records are in the file,
    so it reads on demand instead of polling. After a runner restart nobody listens: the
    first broken pipe silences it and the adopting runner polls instead."""

    def __init__(self) -> None:
        self.silent = False

    def ring(self) -> None:
        if self.silent:
            return
        try:
            os.write(1, b".")
        except OSError:
            self.silent = True


def _kill_group(pgid: int, sig: int) -> None:
    # No contextlib.suppress: every import here is start-up time of every task.
    try:  # noqa: SIM105
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def enter_netns(path: str) -> None:
    """Move this process (and so the task it starts) into the network namespace at `path`:
    the task's own on the overlay (river_runner.task_netns). Plain setns(2), as only the
    standard library is importable here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        setns = getattr(os, "setns", None)  # Python 3.12+
        if setns is not None:
            setns(fd, CLONE_NEWNET)
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"cannot enter the network namespace {path}")
    finally:
        os.close(fd)


def parse_user(user: str) -> tuple[int, int] | None:
    """`UID:GID` (the account the task runs as) or "" (this process's own)."""
    if not user:
        return None
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def supervise(
    task_dir: str,
    argv: list[str],
    memory_limit: int,
    cpus: list[int],
    netns: str = "",
    user: str = "",
    cwd: str = "",
    note: str = "",
) -> int:
    """Run argv to completion; return the exit code to leave in result.json.

    `user` ("UID:GID"): the task drops to that account (setgroups([]), setgid, setuid)
    just before exec, while this supervisor keeps the rights it needs to watch and kill it
    and to write the task's files, which the task cannot reach. `cwd`: its working
    directory (default: this process's, or RIVER_TASK_WORKDIR). `note`: River's first line
    of the task's log, on the "river" stream (which interpreter runs it)."""
    _write(os.path.join(task_dir, PID_FILE), str(os.getpid()))
    if cpus:
        os.sched_setaffinity(0, cpus)
    writer = _OutputWriter(os.path.join(task_dir, OUTPUT_FILE))
    if note:
        writer._write("river", note)
    if netns:
        try:
            enter_netns(netns)
        except OSError as exc:
            return _not_started(writer, task_dir, f"river: {exc}", exc)
    killed = {"by_request": False, "oom": False}
    deadline = [float("inf")]
    started: list[subprocess.Popen] = []

    # Installed before the task starts, so a kill at any moment is caught and recorded.
    def on_term(_signum: int, _frame: object) -> None:
        killed["by_request"] = True
        if started:
            _kill_group(started[0].pid, signal.SIGCONT)  # a paused task must wake to die
            _kill_group(started[0].pid, signal.SIGTERM)
            deadline[0] = time.monotonic() + KILL_GRACE_SECONDS

    signal.signal(signal.SIGTERM, on_term)

    account = parse_user(user)
    drop = {"user": account[0], "group": account[1], "extra_groups": []} if account else {}
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,  # the task inherits no descriptor of ours
            cwd=cwd or os.environ.get("RIVER_TASK_WORKDIR") or None,
            **drop,
        )
    except OSError as exc:
        hint = ""
        if account and isinstance(exc, PermissionError):
            hint = (
                f" (the task runs as uid {account[0]}, which must be able to reach and run "
                "it; see the runner's --task-user)"
            )
        return _not_started(writer, task_dir, f"river: cannot start {argv[0]!r}: {exc}{hint}", exc)
    started.append(child)
    _write(os.path.join(task_dir, CHILD_PID_FILE), str(child.pid))

    if killed["by_request"]:  # a kill that arrived while the task was being started
        on_term(signal.SIGTERM, None)

    selector = selectors.DefaultSelector()
    assert child.stdout and child.stderr
    selector.register(child.stdout, selectors.EVENT_READ, "stdout")
    selector.register(child.stderr, selectors.EVENT_READ, "stderr")
    next_memory_check = 0.0
    doorbell = _Doorbell()
    while selector.get_map():
        fed = False
        for key, _ in selector.select(timeout=MEMORY_POLL_SECONDS / 2):
            data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            if data:
                writer.feed(key.data, data)
                fed = True
            else:
                selector.unregister(key.fileobj)
        if fed:
            doorbell.ring()
        now = time.monotonic()
        if memory_limit and now >= next_memory_check and not killed["oom"]:
            next_memory_check = now + MEMORY_POLL_SECONDS
            if session_rss(child.pid) > memory_limit:
                killed["oom"] = True
                _kill_group(child.pid, signal.SIGKILL)
        if now >= deadline[0]:
            _kill_group(child.pid, signal.SIGKILL)
            deadline[0] = float("inf")
    status = child.wait()
    _kill_group(child.pid, signal.SIGKILL)  # leftovers of the task's own group
    writer.flush_partials()
    writer.close()
    exit_code = status if status >= 0 else 128 - status
    _write_result(task_dir, exit_code=exit_code, killed=killed["by_request"], oom=killed["oom"])
    return exit_code


def _not_started(writer: _OutputWriter, task_dir: str, message: str, exc: OSError) -> int:
    """The task could not be started: say why on its stderr and in result.json."""
    writer._write("stderr", message)
    writer.close()
    _write_result(task_dir, exit_code=127, killed=False, oom=False, detail=str(exc))
    return 127


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _write_result(
    task_dir: str, *, exit_code: int, killed: bool, oom: bool, detail: str = ""
) -> None:
    flags = f'"killed": {str(killed).lower()}, "oom": {str(oom).lower()}'
    if detail:  # rare (a task that could not start): only then pay for importing json
        import json

        text = json.dumps(detail)
    else:
        text = '""'
    result = f'{{"exit_code": {int(exit_code)}, {flags}, "detail": {text}}}'

    final = os.path.join(task_dir, RESULT_FILE)
    _write(final + ".tmp", result)
    os.replace(final + ".tmp", final)


def main(args: list[str] | None = None) -> int:
    """`supervise.py --dir DIR [--memory BYTES] [--cpus 0,1] -- ARGV...` (no argparse: it
    costs more start-up time than the rest of this module)."""
    args = list(sys.argv[1:] if args is None else args)
    options = {
        "--dir": "",
        "--memory": "0",
        "--cpus": "",
        "--netns": "",
        "--user": "",
        "--cwd": "",
        "--note": "",
    }
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag not in options or not args:
            print(
                f"usage: supervise.py --dir DIR [--memory N] [--cpus LIST] -- ARGV (bad {flag!r})",
                file=sys.stderr,
            )
            return 2
        options[flag] = args.pop(0)
    argv = args[1:]
    if not options["--dir"] or not argv:
        print("usage: supervise.py --dir DIR [--memory N] [--cpus LIST] -- ARGV", file=sys.stderr)
        return 2
    cpus = [int(c) for c in options["--cpus"].split(",") if c]
    supervise(
        options["--dir"],
        argv,
        int(options["--memory"]),
        cpus,
        options["--netns"],
        options["--user"],
        options["--cwd"],
        options["--note"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
