"""Machines made of network namespaces, for the overlay tests and benchmark.

Each "machine" (host, runner, workload) is a network namespace this module creates, named
`rvt<6 hex>-<role>` (unique per run). The underlay is a switch namespace with a bridge and
one veth pair per machine, both ends created inside our namespaces: nothing is added to,
removed from or changed in the root namespace, and every packet stays inside namespaces we
made. `Topology.close()` deletes them all (which takes their links with them).

Product code runs in a machine as a real process under `ip netns exec` (host server, runner
agent). The test process reaches into a namespace with `InNetns`: a worker thread that
setns()es into it once, so sockets it creates (HTTP clients, echo peers) live there.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
UNDERLAY = "192.168.251"  # test-only /24, exists only inside our namespaces
IP = shutil.which("ip") or "/usr/sbin/ip"
T = TypeVar("T")


TERMINAL_STATES = ("completed", "failed", "killed", "killed_oom", "lost")


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True, timeout=20)


def netns_problem() -> str | None:
    """Why namespace tests cannot run here (None: they can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if not os.path.exists(IP):
        return "iproute2 (`ip`) is not installed"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 is not installed"
    probe = f"rvt{secrets.token_hex(3)}-probe"
    try:
        made = run_ip("netns", "add", probe, check=False)
        if made.returncode:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        vxlan = run_ip(
            "-n", probe, "link", "add", "vx", "type", "vxlan", "id", "1", "dstport", "4789",
            check=False,
        )  # fmt: skip
        if vxlan.returncode:
            return f"VXLAN links are unavailable: {vxlan.stderr.strip()}"
    finally:
        run_ip("netns", "del", probe, check=False)
    return None


def _enter_netns(path: str) -> None:
    from pyroute2 import netns

    netns.setns(path, flags=0)  # flags=0: never create it


class InNetns:
    """Run callables on a thread that lives in a network namespace."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(
            1, thread_name_prefix=f"in-{name}", initializer=_enter_netns,
            initargs=(f"/var/run/netns/{name}",),
        )  # fmt: skip

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 60.0, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result(timeout)

    def socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        return self.call(socket.socket, socket.AF_INET, kind)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Machine:
    topology: Topology
    role: str
    address: str | None  # underlay address (None: a workload, not on the underlay)
    inside: InNetns | None = None

    @property
    def netns(self) -> str:
        return f"{self.topology.prefix}-{self.role}"

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_ip("-n", self.netns, *args, check=check)

    def popen(self, command: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
        out = open(log, "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(
            [IP, "netns", "exec", self.netns, *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )

    def python(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `python ARGS` in this machine (product code under `ip netns exec`)."""
        return subprocess.run(
            [IP, "netns", "exec", self.netns, sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def thread(self) -> InNetns:
        if self.inside is None:
            self.inside = InNetns(self.netns)
        return self.inside


@dataclass
class Topology:
    """A switch and the machines plugged into it; all removed by close()."""

    prefix: str = field(default_factory=lambda: f"rvt{secrets.token_hex(3)}")
    machines: dict[str, Machine] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    # Directories the processes made outside the test's root (removed after they stop).
    leftovers: list[Path] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _add_netns(self, name: str) -> None:
        run_ip("netns", "add", name)
        self._made.append(name)
        run_ip("-n", name, "link", "set", "lo", "up")

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def start(self) -> Topology:
        atexit.register(self.close)  # even if a fixture's teardown never runs
        self._add_netns(self.switch)
        run_ip("-n", self.switch, "link", "add", "sw0", "type", "bridge")
        run_ip("-n", self.switch, "link", "set", "sw0", "up")
        return self

    def machine(self, role: str, host_byte: int) -> Machine:
        """A machine on the underlay at 192.168.251.<host_byte>."""
        machine = Machine(self, role, f"{UNDERLAY}.{host_byte}")
        self._add_netns(machine.netns)
        port = f"p{host_byte}"
        # Both ends are made inside our namespaces: in the switch, with the peer in the machine.
        run_ip(
            "-n", self.switch, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", machine.netns,
        )  # fmt: skip
        run_ip("-n", self.switch, "link", "set", port, "master", "sw0", "up")
        machine.ip("addr", "add", f"{machine.address}/24", "dev", "eth0")
        machine.ip("link", "set", "eth0", "up")
        self.machines[role] = machine
        return machine

    def workload(self, role: str) -> Machine:
        """An empty namespace, to be attached to a runner's overlay bridge."""
        machine = Machine(self, role, None)
        self._add_netns(machine.netns)
        self.machines[role] = machine
        return machine

    def close(self) -> None:
        for process in self.processes:
            stop(process)
        for path in self.leftovers:
            shutil.rmtree(path, ignore_errors=True)
        for machine in self.machines.values():
            if machine.inside is not None:
                machine.inside.close()
        for name in reversed(self._made):
            run_ip("netns", "del", name, check=False)
        self._made.clear()


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


# ---- traffic ----------------------------------------------------------------------------


class EchoServer:
    """A TCP echo server whose listening socket lives in a namespace."""

    def __init__(self, where: InNetns, address: str, port: int) -> None:
        self.listener = where.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while data := conn.recv(65536):
                        conn.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


def echo(where: InNetns, address: str, port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    """Send payload from a namespace to an echo server; return what came back."""
    sock = where.socket()
    with sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


class HostAPI:
    """The River REST API of a host that listens inside its namespace."""

    def __init__(self, machine: Machine, port: int, token: str) -> None:
        self.where = machine.thread()
        self.base = f"http://{machine.address}:{port}"
        self.headers = {"Authorization": f"token {token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        def go() -> httpx.Response:
            return httpx.request(
                method, self.base + path, headers=self.headers, timeout=10, **kwargs
            )

        return self.where.call(go)

    def get(self, path: str) -> Any:
        response = self.request("GET", path)
        response.raise_for_status()
        return response.json()

    def reserve(self, node: str, ttl: float | None = None) -> dict[str, Any]:
        """A new overlay address reservation on `node` (its token, ip, id ...)."""
        body: dict[str, Any] = {"node": node} if ttl is None else {"node": node, "ttl": ttl}
        held = self.request("POST", "/river/api/overlay/reservations", json=body)
        assert held.status_code == 201, held.text
        return held.json()["reservation"]

    def task_lines(self, task_id: Any) -> list[str]:
        return [line["text"] for line in self.get(f"/river/api/tasks/{task_id}/logs")["lines"]]

    def finished(self, task_id: Any, timeout: float = 60.0) -> dict[str, Any]:
        """The task's record once it has ended (AssertionError after `timeout`)."""

        def done() -> dict[str, Any] | None:
            task = self.get(f"/river/api/tasks/{task_id}")["task"]
            return task if task["state"] in TERMINAL_STATES else None

        return wait_for(done, timeout, f"task {task_id} to finish")
