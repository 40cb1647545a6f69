"""The SSH proxy: `ssh -p 8002 <user>+<vps_id>@host` reaches the sshd inside a VPS.

An SSH server (paramiko) on the host. It authenticates the River user, checks that the
user owns the VPS (or is an operator), and then opens its own SSH connection to the VPS's
sshd, through the VPS's runner (`tunnel.open_tunnel`), authenticating there with the
host's proxy key (whose public half every VPS with SSH gets in root's authorized_keys).
Each session channel (shell, exec, subsystem such as sftp, with its pty and window size)
and each `-L` forward (direct-tcpip) is relayed to a twin channel upstream.

Who gets through, as `<user>+<vps_id>`:
- public key: the VPS's own key (uploaded or generated at creation), for the VPS's owner;
- password: the user's River password or one of their River API tokens (login attempts
  are throttled like the web login), for the owner or an operator/admin.
Anything else is refused, with no hint whether the VPS exists. Problems after login (the
VPS is stopped, has SSH disabled, its sshd does not answer) are printed to the client.

paramiko is thread-based: one accept thread, one thread per connection, one per channel.
Database reads happen on those threads with their own sessions.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from sqlalchemy import select as sql_select

from river_runner import sshkeys
from river_runner.ids import parse_id
from river_runner.protocol import TaskState
from river_server import db
from river_server.auth import LOGIN_THROTTLE, role_at_least, user_for_token, verify_login
from river_server.limits import LimitReached, StreamGate
from river_server.tunnel import TunnelError, open_tunnel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from river_server.nodes import NodeConnections
    from river_server.vps import VpsService

log = logging.getLogger("river.ssh")
BUFFER = 64 * 1024
VPS_SSH_PORT = 22
UPSTREAM_USER = "root"
EXIT_STATUS_WAIT_S = 10.0


def load_or_create_key(path: Path) -> paramiko.PKey:
    """The key kept at `path`: made the first time (ed25519, 0600, river_runner/sshkeys.py);
    a key already there (ed25519, ECDSA or RSA, as earlier hosts made) is reused."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made meanwhile: that one is the key
            sshkeys.write_new_key(path, path.name)
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key_file(str(path))
        except paramiko.SSHException:
            continue
    raise RuntimeError(f"{path} holds no key paramiko can read")


def public_line(key: paramiko.PKey, comment: str) -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}"


def _same_key(line: str | None, key: paramiko.PKey) -> bool:
    parts = (line or "").split()
    return len(parts) >= 2 and parts[0] == key.get_name() and parts[1] == key.get_base64()


@dataclass
class Target:
    """Who logged in, and the VPS they asked for."""

    user: str
    vps_id: int
    task: Any = None


@dataclass
class _Pty:
    term: str = "xterm"
    width: int = 80
    height: int = 24


