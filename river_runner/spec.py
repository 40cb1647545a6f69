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
        return value
    match = _MEMORY_RE.match(str(value))
    if not match:
        raise SpecError(f"memory must be a size like 512M or 8G, not {value!r}")
    number, unit = match.groups()
    factor = _MEMORY_UNITS.get(unit.upper())
    if factor is None:
        raise SpecError(f"unknown memory unit {unit!r} in {value!r}; use K, M, G or T")
    return int(float(number) * factor)


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


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or value is None:
        raise SpecError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a whole number >= {minimum}, not {value!r}") from None
    if isinstance(value, float) and value != number:
        raise SpecError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    if number < minimum:
        raise SpecError(f"{name} must be >= {minimum} (got {number})")
    return number


def parse_request(body: dict[str, Any]) -> ResourceRequest:
    """Build a ResourceRequest from a JSON body (keys cores, memory, gpus, target)."""
    target_text = body.get("target")
    target = parse_target(target_text) if target_text not in (None, "") else None
    gpus = _as_int("gpus", body.get("gpus", 0) or 0, 0)
    if target and target.gpus and gpus and gpus != len(target.gpus):
        raise SpecError(
            f"--gpus {gpus} contradicts target {target} which names {len(target.gpus)} GPU(s)"
        )
    return ResourceRequest(
        cores=_as_int("cores", body.get("cores", 1), 0),
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
