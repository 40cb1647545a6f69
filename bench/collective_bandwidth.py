"""Bandwidth between two job members: host mode, direct overlay, hub overlay, vs. the floor.

    sudo .venv/bin/python bench/collective_bandwidth.py [--mb 256] [--rounds 5]

The paths a multi-node job's members use (issue #16), built in network namespaces with
River's own link code (nothing outside the namespaces is touched): a switch, a host machine
and three runner machines on a veth underlay (192.168.251.0/24), a workload namespace on
each runner. Runners 1 and 2 get direct paths to each other (`DirectLinks.apply`, what a
runner does on the host's `overlay_peers`); runner 3 has none (a `--no-overlay-direct`
node), so overlay traffic to it goes through the host's hub.

Paths, each one TCP stream of --mb megabytes (1 MiB writes), receiver its own process:
  floor    runner1 -> runner2 over the switch (192.168.251.2 -> .3), port 5201
  host     the same two node stacks on a job port (29500): what a `--network host`
           member pair uses (a member is a process in its node's own stack)
  direct   w1 -> river-br -> river-dx (VXLAN) -> runner2's river-br -> w2
  hub      w1 -> river-br -> VXLAN -> host (decap, route, encap) -> VXLAN -> w3
Rounds interleave the paths (floor, host, direct, hub, floor, ...) so load from other work
on the machine affects all alike; medians and the ratio to the floor are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import overlay_throughput  # noqa: E402
from overlay_throughput import Receiver, run_in, transfer  # noqa: E402

from river_runner.overlay_spec import OverlaySpec  # noqa: E402
from tests.netns.topology import Machine, Topology, netns_problem  # noqa: E402

FLOOR_PORT, JOB_PORT = 5201, 29500


def build(topo: Topology) -> tuple[dict[str, Machine], dict[str, str]]:
    """Host + runners 1..3 with River's links; r1 <-> r2 direct. Returns machines and the
    workloads' overlay addresses."""
    spec = OverlaySpec.parse(None)
    host = topo.machine("host", 1)
    runners = {i: topo.machine(f"runner{i}", i + 1) for i in (1, 2, 3)}
    assignments = {
        i: spec.assignment(i, host_underlay_ip=host.address, runner_underlay_ip=m.address)
        for i, m in runners.items()
    }
    as_json = {i: json.dumps(a.to_json()) for i, a in assignments.items()}
    load = "from river_runner.overlay_spec import OverlayAssignment as A; import json; "
    run_in(
        host,
        load + "from river_server.overlay import HostLinks; "
        + "".join(f"HostLinks().ensure(A.from_json(json.loads({as_json[i]!r}))); " for i in runners),
    )  # fmt: skip
    machines: dict[str, Machine] = {"host": host}
    addresses = {}
    for i, runner in runners.items():
        workload = topo.workload(f"w{i}")
        address = str(spec.subnet(i).network_address + 10)
        peers = [
            {"index": j, "underlay_ip": runners[j].address, "subnet": assignments[j].subnet,
             "runner_ip": assignments[j].runner_ip}
            for j in ((2,) if i == 1 else (1,) if i == 2 else ())
        ]  # fmt: skip
        run_in(
            runner,
            load + "from river_runner.overlay import RunnerOverlay, attach_namespace; "
            "from river_runner.overlay_direct import DirectLinks, Peer; "
            f"a = A.from_json(json.loads({as_json[i]!r})); RunnerOverlay(None).apply(a); "
            f"attach_namespace({workload.netns!r}, {address!r}); "
            f"DirectLinks().apply(a, frozenset(Peer.from_json(p) for p in {peers!r}))",
        )  # fmt: skip
        machines[f"r{i}"], machines[f"w{i}"] = runner, workload
        addresses[f"w{i}"] = address
    return machines, addresses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="megabytes per transfer")
    parser.add_argument("--rounds", type=int, default=5, help="transfers per path")
    args = parser.parse_args()
    problem = netns_problem()
    if problem:
        print(f"collective_bandwidth: cannot run here: {problem}", file=sys.stderr)
        return 2
    total = args.mb * overlay_throughput.CHUNK
    topo = Topology().start()
    receivers: list[Receiver] = []
    try:
        machines, ips = build(topo)
        r2 = machines["r2"].address or ""
        paths = {  # name: (sender namespace, destination, port, receiving machine)
            "floor": (machines["r1"], r2, FLOOR_PORT, machines["r2"]),
            "host": (machines["r1"], r2, JOB_PORT, machines["r2"]),
            "direct": (machines["w1"], ips["w2"], FLOOR_PORT, machines["w2"]),
            "hub": (machines["w1"], ips["w3"], FLOOR_PORT, machines["w3"]),
        }
        receivers = [Receiver(m, a, total, port=p) for _, a, p, m in paths.values()]
        senders = {name: machine.thread() for name, (machine, *_rest) in paths.items()}

        def send(name: str) -> float:
            _, address, port, _ = paths[name]
            overlay_throughput.PORT = port  # transfer() connects to the module's PORT
            return transfer(senders[name], address, total)

        for name in paths:  # warm up: ARP, FDB, route caches
            send(name)
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name in paths:
                times[name].append(send(name))
        rates = {name: [total / t / 1e6 for t in ts] for name, ts in times.items()}
        floor = statistics.median(rates["floor"])
        print(f"TCP, one stream, {args.mb} MiB per transfer, {args.rounds} rounds (MB/s)")
        for name, values in rates.items():
            shown = ", ".join(f"{v:.0f}" for v in values)
            median = statistics.median(values)
            print(f"  {name:7s} median {median:7.0f}  x{median / floor:.2f} of floor   ({shown})")
    finally:
        for receiver in receivers:
            receiver.close()
        topo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
