"""Container facts shared by host, runner and client: mounts, image references, environments.

No docker SDK here, so the host and the notebook client can validate a request (and name an
environment's tarball) without talking to a daemon. The runner's docker backend and the
host's environment service both build on these names.

Environments (as in KohakuRiver): an operator or user prepares a container on the host,
exports it with `docker save` to `<shared>/environments/NAME.tar`, and runners `docker load`
it when a task names it. A runner tags what it loaded with the tarball's modification time
(`river-env/NAME:t<mtime_ns>`), so "is my copy current?" is one image lookup, survives runner
restarts, and a newer export is loaded on the next task that names it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from river_runner.spec import SpecError

CONTAINER_TASK_DIR = "/river"  # the per-task host dir (script) is mounted here, read-only
CONTAINER_SHARED_DIR = "/shared"  # the runner's --shared-dir, read-write
RESERVED_TARGETS = (CONTAINER_TASK_DIR, CONTAINER_SHARED_DIR)

ENV_REPOSITORY = "river-env"  # images of environments are ENV_REPOSITORY/NAME:TAG
ENV_DIR = "environments"  # under the shared dir
ENV_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")


def parse_mount(spec: object) -> str:
    """Check an extra mount "SRC:DST[:ro|rw]" and return it with its mode ("SRC:DST:rw").

    Both paths must be absolute and free of `..`; DST may not hide River's own mounts."""
    if not isinstance(spec, str):
        raise SpecError(f"a mount must be a string SRC:DST[:ro], not {spec!r}")
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise SpecError(f"mount {spec!r} is not SRC:DST[:ro] (e.g. /data/imagenet:/data:ro)")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise SpecError(f"mount {spec!r}: the mode after the second ':' must be ro or rw")
    for what, path in (("source", source), ("target", target)):
        if not path.startswith("/"):
            raise SpecError(f"mount {spec!r}: the {what} must be an absolute path")
        if ".." in path.split("/"):
            raise SpecError(f"mount {spec!r}: the {what} may not contain '..'")
    clean_target = posixpath.normpath(target)
    for reserved in RESERVED_TARGETS:
        if clean_target == reserved or clean_target.startswith(reserved + "/"):
            raise SpecError(f"mount {spec!r}: {reserved} is River's own mount inside the container")
    return f"{posixpath.normpath(source)}:{clean_target}:{mode}"


def mount_source(spec: str) -> str:
    """The host path of a (valid) mount spec."""
    return posixpath.normpath(spec.split(":", 1)[0])


def parse_image(value: object) -> str:
    """A docker image reference as given (`python:3.12-slim`, `reg.lab:5000/team/img@sha...`)."""
    if not isinstance(value, str) or not _IMAGE_RE.match(value):
        raise SpecError(
            f"image must be a docker image reference like python:3.12-slim, not {value!r}"
        )
    return value


def parse_env_name(value: object) -> str:
    """An environment name: lower-case letters, digits, '_', '.', '-' (a docker repo name)."""
    if not isinstance(value, str) or not ENV_NAME_RE.match(value):
        raise SpecError(
            f"environment name must be lower-case letters, digits, '_', '.' or '-' "
            f"(at most 63, starting with a letter or digit), not {value!r}"
        )
    return value


def env_tarball(shared_dir: str | Path, name: str) -> Path:
    """Where the exported tarball of environment `name` lives in the shared directory."""
    return Path(shared_dir) / ENV_DIR / f"{parse_env_name(name)}.tar"


def env_image(name: str, tag: str = "latest") -> str:
    return f"{ENV_REPOSITORY}/{name}:{tag}"


def env_loaded_tag(mtime_ns: int) -> str:
    """The tag a runner gives the image it loaded from a tarball with this mtime."""
    return f"t{mtime_ns}"
