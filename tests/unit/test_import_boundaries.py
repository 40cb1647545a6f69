"""The host and the client import only the agent-free part of river_runner (design.md 1, 8).

`river_runner` is both the agent on a compute node and the home of the definitions every
part shares. The host (river_server) and the notebook client (river_magics, river_widgets)
may import the shared part only: an agent module on the host would drag in the runner's
backends, docker SDK, NVML and metrics, and tie the host's code to the agent's. The allowed
modules are listed here, by name, so that a new import of agent code anywhere on the host
or client side fails this test instead of slipping through; a module that should be shared
is added to SHARED deliberately, after checking that it imports no agent code itself
(`test_each_shared_module_imports_only_shared_modules`).

Each module is imported from scratch in a subprocess (River's own modules are dropped from
`sys.modules` before each), since an import made by an earlier module would otherwise hide
the next one's; the wire package is imported alone in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The contract: river_runner modules the host and the clients may import. The wire package
# (river_runner.wire and everything in it) is the contract package itself; its own imports
# are checked below.
SHARED = frozenset(
    {
        "river_runner",  # the package's __init__: a version string, no imports
        "river_runner.ids",  # snowflake IDs
        "river_runner.protocol",  # states, headers, message kinds, log note markers
        "river_runner.spec",  # resource-request parsing
        "river_runner.durations",  # time-limit parsing (`90m`, `2h`), shared by all clients
        "river_runner.containers",  # mounts, image references, environment names
        "river_runner.overlay_spec",  # overlay subnet math and assignments
        "river_runner.loglines",  # how bytes become log lines, and how clients show them
        "river_runner.splice",  # the socket relay the host's proxy and the runner share
        "river_runner.netlinks",  # pyroute2 link plumbing of the overlay's hub and spokes
        "river_runner.vps_shell",  # the terminal client (a local TTY to an exec WebSocket)
        "river_runner.digest",  # the data plane's blob names (BLAKE3)
        "river_runner.samehost",  # "same machine" for linking pushed blobs
        "river_runner.sshkeys",  # ed25519 key pairs (VPS keys, the SSH proxy's, VM keys)
    }
)
WIRE = "river_runner.wire"
# What the wire package may import besides the standard library and SHARED.
WIRE_THIRD_PARTY = frozenset(
    {"pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection"}
)

# Imports each module named on stdin's JSON list and prints, for each, the River modules
# present after it. River's own modules are dropped from sys.modules before each import, so
# each is imported from scratch; third-party ones stay (many cannot be imported twice).
PROBE = """
import importlib, json, sys
OURS = ("river_runner", "river_server", "river_magics", "river_widgets")
names = json.load(sys.stdin)
loaded = {}
for name in names:
    for module in [m for m in sys.modules if m.split(".")[0] in OURS]:
        del sys.modules[module]
    importlib.import_module(name)
    loaded[name] = sorted(m for m in sys.modules if m.split(".")[0] in OURS)
print(json.dumps(loaded))
"""
# Imports the wire package alone in a fresh interpreter and prints every module it added.
WIRE_PROBE = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
package = importlib.import_module("river_runner.wire")
for info in pkgutil.walk_packages(package.__path__, prefix="river_runner.wire."):
    importlib.import_module(info.name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def is_shared(module: str) -> bool:
    return module in SHARED or module == WIRE or module.startswith(WIRE + ".")


def modules_of(package: str) -> list[str]:
    """Every module of a package, by walking its source tree (nothing imported here)."""
    path = ROOT / package.replace(".", "/")
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=package + "."):
        names.append(info.name)
    return sorted(names)


def run_probe(probe: str, stdin: str = "") -> object:
    result = subprocess.run(
        [sys.executable, "-c", probe],
        input=stdin,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"importing failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def imports_of(names: list[str]) -> dict[str, list[str]]:
    """{module: the River modules loaded once it is imported alone}. One interpreter for the
    lot (a 2-core machine), River's modules dropped before each import."""
    loaded = run_probe(PROBE, json.dumps(names))
    assert isinstance(loaded, dict) and set(loaded) == set(names)
    return loaded


def agent_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.split(".")[0] == "river_runner" and not is_shared(m)]


@pytest.mark.parametrize("package", ["river_server", "river_magics", "river_widgets"])
def test_host_and_client_modules_import_no_runner_agent_code(package: str) -> None:
    names = modules_of(package)
    assert len(names) > 1, f"found no modules of {package} under {ROOT}"
    offenders = {name: agent_modules(loaded) for name, loaded in imports_of(names).items()}
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, (
        f"{package} imports runner agent code (only the shared river_runner modules listed "
        f"in SHARED and river_runner.wire may be imported; move the shared piece there): "
        f"{json.dumps(offenders, indent=1)}"
    )


def test_the_client_imports_nothing_of_the_host() -> None:
    names = modules_of("river_magics") + modules_of("river_widgets")
    offenders = {
        name: [m for m in loaded if m.split(".")[0] == "river_server"]
        for name, loaded in imports_of(names).items()
    }
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, f"the client imports host code: {json.dumps(offenders, indent=1)}"


def test_each_shared_module_imports_only_shared_modules() -> None:
    """SHARED is closed: a shared module that starts importing agent code fails here, not
    only once some host module happens to reach it."""
    names = sorted(SHARED) + modules_of(WIRE)
    offenders = {name: agent_modules(loaded) for name, loaded in imports_of(names).items()}
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, f"shared modules import agent code: {json.dumps(offenders, indent=1)}"


def test_the_wire_package_imports_only_the_standard_library_pydantic_and_shared_modules() -> None:
    loaded = run_probe(WIRE_PROBE)
    assert isinstance(loaded, list)
    assert f"{WIRE}.requests" in loaded and f"{WIRE}.forwarding" in loaded
    allowed_tops = set(sys.stdlib_module_names) | WIRE_THIRD_PARTY
    offenders = sorted(
        module
        for module in loaded
        if not module.startswith("_")  # the interpreter's private C helpers
        and module.split(".")[0] not in allowed_tops
        and not (module.split(".")[0] == "river_runner" and is_shared(module))
    )
    assert not offenders, (
        f"the wire package imports more than the standard library, pydantic and the shared "
        f"river_runner modules: {offenders}"
    )
