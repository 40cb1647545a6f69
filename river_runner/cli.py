"""The `river` command. Subcommands are found through the `river.commands` entry points, so
a compute node with only the runner installed still has `river runner`, and the host's
commands appear when the host is installed, without the runner importing the host."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import socket
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from river_runner import metrics
from river_runner.interpreters import parse_python_envs
from river_runner.overlay_spec import check_ipv4
from river_runner.protocol import split_host_urls
from river_runner.spec import SpecError, parse_memory
from river_runner.task_account import (
    DEFAULT_UID_RANGE,
    TaskAccount,
    TaskAccountError,
    resolve_task_account,
)
from river_runner.task_env import check_task_env_names

if TYPE_CHECKING:
    from river_runner.gpu import GpuInventory

JOIN_TOKEN_ENV = "RIVER_JOIN_TOKEN"
LEGACY_TOKEN_ENV = "RIVER_RUNNER_TOKEN"  # still read, no longer documented


# The user commands (river_magics/shell), also declared as `river.commands` entry points in
# pyproject.toml. Entry points are read from the installed distribution's metadata, which an
# editable install wrote when it was made: a checkout that gains a command would not have
# it until reinstalled. This table lets `main` find them anyway. They are loaded by name
# only when run, so a compute node never imports the client, and the runner never imports
# the host. An installed entry point of the same name wins.
BUILTIN_COMMANDS = {
    name: f"river_magics.shell:{name}_command"
    for name in (
        *("login", "submit", "run", "tasks", "status", "logs", "kill", "nodes", "vps", "env"),
        *("forward", "attach", "share", "put", "get"),
    )
}


class _Builtin:
    """A `module:attribute` loaded like an entry point."""

    def __init__(self, target: str) -> None:
        self.target = target

    def load(self) -> object:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _commands() -> dict[str, object]:
    commands: dict[str, object] = {}
    if importlib.util.find_spec("river_magics") is not None:
        commands.update({name: _Builtin(target) for name, target in BUILTIN_COMMANDS.items()})
    commands.update({ep.name: ep for ep in entry_points(group="river.commands")})
    return commands


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        names = ", ".join(sorted(commands)) or "runner"
        print(f"usage: river {{{names}}} [options]   (river COMMAND --help for more)")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"river: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    command = commands[argv[0]].load()  # type: ignore[attr-defined]
    return int(command(argv[1:]) or 0)


def _default_backend() -> str:
    """docker when a daemon answers, else plain processes."""
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return "docker"
    except Exception:
        return "process"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="river runner", description="Run a River compute-node agent."
    )
    parser.add_argument(
        "--host",
        action="append",
        help="host URL, e.g. http://head:8888; repeat it (or give RIVER_HOST_URL=a,b) for a "
        "leader and its standby: the runner follows whichever leads",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="file holding the cluster's runner join token (keep it 0600); or set "
        f"{JOIN_TOKEN_ENV}. Preferred to --token, which every local user sees in `ps`",
    )
    parser.add_argument(
        "--token",
        help=f"the join token itself (deprecated: visible in `ps`; use --token-file or {JOIN_TOKEN_ENV})",
    )
    parser.add_argument(
        "--task-user",
        metavar="USER",
        help="process backend: ONE account all tasks run as (e.g. nobody; never root), which "
        "does not separate users from each other. Without it a runner running as root runs "
        "each user's tasks under their own uid (--task-uid-range); any other runner runs "
        "them as itself",
    )
    parser.add_argument(
        "--task-uid-range",
        metavar="FIRST-LAST",
        help="process backend, root runner: the uids users' tasks run as, FIRST + the user's "
        f"number on the host (default {DEFAULT_UID_RANGE}); no account of this machine may "
        "use them",
    )
    parser.add_argument(
        "--task-env",
        metavar="NAME",
        action="append",
        default=[],
        help="process backend: a variable of the runner's environment that tasks get too "
        "(repeat; e.g. LD_LIBRARY_PATH where CUDA libraries live off the linker's path). "
        "Tasks otherwise start from a clean environment; credentials are never passed",
    )
    parser.add_argument(
        "--python-env",
        metavar="NAME=PATH",
        action="append",
        default=[],
        help="process backend: a Python environment tasks may name (`python: NAME`): a venv "
        "or conda environment's directory, or an interpreter (repeat). Tasks that name none "
        "run with the runner's own interpreter",
    )
    parser.add_argument(
        "--name", default=socket.gethostname(), help="node name (default: hostname)"
    )
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--url", help="URL the host uses to reach this runner (default http://BIND:PORT)"
    )
    parser.add_argument(
        "--cpus", help="CPU ids to offer, e.g. 0-3 (default: this process's affinity)"
    )
    parser.add_argument("--memory", help="memory to offer, e.g. 16G (default: all)")
    parser.add_argument("--backend", choices=["auto", "process", "docker"], default="auto")
    parser.add_argument(
        "--data-dir", type=Path, help="state directory (default ~/.local/share/river-runner/NAME)"
    )
    parser.add_argument("--fake-gpus", help="pretend to have GPUs: a count or a JSON list (tests)")
    parser.add_argument(
        "--shared-dir",
        type=Path,
        default=os.environ.get("RIVER_SHARED_DIR") or None,
        help="shared storage (same as the host's shared_dir): mounted at /shared in containers, "
        "holds exported environments",
    )
    parser.add_argument(
        "--default-image",
        default=os.environ.get("RIVER_DEFAULT_IMAGE") or "python:3.12-slim",
        help="docker backend: image for tasks that name no image or environment",
    )
    parser.add_argument(
        "--pids-limit",
        type=int,
        default=int(os.environ.get("RIVER_PIDS_LIMIT") or 4096),
        help="docker backend: most processes (threads included) one task or VPS container "
        "may hold, so a fork bomb stays inside its container (0: no limit; default 4096)",
    )
    parser.add_argument(
        "--no-data-link",
        dest="data_link",
        action="store_false",
        help="fetch pushed values over HTTP even from a host on this machine (by default "
        "a runner whose tasks cannot write its cache hard-links the host's stored blob)",
    )
    parser.add_argument(
        "--results-on-disk",
        dest="results_in_memory",
        action="store_false",
        help="tasks write their pulled values under the data directory (by default in "
        "/dev/shm where it is a tmpfs, until they are sent: river_runner/data_out.py)",
    )
    parser.add_argument(
        "--data-cache",
        default=os.environ.get("RIVER_DATA_CACHE") or "16G",
        metavar="SIZE",
        help="most bytes of pushed values (the data plane) kept cached on this node; the "
        "least recently used go first (default 16G)",
    )
    parser.add_argument(
        "--overlay-ip",
        default=os.environ.get("RIVER_OVERLAY_IP") or None,
        metavar="ADDRESS",
        help="join the host's VXLAN overlay: this node's address the host's tunnel points to "
        "(needs root; the host must run with c.RiverHost.overlay_enabled)",
    )
    parser.add_argument(
        "--no-overlay-direct",
        dest="overlay_direct",
        action="store_false",
        help="this node cannot reach the other runners' underlay addresses directly (NAT, "
        "another site): its overlay traffic goes through the host's hub only",
    )
    parser.add_argument(
        "--vm-accel",
        choices=["off", "kvm", "tcg"],
        default="off",
        help="VM VPSes (QEMU): kvm (the runner first checks that KVM really boots a guest) or "
        "tcg (software emulation, much slower: only when asked for, never as a fallback); "
        "off (the default): no VMs here",
    )
    parser.add_argument(
        "--vm-image",
        type=Path,
        default=Path("/var/cache/river-images/river-vm"),
        metavar="DIR",
        help="the VM base image (base.qcow2, vmlinuz, initrd.img), as .ci/build-vm-image.sh "
        "makes it",
    )
    parser.add_argument(
        "--vm-probe-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long the VM probe waits for a guest kernel's first console line",
    )
    parser.add_argument(
        "--vm-powerdown-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a VM's stop waits for the guest's clean ACPI shutdown before QEMU is "
        "quit (a guest that is still booting ignores the power button)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def runner_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        token = join_token(args.token, args.token_file)
    except (OSError, ValueError) as exc:
        print(f"river runner: {exc}", file=sys.stderr)
        return 2
    hosts = split_host_urls(",".join(args.host or [os.environ.get("RIVER_HOST_URL") or ""]))
    if not hosts or not token:
        print(
            f"river runner: --host and a join token are required (--token-file, or "
            f"{JOIN_TOKEN_ENV}; RIVER_HOST_URL for the host)",
            file=sys.stderr,
        )
        return 2
    if args.token:
        print(
            "river runner: warning: --token shows the join token to every local user (ps); "
            f"use --token-file or {JOIN_TOKEN_ENV}",
            file=sys.stderr,
        )
    try:
        task_account = resolve_task_account(args.task_user, args.task_uid_range)
        task_env = check_task_env_names(args.task_env)
        python_envs = parse_python_envs(args.python_env)
        memory = parse_memory(args.memory) if args.memory else 0
        cpus = metrics.parse_cpu_list(args.cpus) if args.cpus else metrics.usable_cpus()
        overlay_ip = check_ipv4(args.overlay_ip, "--overlay-ip") if args.overlay_ip else None
    except (SpecError, ValueError, TaskAccountError) as exc:
        print(f"river runner: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if task_account.per_user is None and args.backend != "docker":
        # docs/security.md: one account for every user's process tasks isolates no one.
        print(
            f"river runner: warning: process tasks of every user run as {task_account.name!r} "
            "and can read and signal each other's"
            + ("" if os.geteuid() == 0 else ", and this runner's credential")
            + ": fit only where all users trust each other (run as root without --task-user "
            "for one uid per user, or use the docker backend)",
            file=sys.stderr,
        )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    data_dir = args.data_dir or Path.home() / ".local/share/river-runner" / args.name
    return asyncio.run(
        serve(
            host_url=",".join(hosts),
            token=token,
            name=args.name,
            bind=args.bind,
            port=args.port,
            url=args.url or f"http://{args.bind}:{args.port}",
            cpus=cpus,
            memory=memory,
            backend_name=_default_backend() if args.backend == "auto" else args.backend,
            data_dir=data_dir,
            fake_gpus=args.fake_gpus,
            shared_dir=args.shared_dir,
            default_image=args.default_image,
            overlay_ip=overlay_ip,
            overlay_direct=args.overlay_direct,
            task_account=task_account,
            pids_limit=args.pids_limit,
            task_env=task_env,
            python_envs=python_envs,
            data_cache_bytes=parse_memory(args.data_cache),
            data_link=args.data_link,
            results_in_memory=args.results_in_memory,
            vm_accel=args.vm_accel,
            vm_image=args.vm_image,
            vm_probe_timeout=args.vm_probe_timeout,
            vm_powerdown_timeout=args.vm_powerdown_timeout,
        )
    )


def join_token(given: str | None, path: Path | None) -> str | None:
    """The join token from --token, --token-file or the environment (in that order).

    The environment variables are removed once read, so nothing this runner starts (the
    supervisor fork server, tasks, helpers) inherits them."""
    from_env = None
    for name in (JOIN_TOKEN_ENV, LEGACY_TOKEN_ENV):
        from_env = from_env or os.environ.get(name)
        os.environ.pop(name, None)
    if given:
        return given
    if path is not None:
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"--token-file {path} is empty")
        return token
    return from_env


def make_backend(
    name: str,
    data_dir: Path,
    runner_name: str,
    shared_dir: Path | None = None,
    default_image: str = "python:3.12-slim",
    task_account: TaskAccount | None = None,
    pids_limit: int = 4096,
    task_env: tuple[str, ...] = (),
    python_envs: dict[str, str] | None = None,
):
    if name == "docker":
        from river_runner.backends.docker import DockerBackend

        return DockerBackend(
            runner_name=runner_name,
            work_root=data_dir / "docker-tasks",
            shared_dir=shared_dir,
            default_image=default_image,
            pids_limit=pids_limit,
        )
    from river_runner.backends.process import ProcessBackend

    return ProcessBackend(
        data_dir / "tasks", account=task_account, passed_env=task_env, python_envs=python_envs
    )


async def with_vms(
    backend: Any,
    data_dir: Path,
    accel: str,
    image_dir: Path | None,
    timeout: float,
    gpus: GpuInventory | None = None,
    powerdown_timeout: float = 60.0,
) -> tuple[Any, dict[str, Any]]:
    """The backend, wrapped to run VMs too when the probe says this runner can; and the
    `vm` fact (ok, reason, accel) the runner registers with."""
    from river_runner.vm_probe import VmImage, probe

    image = VmImage(image_dir or Path("/var/cache/river-images/river-vm"))
    capability = await probe(accel, image, timeout)
    log = logging.getLogger("river.runner")
    (log.info if capability.ok or accel == "off" else log.warning)("VMs: %s", capability.reason)
    if not capability.ok:
        return backend, capability.to_json()
    from river_runner.backends.vm import VmBackend
    from river_runner.backends.with_vms import WithVms

    bus_ids = gpus.pci_bus_ids if gpus is not None else None  # a VM's GPUs, for vfio-pci
    vms = VmBackend(
        data_dir / "vms", image, accel, gpu_bus_ids=bus_ids, powerdown_seconds=powerdown_timeout
    )
    return WithVms(backend, vms), capability.to_json()


async def serve(
    *,
    host_url: str,
    token: str,
    name: str,
    bind: str,
    port: int,
    url: str,
    cpus: list[int],
    memory: int,
    backend_name: str,
    data_dir: Path,
    fake_gpus: str | None,
    shared_dir: Path | None = None,
    default_image: str = "python:3.12-slim",
    overlay_ip: str | None = None,
    overlay_direct: bool = True,
    task_account: TaskAccount | None = None,
    pids_limit: int = 4096,
    task_env: tuple[str, ...] = (),
    python_envs: dict[str, str] | None = None,
    data_cache_bytes: int = 16 * 1024**3,
    data_link: bool = True,
    results_in_memory: bool = True,
    vm_accel: str = "off",
    vm_image: Path | None = None,
    vm_probe_timeout: float = 20.0,
    vm_powerdown_timeout: float = 60.0,
) -> int:
    from river_runner.agent import RunnerAgent, RunnerConfig
    from river_runner.app import make_app
    from river_runner.gpu import GpuInventory, load_nvml

    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # its credential, task files: the runner's alone
    config = RunnerConfig(
        host_url=host_url,
        join_token=token,
        name=name,
        url=url,
        cpus=cpus,
        memory=memory,
        data_dir=data_dir,
        backend=backend_name,
        overlay_ip=overlay_ip,
        overlay_direct=overlay_direct,
        data_cache_bytes=data_cache_bytes,
        data_link=data_link,
        results_in_memory=results_in_memory,
    )
    backend = make_backend(
        backend_name,
        data_dir,
        name,
        shared_dir,
        default_image,
        task_account,
        pids_limit,
        task_env,
        python_envs,
    )
    gpus = GpuInventory(load_nvml(fake_gpus))
    backend, config.vm = await with_vms(
        backend, data_dir, vm_accel, vm_image, vm_probe_timeout, gpus, vm_powerdown_timeout
    )
    agent = RunnerAgent(config, backend, gpus)
    server = make_app(agent).listen(port, address=bind)
    await agent.start()
    logging.getLogger("river.runner").info(
        "runner %s listening on %s (%s backend)", name, url, backend_name
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
