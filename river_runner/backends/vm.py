"""The `vm` backend: a VPS as a QEMU virtual machine (issue 19, docs/vps.md).

Each VM VPS keeps one directory, named by the VPS's id (not the task's), under the
runner's data dir: its copy-on-write qcow2 overlay over the base image, its NoCloud seed
and its QMP socket. A stop (ACPI powerdown) keeps the directory, so the next incarnation
of the VPS boots the same disk; only deleting the VPS (`forget`) removes it.

QEMU boots the base image's kernel and initrd (-kernel/-initrd; the image has no boot
loader), with the accelerator the runner's probe vouched for, user-mode networking and a
host-side port forward per guest port asked for (SSH's at start, others added over QMP
when a proxy first asks). Every control goes through QMP with the maintained `qemu.qmp`
library: system_powerdown, stop/cont, quit.

A VM outlives its runner (river_runner/backends/vm_state.py): QEMU runs in a session of its
own, writes its serial console to a file in the VM's directory (not a pipe that would break
with the runner), and `vm.json` there records its pid, task and forwarded ports. A restarted
runner `adopt`s every VM whose QEMU still runs: it reconnects over QMP, replays the console
with its line numbers and watches the process through a pidfd (it is no longer a child).

A VM that presented an overlay reservation (`ip_token`) gets a second NIC: a tap on the
runner's overlay bridge (river_runner/vm_tap.py) with exactly the reserved address, set by
the seed's network config, and the default route via the runner's bridge address. The
user-mode NIC stays for SSH and proxied ports (hostfwd, inbound only: `restrict=on`), so the
overlay NIC is the guest's only way out, and only to the overlay (docs/vps.md).

A stop keeps the disk as a numbered qcow2 snapshot (river_runner/vm_snapshots.py), taken
once QEMU has exited, with the container VPS's retention rule (the newest `keep`); the next
incarnation boots the newest snapshot.

A VM placed with GPUs gets them by VFIO passthrough (river_runner/vm_gpus.py): the placed
indices' PCI addresses (NVML) must pass vfio.py's rules (an IOMMU, isolated groups), are
bound to vfio-pci before QEMU starts and given back when it ends; otherwise the start fails
with the reason (no IOMMU on the machines this was tested on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from river_runner import vm_gpus, vm_snapshots, vm_ssh
from river_runner.backends.base import ExitCallback, Outcome, OutputCallback, TaskLaunch
from river_runner.backends.vm_state import VmState, qemu_alive, wait_pid_exit
from river_runner.protocol import TaskState
from river_runner.task_cpu import tree_cpu_seconds
from river_runner.vm_probe import QEMU, VmImage, accel_args
from river_runner.vm_tap import TapPlan, ensure_tap, remove_tap, tap_name

log = logging.getLogger("river.runner.vm")

SSH_KEYS_ENV = "RIVER_SSH_AUTHORIZED_KEYS"  # what the host puts the VPS's keys in
POWERDOWN_SECONDS = 60.0  # a clean ACPI shutdown's bound before QEMU is told to quit
MIN_MEMORY = 256 * 1024**2
DEFAULT_DISK = 8 * 1024**3
# QEMU user-mode networking's fixed plan (the guest, its gateway and its DNS forwarder).
USER_NET = {"address": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": "10.0.2.3"}
# The guest kernel's command line: eth0 without udev's rename (the seed names it so).
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0 net.ifnames=0"


CONSOLE_POLL_SECONDS = 0.2  # how often the console file is read for new lines


@dataclass
class _Vm:
    task_id: int
    vps_id: str
    directory: Path
    pid: int
    qmp: Any  # qemu.qmp.QMPClient
    proc: asyncio.subprocess.Process | None = None  # None once adopted (not our child)
    ports: dict[int, int] = field(default_factory=dict)  # guest port -> host port
    paused: bool = False
    killed: bool = False
    ended: asyncio.Future[int | None] | None = None  # QEMU's exit code (None: adopted)
    tap: str | None = None  # its overlay NIC's tap, when it has one
    overlay_ip: str | None = None
    snapshot: int | None = None  # the snapshot a stop asked for, taken once QEMU exits
    keep: int = 1  # how many snapshots that stop keeps (the newest)
    vfio: list[str] = field(default_factory=list)  # PCI devices bound to vfio-pci for it

    def save(self) -> None:
        """Record what a restarted runner needs to take this VM over."""
        VmState(
            self.task_id, self.vps_id, self.pid, dict(self.ports), self.killed,
            self.tap, self.overlay_ip, self.snapshot, self.keep, list(self.vfio),
        ).write(self.directory)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mac_address(vps_id: str, nic: int = 0) -> str:
    """A stable, locally administered MAC per VPS and NIC (QEMU's 52:54:0<nic> prefix).

    From a hash of the id, not its low bits: a snowflake's low bits are a per-millisecond
    sequence, so two VPSes often share them, and two VMs on one overlay bridge must not
    share a MAC."""
    digest = hashlib.sha1(vps_id.encode()).digest()
    return f"52:54:{nic:02x}:{digest[0]:02x}:{digest[1]:02x}:{digest[2]:02x}"


def _network_config(mac: str, overlay: TapPlan | None, overlay_mac: str) -> str:
    """cloud-init network config v2: eth0 on the user-mode net; with an overlay plan, eth1
    on the overlay and the default route there (user-mode net lets nothing out anyway)."""
    eth0 = (
        f'  eth0:\n    match:\n      macaddress: "{mac}"\n'
        f"    set-name: eth0\n    addresses: [{USER_NET['address']}]\n"
    )
    if overlay is None:
        return (
            f"version: 2\nethernets:\n{eth0}"
            f"    gateway4: {USER_NET['gateway']}\n"
            f"    nameservers:\n      addresses: [{USER_NET['dns']}]\n"
        )
    eth1 = (
        f'  eth1:\n    match:\n      macaddress: "{overlay_mac}"\n'
        f"    set-name: eth1\n    mtu: {overlay.mtu}\n"
        f"    addresses: [{overlay.address}/{overlay.prefixlen}]\n"
        f"    gateway4: {overlay.gateway}\n"
    )
    return f"version: 2\nethernets:\n{eth0}{eth1}"


def seed_files(
    hostname: str,
    keys: str,
    instance: str,
    mac: str,
    overlay: TapPlan | None = None,
    overlay_mac: str = "",
) -> dict[str, str]:
    """The NoCloud seed's files: the hostname, root's SSH keys (River's SSH proxy logs in
    as root, the user's own key works on any address the VM has) and the NICs' addresses.

    The addresses are static: QEMU's user-mode network always hands out the same plan
    (USER_NET), the overlay address was reserved, and DHCP under emulation held the boot
    ~10 s in networking.service."""
    key_lines = [k.strip() for k in keys.splitlines() if k.strip()]
    user_data = "#cloud-config\n" + "\n".join(
        [
            f"hostname: {hostname}",
            "disable_root: false",
            "users: []",
            "ssh_authorized_keys:",
            *[f"  - {line}" for line in key_lines],
        ]
    )
    return {
        "meta-data": f"instance-id: {instance}\nlocal-hostname: {hostname}\n",
        "user-data": user_data + "\n",
        # Matched by MAC (cloud-init's ifupdown renderer takes no name patterns).
        "network-config": _network_config(mac, overlay, overlay_mac),
    }


class VmBackend:
    """Runs VM VPSes; the runner's `WithVms` sends it the launches that ask for a VM."""

    name = "vm"

    def __init__(
        self,
        root: Path,
        image: VmImage,
        accel: str,
        gpu_bus_ids: Callable[[list[int]], list[str]] | None = None,
        sysfs: Path = Path("/sys"),
        powerdown_seconds: float = POWERDOWN_SECONDS,
    ) -> None:
        self.root = root
        # How long a stop waits for the guest's clean ACPI shutdown before QEMU is quit
        # (`--vm-powerdown-timeout`): a guest still booting ignores the button, and tests
        # that stop one mid-boot need not wait out the production bound.
        self.powerdown_seconds = powerdown_seconds
        self.image = image
        self.accel = accel
        self.gpu_bus_ids = gpu_bus_ids  # NVML's bus ids of placed GPU indices
        self.sysfs = sysfs
        self._vms: dict[int, _Vm] = {}
        self._watchers: dict[int, asyncio.Future[None]] = {}
        self._bridge: str | None = None  # the overlay bridge, once the runner's overlay is up
        # Open terminals by exec id (for resize); gone with the exec WebSocket that holds them.
        self._sessions: weakref.WeakValueDictionary[str, vm_ssh.Session] = (
            weakref.WeakValueDictionary()
        )

    @property
    def overlay_bridge(self) -> str | None:
        return self._bridge

    @overlay_bridge.setter
    def overlay_bridge(self, bridge: str | None) -> None:
        """The overlay comes up after adoption (at registration): re-attach the adopted
        VMs' taps then."""
        self._bridge = bridge
        if bridge is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing adopted yet
            loop = asyncio.get_running_loop()
            for vm in list(self._vms.values()):
                loop.create_task(self._readopt_tap(vm))

    def owns(self, task_id: int) -> bool:
        return task_id in self._vms

    def directory(self, vps_id: str) -> Path:
        if not vps_id.isdigit():
            raise ValueError(f"a VPS id is digits, not {vps_id!r}")
        return self.root / vps_id

    # ---- start ----------------------------------------------------------------------
    async def start(
        self, launch: TaskLaunch, on_output: OutputCallback, on_exit: ExitCallback
    ) -> int:
        vm = launch.vm or {}
        vps_id = str(vm.get("vps_id") or launch.task_id)
        directory = self.directory(vps_id)
        directory.mkdir(parents=True, exist_ok=True)
        disk = directory / "disk.qcow2"
        loop = asyncio.get_running_loop()
        # Before the disk: a disk without a key is a VM from before the key existed.
        runner_key, instance = await asyncio.to_thread(self._runner_key, directory, vps_id)
        if not disk.exists():
            size = int(vm.get("disk") or DEFAULT_DISK)
            await loop.run_in_executor(None, self._make_overlay, disk, size)
        else:  # a restart: from the newest snapshot a stop kept (none: the disk as it is)
            newest = await asyncio.to_thread(vm_snapshots.apply_newest, disk)
            if newest is not None:
                log.info("VPS %s boots its snapshot %s", vps_id, newest)
        seed = directory / "seed.iso"
        claimed = await self._claim_gpus(launch)  # before anything else is set up
        try:
            overlay = await self._overlay_tap(launch, vps_id)
        except Exception:
            await asyncio.to_thread(vm_gpus.release, self.sysfs, claimed.devices)
            raise
        files = seed_files(
            launch.hostname or f"vps-{vps_id}",
            launch.env.get(SSH_KEYS_ENV, "") + "\n" + runner_key,
            instance,
            mac_address(vps_id),
            overlay,
            mac_address(vps_id, 1),
        )
        await loop.run_in_executor(None, self._make_seed, directory, seed, files)
        qmp_path = directory / "qmp.sock"
        qmp_path.unlink(missing_ok=True)
        console = directory / "console.log"
        console.unlink(missing_ok=True)  # each incarnation's log starts at line 1
        ssh_port = _free_port()
        memory = max(launch.memory or 0, MIN_MEMORY) // 1024**2
        argv = [
            QEMU, "-name", f"river-vps-{vps_id}", "-machine", "q35", *accel_args(self.accel),
            "-smp", str(max(1, len(launch.cpus))), "-m", str(memory),
            "-nodefaults", "-display", "none",
            "-chardev", f"file,id=console,path={console}", "-serial", "chardev:console",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", KERNEL_APPEND,
            "-drive", f"file={disk},if=virtio,format=qcow2,discard=unmap",
            "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
            # restrict=on: the guest opens no connection out. User-mode net maps 10.0.2.2
            # to this machine's loopback (the runner's API, other VMs' forwards, loopback
            # services of other users' tasks); hostfwd, inbound, still works.
            "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device", f"virtio-net-pci,netdev=net0,mac={mac_address(vps_id)}",
            "-device", "virtio-rng-pci",
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
        ]  # fmt: skip
        if overlay is not None:  # the tap exists already: QEMU runs no script
            argv += [
                "-netdev", f"tap,id=net1,ifname={overlay.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=net1,mac={mac_address(vps_id, 1)}",
            ]  # fmt: skip
        argv += claimed.qemu_args  # vfio-pci devices, when GPUs were placed
        # QEMU's own messages go to a file, not a pipe that would break with the runner.
        with (directory / "qemu.log").open("wb") as qemu_log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=qemu_log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # the runner's signals (and its end) are not the VM's
            )
        try:
            qmp = await self._connect_qmp(qmp_path, proc)
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if overlay is not None:
                await asyncio.to_thread(remove_tap, overlay.tap)
            await asyncio.to_thread(vm_gpus.release, self.sysfs, claimed.devices)
            raise
        watched = _Vm(launch.task_id, vps_id, directory, proc.pid, qmp, proc, {22: ssh_port})
        watched.vfio = list(claimed.devices)
        if overlay is not None:
            watched.tap, watched.overlay_ip = overlay.tap, overlay.address
        watched.save()
        self._vms[launch.task_id] = watched
        self._watch(watched, on_output, on_exit)
        log.info("VM of VPS %s (task %s) started, pid %s", vps_id, launch.task_id, proc.pid)
        return proc.pid

    @staticmethod
    def _runner_key(directory: Path, vps_id: str) -> tuple[str, str]:
        """The VM's runner key (river_runner/vm_ssh.py) and its cloud-init instance id.

        A VM whose disk predates the key gets one at this boot under a new instance id:
        cloud-init applies the seed's keys once per instance, so only a new id has the
        guest authorise it (and, as at any first boot of an instance, make new host
        keys). The id is kept in the directory so later boots do not change it again."""
        marker = directory / "instance-id"
        predates = not vm_ssh.has_key(directory) and (directory / "disk.qcow2").exists()
        if predates and not marker.exists():
            marker.write_text(f"river-{vps_id}-runner-key\n")
        public = vm_ssh.ensure_key(directory)
        instance = marker.read_text().strip() if marker.exists() else f"river-{vps_id}"
        return public, instance

    async def _claim_gpus(self, launch: TaskLaunch) -> vm_gpus.Claimed:
        """The placed GPUs bound to vfio-pci (nothing without GPUs); a refusal (no IOMMU, a
        group not isolated ...) fails the start with vfio.py's reason."""
        if not launch.gpus:
            return vm_gpus.Claimed()
        if self.gpu_bus_ids is None:
            raise vm_gpus.PassthroughRefused("this runner cannot map GPUs to PCI devices")
        addresses = [vm_gpus.sysfs_address(b) for b in self.gpu_bus_ids(list(launch.gpus))]
        return await asyncio.to_thread(vm_gpus.claim, self.sysfs, addresses)

    async def _overlay_tap(self, launch: TaskLaunch, vps_id: str) -> TapPlan | None:
        """The VM's tap on the overlay bridge when it holds a reserved address; a VM that
        reserved one on a runner whose overlay is not up fails to start, saying so, rather
        than running without its address (as a process task does)."""
        if not launch.overlay_ip:
            return None
        if self.overlay_bridge is None:
            raise RuntimeError(
                f"VPS {vps_id} reserved overlay address {launch.overlay_ip}, but this "
                "runner is not on the overlay network"
            )
        name = tap_name(str(self.root), vps_id)
        return await asyncio.to_thread(ensure_tap, name, launch.overlay_ip, self.overlay_bridge)

    def _make_overlay(self, disk: Path, size: int) -> None:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
             "-b", str(self.image.disk.resolve()), str(disk), str(size)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    @staticmethod
    def _make_seed(directory: Path, seed: Path, files: dict[str, str]) -> None:
        source = directory / "seed"
        source.mkdir(exist_ok=True)
        for name, text in files.items():
            (source / name).write_text(text)
        subprocess.run(
            ["genisoimage", "-quiet", "-output", str(seed), "-volid", "cidata", "-joliet",
             "-rock", *[str(source / name) for name in files]],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    @staticmethod
    async def _connect_qmp(path: Path, proc: asyncio.subprocess.Process) -> Any:
        from qemu.qmp import QMPClient

        qmp = QMPClient(f"river-{proc.pid}")
        for _ in range(200):  # QEMU creates the socket within a moment of starting
            if proc.returncode is not None:
                break
            if path.exists():
                await qmp.connect(str(path))
                return qmp
            await asyncio.sleep(0.05)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 1.0)
        out = (path.parent / "qemu.log").read_bytes()[-2000:]
        raise RuntimeError(f"QEMU did not start: {out.decode(errors='replace').strip()}")

    def _watch(self, vm: _Vm, on_output: OutputCallback, on_exit: ExitCallback) -> None:
        loop = asyncio.get_running_loop()
        vm.ended = loop.create_future()
        self._watchers[vm.task_id] = asyncio.ensure_future(self._follow(vm, on_output, on_exit))

    async def _follow(self, vm: _Vm, on_output: OutputCallback, on_exit: ExitCallback) -> None:
        """Pass the serial console to the task's log (line numbers from the file, so an
        adopting runner's replay is deduplicated by the host); report the end once QEMU
        exits."""
        assert vm.ended is not None
        exit_waiter = asyncio.ensure_future(self._wait_exit(vm))
        try:
            await self._relay_console(vm, exit_waiter, on_output)
        except asyncio.CancelledError:  # the runner is closing: the VM runs on, unwatched
            exit_waiter.cancel()
            raise
        code = exit_waiter.result()
        await self._finish(vm, code, on_exit)

    @staticmethod
    async def _relay_console(
        vm: _Vm, exit_waiter: asyncio.Future[int | None], on_output: OutputCallback
    ) -> None:
        """Read new console lines until QEMU has exited (then once more)."""
        console = vm.directory / "console.log"
        offset, seq, partial = 0, 0, b""
        while True:
            done = exit_waiter.done()
            with contextlib.suppress(FileNotFoundError):
                with console.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                for raw in lines:
                    seq += 1
                    on_output("stdout", raw.decode(errors="replace").rstrip("\r"), seq)
            if done:
                break
            await asyncio.wait([exit_waiter], timeout=CONSOLE_POLL_SECONDS)
        if partial:
            on_output("stdout", partial.decode(errors="replace").rstrip("\r"), seq + 1)

    async def _finish(self, vm: _Vm, code: int | None, on_exit: ExitCallback) -> None:
        assert vm.ended is not None
        with contextlib.suppress(Exception):
            await vm.qmp.disconnect()
        self._vms.pop(vm.task_id, None)
        self._watchers.pop(vm.task_id, None)
        (vm.directory / "qmp.sock").unlink(missing_ok=True)
        VmState.remove(vm.directory)
        if vm.tap is not None:  # persistent: it would outlive QEMU
            with contextlib.suppress(Exception):
                await asyncio.to_thread(remove_tap, vm.tap)
        if vm.vfio:  # the GPUs back to their own driver
            await asyncio.to_thread(vm_gpus.release, self.sysfs, vm.vfio)
        why = "the VM was shut down"
        if vm.snapshot is not None:  # a stop: keep the closed disk before reporting the end
            try:
                kept = await asyncio.to_thread(
                    vm_snapshots.take, vm.directory / "disk.qcow2", vm.snapshot, vm.keep
                )
                log.info("VPS %s: snapshot %s taken, kept %s", vm.vps_id, vm.snapshot, kept)
            except Exception as exc:  # the disk itself is still there for the restart
                log.warning("VPS %s: snapshot %s failed: %s", vm.vps_id, vm.snapshot, exc)
                why += f"; its snapshot failed ({exc})"
        vm.ended.set_result(code)
        if vm.killed:
            outcome = Outcome(TaskState.KILLED, code, why)
        elif code == 0:
            outcome = Outcome(TaskState.COMPLETED, 0, "the guest powered off")
        elif code is None:
            outcome = Outcome(TaskState.COMPLETED, None, "the VM ended (exit code unknown)")
        else:
            outcome = Outcome(TaskState.FAILED, code, f"QEMU exited with {code}")
        on_exit(vm.task_id, outcome)

    @staticmethod
    async def _wait_exit(vm: _Vm) -> int | None:
        """QEMU's exit: its code when it is our child, else None once its pidfd fires."""
        if vm.proc is not None:
            return await vm.proc.wait()
        await wait_pid_exit(vm.pid)
        return None

    # ---- control --------------------------------------------------------------------
    async def kill(self, task_id: int) -> bool:
        """Ask the guest for a clean ACPI shutdown and return at once (the host's call does
        not wait out a guest's shutdown); the VM's end is reported when QEMU exits. A guest
        that ignores it is quit after `powerdown_seconds`. The disk stays."""
        vm = self._vms.get(task_id)
        if vm is None:
            return False
        vm.killed = True
        vm.save()  # a runner that adopts this VM reports its end as a kill too
        with contextlib.suppress(Exception):
            if vm.paused:
                await vm.qmp.execute("cont")
            await vm.qmp.execute("system_powerdown")
        asyncio.ensure_future(self._quit_after(vm, self.powerdown_seconds))
        return True

    async def _quit_after(self, vm: _Vm, seconds: float) -> None:
        """Quit QEMU (then SIGKILL it) unless it has exited within `seconds`."""
        if await self._exited(vm, seconds):
            return
        log.info("VM of task %s: quitting QEMU", vm.task_id)
        with contextlib.suppress(Exception):
            await vm.qmp.execute("quit")
        if not await self._exited(vm, 10.0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(vm.pid, signal.SIGKILL)
            await self._exited(vm, 10.0)

    @staticmethod
    async def _exited(vm: _Vm, seconds: float) -> bool:
        assert vm.ended is not None
        try:
            await asyncio.wait_for(asyncio.shield(vm.ended), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def snapshot(self, task_id: int, repository: str, keep: int) -> dict[str, Any] | None:
        """Ask for the disk's next snapshot, taken once QEMU exits (the stop that follows
        shuts the guest down cleanly first); answer with the numbers kept after it, as a
        container's snapshot does. None: no VM of this task here."""
        vm = self._vms.get(task_id)
        if vm is None:
            return None
        disk = vm.directory / "disk.qcow2"
        existing = await asyncio.to_thread(vm_snapshots.numbers, disk)
        number = vm.snapshot or max(existing, default=0) + 1
        vm.snapshot, vm.keep = number, max(1, keep)
        vm.save()  # a runner that adopts this VM still takes it
        kept = sorted({*existing, number})[-vm.keep :]
        return {"image": f"{repository}:{number}", "snapshots": kept}

    async def forget_snapshots(self, vps_id: str, which: list[int]) -> list[int]:
        """Delete some of a VPS's disk snapshots (the whole directory goes with `remove_disk`)."""
        disk = self.directory(vps_id) / "disk.qcow2"
        return await asyncio.to_thread(vm_snapshots.delete, disk, which)

    async def pause(self, task_id: int) -> bool:
        vm = self._vms.get(task_id)
        if vm is None:
            return False
        await vm.qmp.execute("stop")
        vm.paused = True
        return True

    async def resume(self, task_id: int) -> bool:
        vm = self._vms.get(task_id)
        if vm is None:
            return False
        await vm.qmp.execute("cont")
        vm.paused = False
        return True

    def running(self) -> dict[int, str]:
        return {tid: ("paused" if vm.paused else "running") for tid, vm in self._vms.items()}

    def cpu_seconds(self, task_id: int) -> float | None:
        """QEMU's CPU seconds (the guest's vCPUs are its threads): what the host's idle
        culler judges a VM VPS by. Without it every heartbeat failed and the host, after
        its misses, declared the node offline and had the VM stopped."""
        vm = self._vms.get(task_id)
        return None if vm is None else tree_cpu_seconds(vm.pid)

    async def forward_target(self, task_id: int, port: int) -> tuple[str, int] | None:
        """Where the guest's `port` is reached from this runner: a loopback port QEMU
        forwards to it (added over QMP the first time a port is asked for)."""
        vm = self._vms.get(task_id)
        if vm is None:
            return None
        if port not in vm.ports:
            host_port = _free_port()
            rule = f"tcp:127.0.0.1:{host_port}-:{port}"
            answer = await vm.qmp.execute(
                "human-monitor-command", {"command-line": f"hostfwd_add net0 {rule}"}
            )
            if answer:
                raise RuntimeError(f"QEMU refused a forward to port {port}: {answer}")
            vm.ports[port] = host_port
            vm.save()  # an adopting runner keeps using the same forward
        return "127.0.0.1", vm.ports[port]

    # ---- exec (terminal and commands) over SSH with the VM's runner key ------------
    def exec_refusal(self, task_id: int) -> str | None:
        """Why this VM cannot have a terminal now (asked when a ticket is issued, so the
        host answers 409 instead of opening a terminal that only prints an error)."""
        vm = self._vms.get(task_id)
        if vm is not None and not vm_ssh.has_key(vm.directory):
            return (
                "this VM predates terminal support (it has no runner key); restart it "
                "(stop, then restart) and the runner's key is added at that boot"
            )
        if vm is not None and vm.paused:
            return "the VM is paused; resume it first"
        return None

    def open_exec(self, task_id: int, command: list[str]) -> tuple[str, vm_ssh.Session] | None:
        """`command` in the guest with a pty over SSH (blocking); (exec id, session) or
        None when no VM of this task runs here."""
        vm = self._vms.get(task_id)
        if vm is None:
            return None
        session = vm_ssh.open_shell(vm.directory, vm.ports[22], command)
        exec_id = f"vm-{task_id}-{id(session):x}"
        self._sessions[exec_id] = session
        return exec_id, session

    def run_exec(
        self, task_id: int, command: list[str], detach: bool, limit: int = 1 << 20
    ) -> dict[str, Any] | None:
        """As the docker backend's run_exec, in the guest over SSH (blocking)."""
        vm = self._vms.get(task_id)
        if vm is None:
            return None
        return vm_ssh.run(vm.directory, vm.ports[22], command, detach, limit)

    def resize_exec(self, exec_id: str, rows: int, cols: int) -> bool:
        """Resize a terminal this backend opened; False when the id is not one of its."""
        session = self._sessions.get(exec_id)
        if session is None:
            return False
        with contextlib.suppress(Exception):
            session.resize(rows, cols)
        return True

    async def remove_disk(self, vps_id: str) -> bool:
        """A deleted VPS: quit its VM if one still runs (no clean shutdown: the disk goes
        anyway), then remove its disk and seed."""
        directory = self.directory(vps_id)
        for vm in [vm for vm in self._vms.values() if vm.vps_id == vps_id]:
            vm.killed = True
            await self._quit_after(vm, 0)
        if self.overlay_bridge is not None:  # a tap a crashed runner left behind
            with contextlib.suppress(Exception):
                await asyncio.to_thread(remove_tap, tap_name(str(self.root), vps_id))
        if not directory.exists():
            return False
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, directory)
        return True

    async def adopt(
        self, output_for: Callable[[int], OutputCallback], on_exit: ExitCallback
    ) -> list[int]:
        """Take over the VMs a previous runner process left running (see the module's
        docstring); report the end of those whose QEMU died while no runner watched."""
        adopted: list[int] = []
        if not self.root.is_dir():
            return adopted
        for directory in sorted(self.root.iterdir()):
            state = VmState.read(directory)
            if state is None or state.task_id in self._vms:
                continue
            adopted.append(state.task_id)
            if not qemu_alive(state.pid, state.vps_id):
                VmState.remove(directory)
                if state.tap:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(remove_tap, state.tap)
                if state.vfio:  # QEMU died unwatched: its GPUs back to their driver
                    await asyncio.to_thread(vm_gpus.release, self.sysfs, state.vfio)
                why = (
                    "the VM was shut down" if state.killed else "QEMU ended while no runner watched"
                )
                kind = TaskState.KILLED if state.killed else TaskState.LOST
                on_exit(state.task_id, Outcome(kind, None, why))
                continue
            try:
                qmp = await self._reconnect_qmp(directory / "qmp.sock", state.pid)
                status = await qmp.execute("query-status")
            except Exception as exc:  # QEMU alive but its QMP gone: it cannot be controlled
                log.warning("VM of VPS %s: cannot adopt (%s); quitting it", state.vps_id, exc)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(state.pid, signal.SIGKILL)
                VmState.remove(directory)
                on_exit(state.task_id, Outcome(TaskState.LOST, None, f"QMP unreachable: {exc}"))
                continue
            vm = _Vm(state.task_id, state.vps_id, directory, state.pid, qmp, None, state.ports)
            vm.paused, vm.killed = status.get("status") == "paused", state.killed
            vm.tap, vm.overlay_ip = state.tap, state.overlay_ip
            vm.snapshot, vm.keep, vm.vfio = state.snapshot, state.keep, list(state.vfio)
            await self._readopt_tap(vm)
            self._vms[vm.task_id] = vm
            self._watch(vm, output_for(vm.task_id), on_exit)
            log.info("adopted the VM of VPS %s (task %s, pid %s)", vm.vps_id, vm.task_id, vm.pid)
        return adopted

    async def _readopt_tap(self, vm: _Vm) -> None:
        """Put an adopted VM's tap back on the bridge (QEMU holds it open; a bridge
        re-created while no runner ran has lost its ports)."""
        if vm.tap is None or vm.overlay_ip is None:
            return
        if self.overlay_bridge is None:
            log.warning("VM of VPS %s: no overlay bridge yet for its tap", vm.vps_id)
            return
        try:
            await asyncio.to_thread(ensure_tap, vm.tap, vm.overlay_ip, self.overlay_bridge)
        except Exception as exc:
            log.warning("VM of VPS %s: tap %s not re-attached (%s)", vm.vps_id, vm.tap, exc)

    @staticmethod
    async def _reconnect_qmp(path: Path, pid: int) -> Any:
        from qemu.qmp import QMPClient

        qmp = QMPClient(f"river-{pid}")
        await asyncio.wait_for(qmp.connect(str(path)), 10.0)
        return qmp

    async def close(self) -> None:
        """Leave the VMs running for the next runner process to adopt: only let go of
        their QMP connections and stop watching them."""
        for task_id, watcher in list(self._watchers.items()):
            watcher.cancel()
            vm = self._vms.get(task_id)
            if vm is not None:
                with contextlib.suppress(Exception):
                    await vm.qmp.disconnect()
        self._watchers.clear()
        self._vms.clear()
