"""mypy --strict on the wire contract and the client's public modules.

The contract (river_runner/wire) is what host, runner, client and the generated OpenAPI
document derive from, so its types are checked, not just written; the sync and async
clients are the Python surface notebooks import. pyproject.toml's [tool.mypy] names the
same files, so `python -m mypy` alone checks what this test checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = [
    "river_runner/wire",
    "river_magics/core.py",
    "river_magics/bridge.py",
    "river_magics/client.py",
    "river_magics/aclient.py",
    "river_magics/lab_bridge.py",
]


def test_the_contract_and_the_clients_pass_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir=/dev/null", *CHECKED],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mypy --strict found problems:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout
