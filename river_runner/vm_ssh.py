"""The runner's own way into its VMs: a per-VM SSH key and sessions over QEMU's hostfwd.

Why SSH and not the serial console: the console is one stream per VM (a second terminal
would share it, and it carries the kernel's messages), it has no window size, and it would
need a login. SSH gives each terminal its own pty with resize, runs `exec` commands with
their exit code, and the guest already runs sshd on a loopback forward only the runner
reaches (docs/design-decisions.md).

Why a key of its own: the runner already controls the VM entirely (its disk, QEMU, QMP), so
a key that lets it log in as the guest's root adds no trust (docs/security.md). The key is
made once per VM, when its disk is made, kept 0600 in the VM's directory and never leaves
the runner; the seed authorises its public line beside River's SSH proxy key and the
owner's. The guest's host key is trusted on first use and pinned in the same directory:
the forward is QEMU's own loopback listener, so only this guest's sshd answers on it.
"""

from __future__ import annotations

import shlex
import socket
import threading
from pathlib import Path
from typing import Any

from river_runner.backends.base import ExecRefused

KEY_FILE = "runner_key"  # the private key (OpenSSH format, 0600)
HOST_KEY_FILE = "guest_host_key"  # the guest's host key seen first ("type base64")
GUEST_USER = "root"  # the seed authorises keys for root (river_runner/backends/vm.py)
CONNECT_SECONDS = 15.0
TERM = "xterm-256color"


class VmExecRefused(ExecRefused):
    """This VM cannot run a terminal or a command, for a reason its owner can act on."""


def has_key(directory: Path) -> bool:
    return (directory / KEY_FILE).is_file()


def ensure_key(directory: Path) -> str:
    """The VM's runner key, made now if it has none; its public OpenSSH line."""
    from river_runner import sshkeys  # cryptography: the vm extra brings it (paramiko)

    path = directory / KEY_FILE
    if not path.exists():
        sshkeys.write_new_key(path, "river-runner")
    return sshkeys.public_line(path.read_bytes(), "river-runner")


class Session:
    """One SSH channel into the guest with the socket-like surface the exec WebSocket
    relays (recv, sendall, close) plus resize; closing it ends its SSH connection."""

    def __init__(self, transport: Any, channel: Any) -> None:
        self.transport = transport
        self.channel = channel
        self._lock = threading.Lock()

    def recv(self, size: int) -> bytes:
        return bytes(self.channel.recv(size))

    def sendall(self, data: bytes) -> None:
        self.channel.sendall(data)

    def resize(self, rows: int, cols: int) -> None:
        self.channel.resize_pty(width=cols, height=rows)

    def close(self) -> None:
        with self._lock:
            self.channel.close()
            self.transport.close()


def _check_host_key(directory: Path, key: Any) -> None:
    """Pin the guest's host key on first use; refuse a different one afterwards."""
    seen = f"{key.get_name()} {key.get_base64()}"
    path = directory / HOST_KEY_FILE
    if not path.exists():
        path.write_text(seen + "\n")
        return
    if path.read_text().strip() != seen:
        raise VmExecRefused(
            "the VM's SSH host key changed since the runner first logged in; if you "
            f"replaced it on purpose, delete {path} on the runner"
        )


def connect(directory: Path, port: int) -> Any:
    """An authenticated paramiko Transport to the guest's sshd on 127.0.0.1:`port`."""
    import paramiko

    if not has_key(directory):
        raise VmExecRefused(
            "this VM predates terminal support (it has no runner key); restart it "
            "(stop, then restart) and the runner's key is added at that boot"
        )
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_SECONDS)
    except OSError as exc:
        raise VmExecRefused(f"the VM's sshd does not answer yet (still booting?): {exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=CONNECT_SECONDS)
        _check_host_key(directory, transport.get_remote_server_key())
        pkey = paramiko.Ed25519Key.from_private_key_file(str(directory / KEY_FILE))
        transport.auth_publickey(GUEST_USER, pkey)
    except VmExecRefused:
        transport.close()
        raise
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise VmExecRefused(f"the VM's sshd refused the runner (still booting?): {exc}") from None
    return transport


def open_shell(directory: Path, port: int, command: list[str]) -> Session:
    """`command` in the guest with a pty (blocking): the terminal's shell."""
    transport = connect(directory, port)
    try:
        channel = transport.open_session(timeout=CONNECT_SECONDS)
        channel.get_pty(term=TERM, width=80, height=24)
        channel.exec_command(shlex.join(command))
    except Exception:
        transport.close()
        raise
    return Session(transport, channel)


def run(directory: Path, port: int, command: list[str], detach: bool, limit: int) -> dict[str, Any]:
    """`command` in the guest without a pty (blocking), as the docker backend's run_exec:
    detached (in a session of its own, so it outlives the SSH connection), or to its end
    with its exit code and (at most `limit` bytes of) its merged output."""
    line = shlex.join(command)
    if detach:
        line = f"setsid {line} </dev/null >/dev/null 2>&1 &"
    transport = connect(directory, port)
    try:
        channel = transport.open_session(timeout=CONNECT_SECONDS)
        channel.set_combine_stderr(True)
        channel.exec_command(line)
        output = b""
        while chunk := channel.recv(65536):
            output = (output + chunk)[-limit:]
        code = channel.recv_exit_status()
    finally:
        transport.close()
    if detach:
        return {"detached": True}
    return {"exit_code": code, "output": output.decode("utf-8", "replace")}
