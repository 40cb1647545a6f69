"""A network namespace of its own for a process task that holds a reserved overlay address.

A docker task gets its reserved address on its container's interface. A process task
shares the runner's network unless it asked for an address (`ip_token`): then it gets a
namespace, attached to the runner's overlay bridge by a veth with exactly that address
and a default route via the runner (`overlay.attach_namespace`), so it can bind the
address and be reached at it from every node. The supervisor enters the namespace before
it starts the task (`supervise.enter_netns`); the runner removes the namespace when the
task has ended.

Namespaces are named files under /var/run/netns, so they outlive a runner restart along
with their tasks (an adopted task keeps its network). Creating one needs root
(CAP_SYS_ADMIN and CAP_NET_ADMIN), as the overlay itself does.

The runner calls `create_in_helper` / `remove_in_helper`, which run this module as a short
single-threaded process (`python -m river_runner.task_netns create|remove ...`): pyroute2
forks to make a namespace and to open sockets inside one, and a fork of the runner (a
threaded asyncio process) took the runner down now and then (a fork copies one thread of
many, with whatever locks the others held). The helper costs ~0.4 s per such task
(bench/process_netns_overhead.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys

from river_runner.overlay import (
    BRIDGE,
    OverlayError,
    attach_namespace,
    detach_namespace,
    netns_path,
)


def namespace_name(work_root: str, task_id: int) -> str:
    """A name no other runner on this machine uses (each has its own work root)."""
    runner = hashlib.sha1(os.path.abspath(work_root).encode()).hexdigest()[:8]
    return f"river-{runner}-{task_id}"


def create(name: str, address: str, bridge: str = BRIDGE) -> str:
    """Make namespace `name` with `address` on the overlay bridge; its path. A leftover of
    the same name (a crash between create and remove) is replaced."""
    from pyroute2 import netns

    remove(name)
    try:
        netns.create(name)
    except OSError as exc:
        raise OverlayError(
            f"cannot create a network namespace for the task ({exc}); "
            "a task with a reserved overlay address needs a runner running as root"
        ) from None
    try:
        attach_namespace(name, address, bridge=bridge)
    except Exception:
        remove(name)
        raise
    return netns_path(name)


def remove(name: str) -> None:
    """Remove the namespace and its veth; nothing when it is not there."""
    path = netns_path(name)
    if not os.path.exists(path):
        return
    from pyroute2 import netns

    with contextlib.suppress(Exception):
        detach_namespace(name)
    with contextlib.suppress(OSError):
        netns.remove(name)


async def _helper(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "river_runner.task_netns",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise OverlayError(err.decode(errors="replace").strip() or f"{args[0]} failed")


async def create_in_helper(name: str, address: str, bridge: str = BRIDGE) -> str:
    """`create`, run in a helper process; the namespace's path."""
    await _helper("create", name, address, bridge)
    return netns_path(name)


async def remove_in_helper(name: str) -> None:
    """`remove`, run in a helper process; never raises (a leftover is replaced later)."""
    with contextlib.suppress(OSError, OverlayError):
        await _helper("remove", name)


def main(argv: list[str] | None = None) -> int:
    """`create NAME ADDRESS BRIDGE` or `remove NAME`; errors on stderr, exit status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) == 4 and args[0] == "create":
            create(args[1], args[2], args[3])
        elif len(args) == 2 and args[0] == "remove":
            remove(args[1])
        else:
            print("usage: task_netns create NAME ADDRESS BRIDGE | remove NAME", file=sys.stderr)
            return 2
    except OverlayError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
