"""A fork server for task supervisors: start each supervisor by fork, not by exec.

Starting `python -S supervise.py` costs a fresh interpreter and its imports for every task
(~40 ms of a ~85 ms submit -> completed on the standard machine). The process backend
instead keeps one small, single-threaded zygote (this file, run with `python -S`, the
supervisor's modules imported once) and asks it to fork a supervisor per task. The runner
itself is multi-threaded and must not fork; the zygote is the one process that does.

Protocol, over a SOCK_SEQPACKET socketpair the runner made: the runner sends one JSON
message {"dir", "argv", "memory", "cpus", "env", "netns", "user", "cwd", "note"} with the task's doorbell pipe (its write
end) attached as SCM_RIGHTS; the zygote forks, the child becomes a supervisor in a new
session with the doorbell as stdout (exactly as a Popen'd supervisor), and the zygote
answers the child's pid. The zygote exits when the runner's end closes; supervisors it
forked live on (they are in their own sessions and are reaped by init), as they would
after a runner restart. Children are reaped by the kernel (SIGCHLD ignored in the zygote,
restored in each child before it starts the task).

Stdlib only, for the same reason as supervise.py.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys

MAX_MESSAGE = 1 << 20

if __package__:
    from river_runner import supervise
else:  # run as a script with -S: supervise.py sits next to this file on sys.path[0]
    import supervise  # type: ignore[no-redef]


def _receive(sock: socket.socket) -> tuple[dict, int] | None:
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_LEN(fds.itemsize))
    if not data:
        return None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request carries exactly one doorbell fd")
    return json.loads(data), fds[0]


def _become_supervisor(request: dict, bell: int, server: socket.socket) -> None:
    """In the forked child: detach, wire stdio like a Popen'd supervisor, supervise."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the task's exit must be waitable
        server.close()
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(bell, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        os.close(bell)
        os.environ.clear()
        os.environ.update(request["env"])
        supervise.supervise(
            request["dir"],
            list(request["argv"]),
            int(request["memory"]),
            list(request["cpus"]),
            str(request.get("netns") or ""),
            str(request.get("user") or ""),
            str(request.get("cwd") or ""),
            str(request.get("note") or ""),
        )
        code = 0
    finally:
        os._exit(code)


def serve(server: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies: the kernel reaps them
    while True:
        try:
            received = _receive(server)
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            server.send(f"error {exc}".encode())
            continue
        if received is None:
            return  # the runner is gone
        request, bell = received
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(bell)
            server.send(f"error {exc}".encode())
            continue
        if pid == 0:
            _become_supervisor(request, bell, server)
        os.close(bell)
        server.send(str(pid).encode())


def main() -> int:
    """`zygote.py FD`: serve the socketpair end FD inherited from the runner."""
    serve(socket.socket(fileno=int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
