"""TCP throughput workload-to-workload over the overlay vs. over the underlay, same run.

    sudo .venv/bin/python bench/overlay_throughput.py [--mb 512] [--rounds 3]

Builds the overlay tests' topology in network namespaces (nothing outside them is touched):
a switch, a host machine and two runner machines on a veth underlay (192.168.251.0/24), and
one workload namespace on each runner. The links are made by River's own code, run inside
each machine (`HostLinks.ensure` on the host, `RunnerOverlay.apply` + `attach_namespace` on
the runners), exactly what the host and the runner agent do after a registration; the
control plane (Jupyter, HTTP) is not part of what is measured.

Paths, both one TCP connection moving --mb megabytes (1 MiB writes and reads); the receiver
is its own Python process in the destination namespace, the sender a thread of this one
whose socket was created inside the source namespace:
  underlay  runner1 -> runner2 over the switch (192.168.251.2 -> .3): the floor
  overlay   w1 -> river-br -> VXLAN -> host (decap, route, encap) -> VXLAN -> river-br -> w2
Rounds alternate (underlay, overlay, underlay, ...) so machine load affects both alike;
medians are reported, and the ratio overlay/underlay.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from river_runner.overlay_spec import OverlaySpec  # noqa: E402
from tests.netns.topology import IP, InNetns, Machine, Topology, netns_problem  # noqa: E402

PORT = 5201
CHUNK = 1 << 20


def run_in(machine: Machine, code: str) -> None:
    done = machine.python("-c", code, timeout=60)
    if done.returncode:
        raise SystemExit(f"setup in {machine.netns} failed:\n{done.stderr}")


def build(topo: Topology) -> tuple[dict[str, Machine], str, str]:
    """The topology and River's links; returns the machines and w1's / w2's addresses."""
    spec = OverlaySpec.parse(None)
    host, r1, r2 = topo.machine("host", 1), topo.machine("runner1", 2), topo.machine("runner2", 3)
    w1, w2 = topo.workload("w1"), topo.workload("w2")
    assignments = {
        i: spec.assignment(i, host_underlay_ip=host.address, runner_underlay_ip=m.address)
        for i, m in ((1, r1), (2, r2))
    }
    as_json = {i: json.dumps(a.to_json()) for i, a in assignments.items()}
    load = "from river_runner.overlay_spec import OverlayAssignment as A; import json; "
    run_in(
        host,
        load + "from river_server.overlay import HostLinks; "
        + "".join(f"HostLinks().ensure(A.from_json(json.loads({as_json[i]!r}))); " for i in (1, 2)),
    )  # fmt: skip
    addresses = {}
    for index, runner, workload in ((1, r1, w1), (2, r2, w2)):
        address = str(spec.subnet(index).network_address + 10)
        run_in(
            runner,
            load + "from river_runner.overlay import RunnerOverlay, attach_namespace; "
            f"RunnerOverlay(None).apply(A.from_json(json.loads({as_json[index]!r}))); "
            f"attach_namespace({workload.netns!r}, {address!r})",
        )  # fmt: skip
        addresses[workload.role] = address
    machines = {"host": host, "r1": r1, "r2": r2, "w1": w1, "w2": w2}
    return machines, addresses["w1"], addresses["w2"]


RECEIVER = """
import socket, sys
address, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((address, port))
listener.listen(1)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    view = memoryview(bytearray(1 << 20))
    received = 0
    while received < total:
        n = conn.recv_into(view)
        if not n:
            break
        received += n
    conn.sendall(b"k" if received == total else b"x")
    conn.close()
"""


class Receiver:
    """A receiving process in the destination namespace (its own interpreter: no GIL shared
    with the sender)."""

    def __init__(self, machine: Machine, address: str, total: int, port: int = PORT) -> None:
        self.process = subprocess.Popen(
            [IP, "netns", "exec", machine.netns, sys.executable, "-c", RECEIVER,
             address, str(port), str(total)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        if self.process.stdout is None or self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"receiver in {machine.netns} did not start")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)


def transfer(sender: InNetns, address: str, total: int) -> float:
    """Move `total` bytes over one TCP connection; seconds from connect to the receiver's ack."""
    payload = memoryview(bytes(CHUNK))
    sock = sender.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * CHUNK)
        sock.settimeout(120)
        start = time.perf_counter()
        sock.connect((address, PORT))
        sent = 0
        while sent < total:
            size = min(CHUNK, total - sent)
            sock.sendall(payload[:size])
            sent += size
        if sock.recv(1) != b"k":
            raise RuntimeError("the receiver did not get every byte")
        return time.perf_counter() - start
    finally:
        sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="megabytes per transfer")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per path")
    args = parser.parse_args()
    problem = netns_problem()
    if problem:
        print(f"overlay_throughput: cannot run here: {problem}", file=sys.stderr)
        return 2
    total = args.mb * CHUNK
    topo = Topology().start()
    receivers: list[Receiver] = []
    try:
        machines, w1_ip, w2_ip = build(topo)
        paths = {
            "underlay": (machines["r1"].thread(), "192.168.251.3"),
            "overlay": (machines["w1"].thread(), w2_ip),
        }
        receivers = [
            Receiver(machines["r2"], "192.168.251.3", total),
            Receiver(machines["w2"], w2_ip, total),
        ]
        for sender, address in paths.values():  # warm up: ARP, FDB, route caches
            transfer(sender, address, total)  # (the receivers count `total` bytes each time)
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, (sender, address) in paths.items():
                times[name].append(transfer(sender, address, total))
        rates = {name: [total / t / 1e6 for t in ts] for name, ts in times.items()}
        print(f"TCP, one connection, {args.mb} MiB per transfer, {args.rounds} rounds (MB/s)")
        for name, values in rates.items():
            shown = ", ".join(f"{v:.0f}" for v in values)
            print(f"  {name:8s} median {statistics.median(values):8.0f}   ({shown})")
        ratio = statistics.median(rates["overlay"]) / statistics.median(rates["underlay"])
        print(f"  overlay/underlay ratio: {ratio:.2f}")
        print(f"  (overlay path: {w1_ip} -> {w2_ip} through the host; underlay: .2 -> .3)")
    finally:
        for receiver in receivers:
            receiver.close()
        topo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
