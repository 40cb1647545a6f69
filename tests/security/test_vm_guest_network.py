"""A VM guest attacks the runner through QEMU's user-mode network (docs/security.md).

QEMU's user-mode net maps the guest's gateway, 10.0.2.2, to the runner machine's own
loopback: without `restrict=on` a guest (whose root is its user) connects to anything
listening on the runner's 127.0.0.1 — the runner's API, River's host where it shares
the machine, another VM's forwarded ports, another user's process task serving on
loopback. The guest here tries each, plus a listener of the test standing for a loopback
service of someone else, and must reach none; the owner still gets in through River's
SSH proxy (hostfwd is inbound and keeps working).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.vm_fixtures import BOOT_SECONDS, NODE, ssh, wait_ssh

# The shared VM (tests/vm_fixtures.py) boots in this test's setup when it runs first, and
# pytest-timeout counts setup against the test: the suite's 300 s would cut a slow boot short.
pytestmark = pytest.mark.timeout(BOOT_SECONDS + 240)


@pytest.fixture
def guest(shared_vm: dict[str, Any]) -> dict[str, Any]:
    """The session's running VM of a plain user (erin), SSH answering: a guest's root is its
    user, so any guest is the attacker here."""
    wait_ssh(shared_vm)
    return shared_vm


def _reaches(vm: dict[str, Any], address: str, port: int) -> str | None:
    """What the guest says when it opens a TCP connection to address:port."""
    probe = (
        f"timeout 15 bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>/dev/null"
        " && echo OPEN || echo CLOSED"
    )
    return ssh(vm, vm["login"], probe, timeout=60)


def test_the_guest_reaches_no_service_on_the_runners_loopback(guest: dict[str, Any]) -> None:
    cluster: Cluster = guest["cluster"]
    accepted: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # someone else's loopback-only service on the node
    listener.listen(4)
    listener.settimeout(1.0)

    def accept() -> None:
        while listener.fileno() != -1:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(b"connected")
            conn.close()

    watcher = threading.Thread(target=accept, daemon=True)
    watcher.start()
    try:
        targets = {
            "the runner's API": cluster.runners[NODE].port,
            "River's host": cluster.port,
            "the SSH proxy": guest["ssh_proxy_port"],
            "a loopback service of another user": listener.getsockname()[1],
        }
        for what, port in targets.items():
            answer = _reaches(guest, "10.0.2.2", port)
            assert answer == "CLOSED\n", f"the guest reached {what} on 127.0.0.1:{port}"
        assert accepted == []
    finally:
        listener.close()
        watcher.join(timeout=5)
    # The owner's way in (hostfwd, inbound) still works.
    assert ssh(guest, guest["login"], "echo still-here") == "still-here\n"