class SshProxy:
    """Listens on `address:port`; `start()` and `stop()` from the host's lifecycle."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        vps: VpsService,
        connections: NodeConnections,
        address: str,
        port: int,
        key_dir: Path,
        *,
        max_connections: int,
        max_relays_per_user: int,
    ) -> None:
        self.sessions = sessions
        self.vps = vps
        self.connections = connections
        self.address = address
        self.port = port
        self.host_key = load_or_create_key(key_dir / "ssh_proxy_host_key")
        self.client_key = load_or_create_key(key_dir / "ssh_proxy_client_key")
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self.max_conns = max_connections
        self._connections = threading.BoundedSemaphore(self.max_conns)
        # Sessions and port forwards relay in a thread each: bounded per user.
        self.relays = StreamGate(
            max_relays_per_user,
            what="SSH sessions and port forwards",
            setting="c.RiverHost.ssh_max_relays_per_user",
        )

    @property
    def authorized_key(self) -> str:
        """The line a VPS puts in root's authorized_keys so this proxy can log in."""
        return public_line(self.client_key, "river-ssh-proxy")

    def start(self) -> None:
        listener = socket.create_server((self.address, self.port), reuse_port=False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="river-ssh-accept", daemon=True).start()
        log.info("SSH proxy listening on %s:%s", self.address, self.port)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return
            # One thread per connection, taken before anyone has logged in: bounded in all
            # (c.RiverHost.ssh_max_connections); one past it is closed at once.
            if not self._connections.acquire(blocking=False):
                log.warning("SSH proxy: %s refused, %d connections open", peer, self.max_conns)
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            threading.Thread(
                target=self._serve_counted, args=(sock, peer), name="river-ssh-conn", daemon=True
            ).start()

    def _serve_counted(self, sock: socket.socket, peer: Any) -> None:
        try:
            self._serve(sock, peer)
        finally:
            self._connections.release()

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(self.host_key)
        session = _ProxySession(self, peer)
        try:
            transport.start_server(server=session)
            while transport.is_active():
                channel = transport.accept(timeout=1.0)
                if channel is not None:
                    session.on_accepted(channel)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("SSH connection from %s ended: %s", peer, exc)
        finally:
            session.close()
            transport.close()

    # ---- who may in ---------------------------------------------------------------------
    def authorize(
        self, username: str, *, key: paramiko.PKey | None = None, password: str | None = None
    ) -> Target | None:
        """The target for a login, or None to refuse it (the reason is logged only)."""
        user, sep, ident = username.rpartition("+")
        try:
            vps_id = parse_id(ident) if sep and user else None
        except ValueError:
            vps_id = None
        if vps_id is None:
            log.info("SSH login %r refused: the user name is not <user>+<vps_id>", username)
            return None
        with self.sessions() as session:
            row = session.scalar(sql_select(db.User).where(db.User.name == user))
            role = row.role if row is not None else None
            token_user = user_for_token(session, password) if password is not None else None
        task = self.vps.current(vps_id)
        # The credential is checked first, whatever the name and VPS: a refusal costs the
        # same (bcrypt included) and so tells nothing about which users or VPSes exist.
        if key is not None:
            ok = task is not None and task.owner == user
            ok = ok and _same_key(task.spec["vps"].get("public_key"), key)
        else:
            ok = self._password_ok(user, password or "", token_user)
        if not ok or role is None or task is None:
            return None
        if task.owner != user and not role_at_least(role, "operator"):
            log.info("SSH login %r refused: not their VPS", username)
            return None
        return Target(user=user, vps_id=vps_id, task=task)

    def _password_ok(self, user: str, password: str, token_user: Any) -> bool:
        if token_user is not None:
            return token_user.name == user
        if LOGIN_THROTTLE.begin(user):  # counts this guess while it is being checked
            log.info("SSH password login for %r throttled", user)
            return False
        ok = False
        try:
            ok = verify_login(self.sessions, user, password) is not None
        finally:
            LOGIN_THROTTLE.end(user, ok)
        return ok

    # ---- the way in -----------------------------------------------------------------------
    def connect_upstream(self, target: Target) -> paramiko.Transport:
        """An authenticated SSH transport to the VPS's sshd; raises `UpstreamError` with a
        message for the user when it cannot be had."""
        task = self.vps.current(target.vps_id)
        record = task.spec["vps"] if task is not None else {}
        if task is None or task.state != TaskState.RUNNING.value:
            state = "gone" if task is None else task.state
            raise UpstreamError(f"VPS {target.vps_id} is {state}, not running")
        if record.get("ssh", "disabled") == "disabled":
            raise UpstreamError(f"VPS {target.vps_id} was created with SSH disabled")
        node = self.connections.get(task.node or "")
        if node is None:
            raise UpstreamError(f"node {task.node} of VPS {target.vps_id} is offline")
        try:
            sock = open_tunnel(node.url, node.secret, task.id, VPS_SSH_PORT)
        except TunnelError as exc:
            raise UpstreamError(f"cannot reach the sshd of VPS {target.vps_id}: {exc}") from None
        upstream = paramiko.Transport(sock)
        try:
            # The VPS's host key is made at its first start, and the path to it is the
            # runner's authenticated tunnel, so it is not pinned.
            upstream.connect(username=UPSTREAM_USER, pkey=self.client_key)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            upstream.close()
            raise UpstreamError(
                f"the sshd of VPS {target.vps_id} refused the proxy: {exc}"
            ) from None
        return upstream


class UpstreamError(Exception):
    """Why the VPS's sshd could not be reached, in words for the user."""


