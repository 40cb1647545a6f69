"""What a task itself sees of CUDA, read through the driver API with ctypes (no framework).

`PROBE_SCRIPT` is the source of a River task: it prints one line `CUDA-PROBE {json}` with
cuInit's result, the device count, each device's name and UUID as CUDA numbers them, the
CUDA variables the task was given, and `nvidia-smi -L` where that exists. The tests and
bench/gpu_check.py compare it with what the runner's NVML inventory says about the GPUs the
task was placed on.
"""

from __future__ import annotations

import json
from typing import Any

PROBE_SCRIPT = r"""
import ctypes, ctypes.util, json, os, shutil, subprocess

def load():
    for name in ("libcuda.so.1", ctypes.util.find_library("cuda") or "libcuda.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    return None

out = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
       "order": os.environ.get("CUDA_DEVICE_ORDER"), "uid": os.getuid(), "devices": []}
cuda = load()
out["libcuda"] = cuda is not None
count = ctypes.c_int(0)
if cuda is not None:
    out["init"] = cuda.cuInit(0)
    if out["init"] == 0:
        cuda.cuDeviceGetCount(ctypes.byref(count))
    get_uuid = getattr(cuda, "cuDeviceGetUuid_v2", None) or cuda.cuDeviceGetUuid
    for i in range(count.value):
        device = ctypes.c_int()
        cuda.cuDeviceGet(ctypes.byref(device), i)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, device)
        raw = (ctypes.c_ubyte * 16)()
        get_uuid(raw, device)
        h = bytes(raw).hex()
        out["devices"].append({"name": name.value.decode(),
                               "uuid": f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"})
out["count"] = count.value
smi = shutil.which("nvidia-smi")
if smi:
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    out["nvidia_smi"] = listing.stdout.strip().splitlines()
print("CUDA-PROBE " + json.dumps(out), flush=True)
"""


def parse_probe(lines: list[str]) -> dict[str, Any]:
    """The probe's report from a task's log lines."""
    for line in lines:
        if line.startswith("CUDA-PROBE "):
            return json.loads(line[len("CUDA-PROBE ") :])
    raise AssertionError(f"no CUDA-PROBE line in the task's log: {lines[-20:]}")


def real_gpus() -> list[dict[str, Any]]:
    """This machine's GPUs through the real NVML (empty where no driver answers)."""
    from river_runner.gpu import GpuInventory

    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:
        return []
    return GpuInventory(pynvml).inventory()
