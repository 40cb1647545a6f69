"""A workload address handed out again is reachable at once (river_runner/overlay.py).

The runner hands out the lowest free overlay address, so the next task with a namespace of
its own (a job member, a reserved-address task) often gets the address of one that just
ended, on a new veth with a new MAC. The runner's neighbour entry for that address still
names the old MAC (REACHABLE for 15-45 s, then a probe cycle): until it expires, every
packet to the new workload went to nobody. That was where tests/netns/test_jobs.py's
~30 s per gang went (docs/testing.md). Attaching a namespace now drops the old entry.

Here one machine namespace plays the runner (its river-br made with `ip`, as the agent's
overlay would). The product's task_netns.create/remove run in one process inside it: as in
the runner, the namespaces it makes are mounts in that process's mount namespace (`ip netns
exec` gives it its own), so one process does the whole sequence and reports what it saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from river_runner.overlay_spec import gateway_mac
from tests.netns.topology import Machine, Topology

GATEWAY = "10.128.64.1/18"
ADDRESS = "10.128.64.20"

# Make a workload namespace, knock on a closed port of its address from the runner
# ("refused": it answered), remove it, make another with the same address, knock again.
SEQUENCE = r"""
import errno, json, socket, sys
from river_runner import task_netns

first, second, address = sys.argv[1:4]

def knock():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        code = sock.connect_ex((address, 9))
    return "refused" if code == errno.ECONNREFUSED else errno.errorcode.get(code, str(code))

seen = []
try:
    task_netns.create(first, address, "river-br")
    seen.append(knock())  # the runner now has a REACHABLE entry for the first one's MAC
    task_netns.remove(first)
    task_netns.create(second, address, "river-br")
    seen.append(knock())
finally:
    task_netns.remove(first)
    task_netns.remove(second)
print(json.dumps(seen))
"""


@pytest.fixture
def runner() -> Iterator[Machine]:
    """A machine with an overlay bridge and nothing else; removed afterwards."""
    topology = Topology().start()
    try:
        machine = topology.machine("runner", 2)
        # A fixed MAC, as the agent gives its bridge (overlay_spec.gateway_mac): a bridge
        # that takes its ports' lowest MAC changes it as ports come, flushing its neighbours.
        machine.ip("link", "add", "river-br", "address", gateway_mac("runner", 1), "type", "bridge")
        machine.ip("addr", "add", GATEWAY, "dev", "river-br")
        machine.ip("link", "set", "river-br", "up")
        # A port that stays (the agent's river-vx; a veth here): a bridge that loses its last port loses
        # its carrier, and that alone would flush its neighbours.
        machine.ip("link", "add", "river-vx", "type", "veth", "peer", "name", "river-vp")
        machine.ip("link", "set", "river-vp", "up")
        machine.ip("link", "set", "river-vx", "master", "river-br", "up")
        yield machine
    finally:
        topology.close()
        for path in Path("/var/run/netns").glob(f"{topology.prefix}-task-*"):
            path.unlink(missing_ok=True)  # the name a mount of the gone process left


def test_a_reused_address_answers_from_its_new_namespace_at_once(runner: Machine) -> None:
    first, second = (f"{runner.topology.prefix}-task-{name}" for name in ("a", "b"))
    done = runner.python("-c", SEQUENCE, first, second, ADDRESS)
    assert done.returncode == 0, done.stderr
    # Without forgetting the old neighbour entry the second knock timed out (EAGAIN): the
    # runner sent the frames to the first namespace's MAC.
    assert json.loads(done.stdout) == ["refused", "refused"], done.stderr