class _ProxySession(paramiko.ServerInterface):
    """One client connection: its login, its channels' requests, and the upstream twin."""

    def __init__(self, proxy: SshProxy, peer: Any) -> None:
        self.proxy = proxy
        self.peer = peer
        self.target: Target | None = None
        self._upstream: paramiko.Transport | None = None
        self._upstream_lock = threading.Lock()
        self._ptys: dict[int, _Pty] = {}
        self._twins: dict[int, paramiko.Channel] = {}
        self._forwards: dict[int, tuple[tuple[str, int], tuple[str, int]]] = {}

    # -- authentication
    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return self._login(username, self.proxy.authorize(username, key=key))

    def check_auth_password(self, username: str, password: str) -> int:
        return self._login(username, self.proxy.authorize(username, password=password))

    def _login(self, username: str, target: Target | None) -> int:
        if target is None:
            return paramiko.AUTH_FAILED
        self.target = target
        log.info("SSH login %s from %s", username, self.peer)
        return paramiko.AUTH_SUCCESSFUL

    # -- channels
    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        self._forwards[chanid] = (destination, origin)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_pty_request(
        self, channel: Any, term: Any, width: int, height: int, *_: Any
    ) -> bool:
        name = term.decode() if isinstance(term, bytes) else str(term)
        self._ptys[channel.get_id()] = _Pty(name, width, height)
        return True

    def check_channel_window_change_request(
        self, channel: Any, width: int, height: int, *_: Any
    ) -> bool:
        twin = self._twins.get(channel.get_id())
        if twin is not None:
            with contextlib.suppress(paramiko.SSHException, OSError):
                twin.resize_pty(width=width, height=height)
        return True

    def check_channel_env_request(self, channel: Any, name: Any, value: Any) -> bool:
        return False  # sshd's AcceptEnv decides upstream; nothing is passed on

    def check_channel_shell_request(self, channel: Any) -> bool:
        return self._begin(channel, "shell", "")

    def check_channel_exec_request(self, channel: Any, command: Any) -> bool:
        text = command.decode() if isinstance(command, bytes) else str(command)
        return self._begin(channel, "exec", text)

    def check_channel_subsystem_request(self, channel: Any, name: str) -> bool:
        return self._begin(channel, "subsystem", name)

    def _begin(self, channel: Any, kind: str, argument: str) -> bool:
        if not self._take_relay(channel):
            return False
        threading.Thread(
            target=self._relay, args=(self._run_session, channel, kind, argument), daemon=True
        ).start()
        return True

    def on_accepted(self, channel: paramiko.Channel) -> None:
        forward = self._forwards.pop(channel.get_id(), None)
        if forward is not None:
            if not self._take_relay(channel):
                channel.close()
                return
            threading.Thread(
                target=self._relay, args=(self._run_forward, channel, *forward), daemon=True
            ).start()

    def _take_relay(self, channel: Any) -> bool:
        """A relay slot for the logged-in user, or the refusal written to the client."""
        assert self.target is not None
        try:
            self.proxy.relays.acquire(self.target.user)
        except LimitReached as exc:
            log.info("SSH relay refused: %s", exc)
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.sendall_stderr(f"river: {exc}\r\n".encode())
            return False
        return True

    def _relay(self, run: Any, *args: Any) -> None:
        assert self.target is not None
        try:
            run(*args)
        finally:
            self.proxy.relays.release(self.target.user)

    # -- the relays
    def upstream(self) -> paramiko.Transport:
        with self._upstream_lock:
            if self._upstream is None or not self._upstream.is_active():
                assert self.target is not None
                self._upstream = self.proxy.connect_upstream(self.target)
            return self._upstream

    def _run_session(self, channel: paramiko.Channel, kind: str, argument: str) -> None:
        try:
            twin = self.upstream().open_session()
            pty = self._ptys.get(channel.get_id())
            if pty is not None:
                twin.get_pty(term=pty.term, width=pty.width, height=pty.height)
            if kind == "shell":
                twin.invoke_shell()
            elif kind == "exec":
                twin.exec_command(argument)
            else:
                twin.invoke_subsystem(argument)
        except (UpstreamError, paramiko.SSHException, EOFError, OSError) as exc:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.sendall_stderr(f"river: {exc}\r\n".encode())
                channel.send_exit_status(255)
                channel.close()
            return
        self._twins[channel.get_id()] = twin
        _pump(channel, twin)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            # The exit status may trail the end of the output a little.
            if twin.status_event.wait(EXIT_STATUS_WAIT_S):
                channel.send_exit_status(twin.exit_status)
            channel.shutdown_write()
            channel.close()
        twin.close()
        self._twins.pop(channel.get_id(), None)

    def _run_forward(
        self, channel: paramiko.Channel, destination: tuple[str, int], origin: tuple[str, int]
    ) -> None:
        try:
            twin = self.upstream().open_channel("direct-tcpip", destination, origin)
        except (UpstreamError, paramiko.SSHException, EOFError, OSError):
            channel.close()
            return
        _pump(channel, twin)
        channel.close()
        twin.close()

    def close(self) -> None:
        with self._upstream_lock:
            if self._upstream is not None:
                self._upstream.close()


def _pump(client: paramiko.Channel, twin: paramiko.Channel) -> None:
    """Relay both ways (stderr included) until the upstream side has finished."""
    watching = [client, twin]
    while True:
        readable, _, _ = select.select(watching, [], [], 1.0)
        try:
            if client in readable:
                data = client.recv(BUFFER)
                if data:
                    twin.sendall(data)
                else:
                    twin.shutdown_write()
                    watching.remove(client)
            if twin.recv_stderr_ready():
                client.sendall_stderr(twin.recv_stderr(BUFFER))
            if twin.recv_ready():
                client.sendall(twin.recv(BUFFER))
            elif twin.closed or (twin.eof_received and not twin.recv_stderr_ready()):
                return
            if client.closed:
                return
        except (OSError, EOFError, paramiko.SSHException):
            return
