"""Resource requests: parsing and validation shared by host, runner and client.

One parser for every surface (REST body, CLI flags, magics) so that a request means
the same thing everywhere and a bad one gets the same message everywhere.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_MEMORY_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KI": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MI": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GI": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
    "TI": 1024**4,
    "TIB": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Upper bounds no real node reaches: a request past them is a typo or an attack on the
# arithmetic (placement, quotas), refused before it is stored.
MAX_CORES = 4096
MAX_GPUS = 1024
MAX_MEMORY = 1024**5  # 1 PiB


class SpecError(ValueError):
    """A resource request that can not be understood; the message says what to fix."""


def parse_memory(value: str | int | None) -> int:
    """Parse '512M', '8G', '1.5GiB' or a byte count into bytes (0 means no limit)."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise SpecError(f"memory must be a size like 512M or 8G, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SpecError(f"memory must not be negative (got {value})")
        return _check_memory(value, value)
    if not isinstance(value, (str, float)) or len(str(value)) > 64:
        raise SpecError(f"memory must be a size like 512M or 8G, not {str(value)[:64]!r}")
    match = _MEMORY_RE.match(str(value))
    if not match:
        raise SpecError(f"memory must be a size like 512M or 8G, not {value!r}")
    number, unit = match.groups()
    factor = _MEMORY_UNITS.get(unit.upper())
    if factor is None:
        raise SpecError(f"unknown memory unit {unit!r} in {value!r}; use K, M, G or T")
    size = float(number) * factor
    if size > MAX_MEMORY:  # also catches inf, which int() would not survive
        return _check_memory(MAX_MEMORY + 1, value)
    return int(size)


def _check_memory(size: int, written: Any) -> int:
    if size > MAX_MEMORY:
        raise SpecError(f"memory must be at most 1024T (1 PiB), not {written!r}")
    return size


def format_memory(size: int) -> str:
    """Human-readable size, the inverse of parse_memory for display."""
    if not size:
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if value >= 10 or unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


@dataclass(frozen=True)
class Target:
    """Where a task must run: `node[:numa][::gpu,gpu]` (every part optional but the node)."""

    node: str
    numa: int | None = None
    gpus: tuple[int, ...] = ()

    def __str__(self) -> str:
        text = self.node
        if self.numa is not None:
            text += f":{self.numa}"
        if self.gpus:
            text += "::" + ",".join(str(g) for g in self.gpus)
        return text


def parse_target(text: str) -> Target:
    """Parse `node[:numa][::gpu,gpu]`, e.g. `gpu1`, `gpu1:0`, `gpu1::0,1`, `gpu1:1::2`."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("target must look like node[:numa][::gpu,gpu], e.g. gpu1:0::0,1")
    text = text.strip()
    node_part, sep, gpu_part = text.partition("::")
    node, _, numa_text = node_part.partition(":")
    if not _NODE_NAME_RE.match(node):
        raise SpecError(
            f"bad node name {node!r} in target {text!r}: use letters, digits, '.', '_' or '-'"
        )
    numa: int | None = None
    if numa_text:
        if not numa_text.isdigit():
            raise SpecError(f"NUMA node in target {text!r} must be a number, not {numa_text!r}")
        numa = int(numa_text)
    elif node_part.endswith(":"):
        raise SpecError(f"empty NUMA node in target {text!r}; drop the ':' or give a number")
    gpus: tuple[int, ...] = ()
    if sep:
        items = [item.strip() for item in gpu_part.split(",")]
        if not gpu_part or not all(item.isdigit() for item in items):
            raise SpecError(
                f"GPU list in target {text!r} must be indices separated by commas, e.g. ::0,1"
            )
        gpus = tuple(int(item) for item in items)
        if len(set(gpus)) != len(gpus):
            raise SpecError(f"GPU list in target {text!r} names a GPU twice")
    return Target(node=node, numa=numa, gpus=gpus)


@dataclass
class ResourceRequest:
    """What a task asks for. `gpus` is a count; explicit indices come from the target."""

    cores: int = 1
    memory: int = 0
    gpus: int = 0
    target: Target | None = None

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return self.target.gpus if self.target else ()

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_indices) or self.gpus

    def to_json(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "memory": self.memory,
            "gpus": self.gpu_count,
            "gpu_indices": list(self.gpu_indices),
            "target": str(self.target) if self.target else None,
        }


def _as_int(name: str, value: Any, minimum: int, maximum: int, hint: str = "") -> int:
    allowed = f"{name} must be a whole number from {minimum} to {maximum}{hint}"
    if isinstance(value, bool) or value is None:
        raise SpecError(f"{allowed}, not {value!r}")
    if isinstance(value, str) and len(value) > 32:
        raise SpecError(f"{allowed}, not {value[:32]!r}...")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"{allowed}, not {value!r}") from None
    if isinstance(value, float) and value != number:
        raise SpecError(f"{allowed}, not {value!r}")
    if not minimum <= number <= maximum:
        raise SpecError(f"{allowed} (got {number})")
    return number


def parse_request(body: dict[str, Any], *, min_cores: int = 0) -> ResourceRequest:
    """Build a ResourceRequest from a JSON body (keys cores, memory, gpus, target).

    `min_cores`: the host asks 1 of callers below operator, because a 0-core task is
    unpinned and counts nothing against quotas (docs/security.md)."""
    target_text = body.get("target")
    target = parse_target(target_text) if target_text not in (None, "") else None
    gpus_given = body.get("gpus", 0)
    # `false` is not a count: refused like `true`, not read as 0 by `or 0`.
    gpus = _as_int(
        "gpus", gpus_given if isinstance(gpus_given, bool) else gpus_given or 0, 0, MAX_GPUS
    )
    if target and target.gpus and gpus and gpus != len(target.gpus):
        raise SpecError(
            f"--gpus {gpus} contradicts target {target} which names {len(target.gpus)} GPU(s)"
        )
    return ResourceRequest(
        cores=_as_int(
            "cores",
            body.get("cores", 1),
            min_cores,
            MAX_CORES,
            " (0, an unpinned task outside quotas, needs the operator role)" if min_cores else "",
        ),
        memory=parse_memory(body.get("memory", 0)),
        gpus=gpus,
        target=target,
    )


@dataclass
class Placement:
    """Concrete resources the scheduler granted to a task on one node."""

    node: str
    cpus: list[int] = field(default_factory=list)
    memory: int = 0
    gpus: list[int] = field(default_factory=list)
    numa: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
