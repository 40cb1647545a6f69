"""No file of the repository names a package registry's host.

Machines building River reach packages through whatever mirror or proxy they are set up
with (apt sources, pip's index, npm's registry); a host written into the repository would
bypass that, or fail where only the mirror is reachable. `.ci/build-images.sh` reads the
Debian mirror from apt's sources, pip uses its own configuration, and jlpm gets npm's
registry through `labextension/jlpm.sh`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Written as patterns (escaped dots), so this file does not name them itself.
REGISTRY_HOSTS = re.compile(
    r"\b(?:deb|security|ftp|httpredir|cdn-fastly)\.debian\.org"
    r"|\bpypi\.(?:python\.)?org"
    r"|\bfiles\.pythonhosted\.org"
    r"|\b(?:registry\.)?npmjs\.(?:org|com)"
    r"|\b(?:registry\.)?yarnpkg\.com",
    re.IGNORECASE,
)


def repository_files() -> list[str]:
    """Tracked files, and new ones not yet committed (not those .gitignore skips)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name})


def test_the_pattern_catches_what_it_should() -> None:
    for text in (
        "MIRROR=http://deb" + ".debian.org/debian",
        'npmRegistryServer: "https://registry.npm' + 'js.org/"',
        "resolved https://registry.yarn" + "pkg.com/x/-/x-1.0.0.tgz",
        "https://files." + "pythonhosted.org/packages/x.whl",
        "--index-url https://pypi." + "org/simple",
    ):
        assert REGISTRY_HOSTS.search(text), text


def test_no_file_names_a_registry_host() -> None:
    found = []
    for name in repository_files():
        path = ROOT / name
        if not path.is_file() or path.is_symlink():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            match = REGISTRY_HOSTS.search(line)
            if match:
                found.append(f"{name}:{number}: {match.group(0)}")
    assert not found, (
        "these files name a package registry's host; take it from the machine's own "
        "configuration instead (apt sources, pip config, npm config get registry):\n"
        + "\n".join(found)
    )
