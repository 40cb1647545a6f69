"""The JupyterLab extension ships in the wheel and JupyterLab sees it enabled.

- In the test environment (made by `pip install -e ".[test]"`, as dev.sh does).
- After `pip install .` of a clean copy of the sources into a fresh venv: the wheel build
  runs the JS build (no prebuilt output, no node_modules in the copy) and installs it as
  shared data. The venv reuses this environment's packages through a .pth file (a venv's
  --system-site-packages would expose the base interpreter's, not this venv's), and pip
  installs the project alone (--no-deps), so the test costs the JS build, not a download
  of JupyterLab. Yarn's global cache, filled by the dev install, keeps it to about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.cluster import REPO

NAME = "jupyter-river-labextension"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def labextensions(python: str | Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """`jupyter labextension list` as {name: "<dir> <status line>"}, run by `python` itself
    (`jupyter labextension` would find whichever jupyter-labextension script is on PATH)."""
    result = subprocess.run(
        [str(python), "-m", "jupyterlab.labextensions", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, str] = {}
    directory = ""
    for raw in ANSI.sub("", result.stdout + result.stderr).splitlines():
        line = raw.strip()
        if line.endswith("labextensions"):
            directory = line
        elif line:
            found.setdefault(line.split()[0], f"{directory} {line}")
    return found


def test_extension_is_enabled_in_this_environment() -> None:
    entry = labextensions(sys.executable).get(NAME)
    assert entry, f"{NAME} is not installed here; run pip install -e '.[test]'"
    assert "enabled" in entry and "OK" in entry, entry
    assert "(python, jupyter-river)" in entry, entry


def _source_files() -> list[str]:
    """Tracked and new-but-not-ignored files: what a fresh clone would contain."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [p for p in listed.split("\0") if p and (REPO / p).is_file()]


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_pip_install_into_a_fresh_venv_gives_an_enabled_extension(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is needed to build the extension from sources")
    source = tmp_path / "src"
    for rel in _source_files():
        target = source / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    assert not (source / "labextension" / "prebuilt").exists()

    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_river_parent_env.pth").write_text(sysconfig.get_path("purelib") + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PIP_TARGET"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    start = time.monotonic()
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-input", str(source)],
        capture_output=True,
        text=True,
        timeout=330,
        env=env,
    )
    elapsed = time.monotonic() - start
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
    print(f"pip install . (JS build from a clean copy) took {elapsed:.0f}s")

    installed = venv / "share" / "jupyter" / "labextensions" / NAME
    assert (installed / "package.json").is_file()
    assert list((installed / "static").glob("remoteEntry.*.js"))
    entry = labextensions(python, env).get(NAME)
    assert entry, f"{NAME} missing from `jupyter labextension list` in the new venv"
    assert entry.startswith(str(installed.parent)), entry
    assert "enabled" in entry and "OK" in entry, entry
