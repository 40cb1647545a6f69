"""The GPU path on a real NVIDIA GPU, as the runner and the dashboard see it.

    python bench/gpu_check.py [-n 500] [--load-seconds 12] [--json OUT.json]

1. NVML sampling cost: one full `GpuInventory.describe()` (what each heartbeat carries:
   memory used, utilisation, temperature of every GPU) timed N times, against the floor of
   the CPU/memory sample (`metrics.sample()`, psutil) the same heartbeat already takes, and
   as a share of the heartbeat budget (the default interval, 5 s).
2. Metrics under load: a real cluster (host + one process runner reading real NVML), a task
   with `gpus: 1` that keeps the GPU busy (matrix products through PyTorch where it imports,
   else the CUDA driver API's memset through ctypes), and the node's GPU figures read from
   `/river/api/nodes` (what the dashboard and the lab panel draw) twice a second before,
   during and after it.
Needs a GPU and pynvml; exits 2 where NVML finds none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measure import percentile  # noqa: E402
from river_runner import metrics  # noqa: E402
from river_runner.gpu import GpuInventory, load_nvml  # noqa: E402
from tests.cluster import Cluster  # noqa: E402

HEARTBEAT_BUDGET_S = 5.0

LOAD_SCRIPT = r"""
import os, sys, time
seconds = float(os.environ.get("LOAD_SECONDS", "10"))
end = time.time() + seconds
try:
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    print("load: torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    products = 0
    while time.time() < end:
        for _ in range(50):
            a @ b
        torch.cuda.synchronize()
        products += 50
    print(f"load: {products} bf16 8192^3 products, {products * 2 * 8192**3 / seconds / 1e12:.0f} TFLOP/s", flush=True)
except ImportError:
    import ctypes
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    device, context, pointer = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    create = getattr(cuda, "cuCtxCreate_v2")
    create(ctypes.byref(context), 0, device)
    size = 4 << 30
    assert cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(size)) == 0
    print("load: driver-API memset of 4 GiB", flush=True)
    sets = 0
    while time.time() < end:
        cuda.cuMemsetD32_v2(pointer, ctypes.c_uint(sets), ctypes.c_size_t(size // 4))
        cuda.cuCtxSynchronize()
        sets += 1
    print(f"load: {sets} memsets, {sets * size / seconds / 1e9:.0f} GB/s", flush=True)
"""


def time_calls(function: Any, n: int) -> list[float]:
    function()  # warm: the first NVML call of a handle is not what a heartbeat pays
    times = []
    for _ in range(n):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def sampling_cost(inventory: GpuInventory, n: int) -> dict[str, Any]:
    nvml_times = time_calls(inventory.describe, n)
    floor_times = time_calls(metrics.sample, n)
    result = {
        "n": n,
        "nvml_describe_median_ms": statistics.median(nvml_times) * 1000,
        "nvml_describe_p99_ms": percentile(nvml_times, 0.99) * 1000,
        "psutil_sample_median_ms": statistics.median(floor_times) * 1000,
        "psutil_sample_p99_ms": percentile(floor_times, 0.99) * 1000,
    }
    result["share_of_heartbeat_budget"] = result["nvml_describe_median_ms"] / (
        HEARTBEAT_BUDGET_S * 1000
    )
    return result


def metrics_under_load(seconds: float) -> dict[str, Any]:
    timeline: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="river-gpu-") as root:
        cluster = Cluster(Path(root), heartbeat_interval=0.5)
        cluster.start_host()
        try:
            cluster.start_runner("gpu", "--cpus", "0-1")
            started = time.monotonic()

            def record(phase: str) -> None:
                node = cluster.wait_node("gpu", "online")
                for gpu in node["gpus"]:
                    timeline.append(
                        {
                            "t": round(time.monotonic() - started, 2),
                            "phase": phase,
                            "gpu": gpu["index"],
                            "util": gpu.get("util"),
                            "memory_used_mib": (gpu.get("memory_used") or 0) // 2**20,
                            "temperature": gpu.get("temperature"),
                        }
                    )

            for _ in range(4):
                record("idle")
                time.sleep(0.5)  # a sampling period, not a synchronisation
            task = cluster.submit(
                kind="python",
                cores=1,
                gpus=1,
                script=LOAD_SCRIPT,
                env={"LOAD_SECONDS": str(seconds)},
            )
            cluster.wait_task(task["id"], "running", timeout=60)
            while cluster.task(task["id"])["state"] == "running":
                record("load")
                time.sleep(0.5)
            done = cluster.task(task["id"])
            for _ in range(6):
                record("after")
                time.sleep(0.5)
            lines = [
                line["text"]
                for line in cluster.get(f"/river/api/tasks/{task['id']}/logs")["lines"]
            ]
        finally:
            cluster.close()
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for point in timeline:
        by_phase.setdefault(point["phase"], []).append(point)

    def peak(phase: str, key: str) -> Any:
        values = [p[key] for p in by_phase.get(phase, []) if p[key] is not None]
        return max(values) if values else None

    return {
        "task_state": done["state"],
        "task_gpus": done["gpus"],
        "task_log": lines[-5:],
        "idle_util_max": peak("idle", "util"),
        "load_util_max": peak("load", "util"),
        "after_util_last": by_phase["after"][-1]["util"] if by_phase.get("after") else None,
        "idle_memory_mib_max": peak("idle", "memory_used_mib"),
        "load_memory_mib_max": peak("load", "memory_used_mib"),
        "after_memory_mib_last": (
            by_phase["after"][-1]["memory_used_mib"] if by_phase.get("after") else None
        ),
        "temperature_idle_max": peak("idle", "temperature"),
        "temperature_load_max": peak("load", "temperature"),
        "timeline": timeline,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--load-seconds", type=float, default=12.0)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    nvml = load_nvml("")
    inventory = GpuInventory(nvml)
    gpus = inventory.describe()
    if not gpus:
        print("gpu_check: NVML finds no GPU here", file=sys.stderr)
        return 2
    print("inventory (NVML, as the runner reports it):")
    for gpu in gpus:
        print(
            f"  GPU{gpu['index']} {gpu['name']} {gpu['uuid']} {gpu['memory'] / 2**30:.1f} GiB,"
            f" used {gpu['memory_used'] / 2**20:.0f} MiB, util {gpu['util']}%,"
            f" {gpu['temperature']} C"
        )
    cost = sampling_cost(inventory, args.n)
    print(
        f"one heartbeat's GPU sample (describe, {len(gpus)} GPU): median"
        f" {cost['nvml_describe_median_ms']:.3f} ms, p99 {cost['nvml_describe_p99_ms']:.3f} ms;"
        f" floor psutil sample median {cost['psutil_sample_median_ms']:.3f} ms;"
        f" {100 * cost['share_of_heartbeat_budget']:.4f}% of a {HEARTBEAT_BUDGET_S:.0f} s heartbeat"
    )
    load = metrics_under_load(args.load_seconds)
    print("GPU metrics from /river/api/nodes (what the dashboard draws):")
    print("      t  phase  util  mem MiB  temp")
    for point in load["timeline"]:
        print(
            f"  {point['t']:5.1f}  {point['phase']:<5} {point['util']!s:>5}"
            f"  {point['memory_used_mib']:7d}  {point['temperature']!s:>4}"
        )
    print(
        f"task {load['task_state']} on GPUs {load['task_gpus']}; util idle max"
        f" {load['idle_util_max']}%, under load max {load['load_util_max']}%, after"
        f" {load['after_util_last']}%; memory idle {load['idle_memory_mib_max']} MiB, load"
        f" {load['load_memory_mib_max']} MiB, after {load['after_memory_mib_last']} MiB"
    )
    for line in load["task_log"]:
        print("  task:", line)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"inventory": gpus, "sampling": cost, "load": load}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
