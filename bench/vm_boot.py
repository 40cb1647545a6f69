"""VM VPS boot through River against a bare QEMU boot of the same image, interleaved.

    .venv/bin/python bench/vm_boot.py [-n 2] [--accel tcg] [--image DIR]

Per round, in this order, all in one run on the same machine:

* floor: `qemu-system-x86_64` started by hand with the argv River's vm backend uses (same
  accelerator, kernel, initrd, kernel command line, a fresh qcow2 overlay of the same base
  image and a NoCloud seed made by the same `seed_files`), timed from the process start
  until OpenSSH logs in on its loopback hostfwd and runs `true`;
* River create: `POST /river/api/vps` (`vm: true`) until OpenSSH logs in through River's
  SSH proxy and runs `true`;
* River stop -> restart: `POST .../stop` until the VPS is `stopped` (a clean ACPI
  shutdown), then `POST .../restart` until SSH logs in again (the kept disk boots).

The cluster is real (a Jupyter host and one runner process with `--vm-accel`), on
loopback. Overhead = River's time - the floor's time in the same round. Needs root (the
runner), QEMU, genisoimage, ssh and the image of .ci/build-vm-image.sh.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from river_runner.backends.vm import KERNEL_APPEND, VmBackend, mac_address, seed_files  # noqa: E402
from river_runner.vm_probe import QEMU, VmImage, accel_args  # noqa: E402
from tests.cluster import Cluster, as_user, free_port, running_cluster, wait_for  # noqa: E402

API = "/river/api/vps"
NODE = "vmbench"
BOOT_TIMEOUT = 600.0


def ssh_ok(port: int, key: Path, login: str) -> bool:
    """One OpenSSH login that runs `true`; False when nothing answered yet."""
    try:
        result = subprocess.run(
            ["ssh", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
             "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
             "-o", "LogLevel=ERROR", f"{login}@127.0.0.1", "true"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def until_ssh(port: int, key: Path, login: str, began: float) -> float:
    wait_for(lambda: ssh_ok(port, key, login), BOOT_TIMEOUT, interval=0.5, what="SSH")
    return time.perf_counter() - began


def bare_boot(image: VmImage, accel: str, work: Path, key: Path, n: int) -> float:
    """The floor: QEMU by hand, process start -> SSH runs `true`."""
    directory = work / f"bare-{n}"
    directory.mkdir()
    vps_id = str(900000 + n)
    backend = VmBackend(work, image, accel)
    disk, seed = directory / "disk.qcow2", directory / "seed.iso"
    backend._make_overlay(disk, 3 * 1024**3)
    files = seed_files(
        f"bare-{n}", (key.with_suffix(".pub")).read_text(), f"bare-{n}", mac_address(vps_id)
    )
    VmBackend._make_seed(directory, seed, files)
    port = free_port()
    argv = [
        QEMU, "-name", f"river-bench-bare-{n}", "-machine", "q35", *accel_args(accel),
        "-smp", "1", "-m", "1024", "-nodefaults", "-display", "none",
        "-serial", f"file:{directory / 'console.log'}",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", KERNEL_APPEND,
        "-drive", f"file={disk},if=virtio,format=qcow2,discard=unmap",
        "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac_address(vps_id)}",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        return until_ssh(port, key, "root", began)
    finally:
        proc.kill()
        proc.wait(10)


def state(cluster: Cluster, vps_id: str, token: str, want: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        vps = cluster.get(f"{API}/{vps_id}", **as_user(token))["vps"]
        return vps if vps["state"] == want else None

    return wait_for(check, BOOT_TIMEOUT, interval=0.2, what=f"VPS {vps_id} {want}")


def river_round(cluster: Cluster, token: str, key_dir: Path, n: int) -> dict[str, float]:
    """River create -> SSH, then stop -> stopped and restart -> SSH; the VPS is deleted."""
    body = {"vm": True, "cores": 1, "memory": "1G", "disk": "3G", "ssh": "generate"}
    began = time.perf_counter()
    response = cluster.request("POST", API, json=body, **as_user(token))
    assert response.status_code == 201, response.text
    vps = response.json()["vps"]
    key = key_dir / f"river-{n}"
    key.write_text(vps["private_key"])
    key.chmod(0o600)
    login = f"bench+{vps['id']}"
    try:
        running = state(cluster, vps["id"], token, "running")
        created = until_ssh(running["ssh_proxy_port"], key, login, began)
        began = time.perf_counter()
        cluster.ok("POST", f"{API}/{vps['id']}/stop", **as_user(token))
        state(cluster, vps["id"], token, "stopped")
        stopped = time.perf_counter() - began
        began = time.perf_counter()
        cluster.ok("POST", f"{API}/{vps['id']}/restart", **as_user(token))
        running = state(cluster, vps["id"], token, "running")
        restarted = until_ssh(running["ssh_proxy_port"], key, login, began)
    finally:
        cluster.request("DELETE", f"{API}/{vps['id']}", **as_user(token))
    return {"create": created, "stop": stopped, "restart": restarted}


def describe(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.1f} s (min {min(values):.1f}, max {max(values):.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2, help="rounds")
    parser.add_argument("--accel", default="tcg", choices=["kvm", "tcg"])
    parser.add_argument("--image", type=Path, default=Path("/var/cache/river-images/river-vm"))
    args = parser.parse_args()
    image = VmImage(args.image.resolve())
    assert image.missing() is None, image.missing()
    with tempfile.TemporaryDirectory(prefix="vmbench") as tmp:
        work = Path(tmp)
        key = work / "bare"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        runner = (NODE, "--vm-accel", args.accel, "--vm-image", str(image.directory))
        (work / "cluster").mkdir()
        with running_cluster(work / "cluster", runner, heartbeat_interval=1.0) as cluster:
            token = cluster.make_users("bench", label="vm bench")["bench"]
            rows: list[dict[str, float]] = []
            for n in range(args.n):
                floor = bare_boot(image, args.accel, work, key, n)
                row = {"floor": floor, **river_round(cluster, token, work, n)}
                rows.append(row)
                print(
                    f"round {n}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()), flush=True
                )
    print(f"accel {args.accel}, {args.n} round(s), interleaved:")
    for name in ("floor", "create", "stop", "restart"):
        print(f"  {name:8} {describe([r[name] for r in rows])}")
    for name in ("create", "restart"):
        over = [r[name] - r["floor"] for r in rows]
        print(f"  {name} - floor: {describe(over)}")


if __name__ == "__main__":
    main()
