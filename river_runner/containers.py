"""Container facts shared by host, runner and client: mounts, image references, environments.

No docker SDK here, so the host and the notebook client can validate a request (and name an
environment's tarball) without talking to a daemon. The runner's docker backend and the
host's environment service both build on these names.

Environments (as in KohakuRiver): an operator or user prepares a container on the host,
exports it with `docker save` to `<shared>/environments/NAME.tar`, and runners `docker load`
it when a task names it. The host records each export's sha256 in its database and sends it
with the task; the runner loads only a tarball with that digest and tags what it loaded
`river-env/NAME:d<sha256>`, so "is my copy current?" is one image lookup, survives runner
restarts, and a newer export (another digest) is loaded on the next task that names it.

River's own image namespaces (`river-env/...`, `river-vps/...`) belong to their owners: see
`river_image` (the host checks who may name one) and docs/security.md.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

from river_runner.spec import SpecError

CONTAINER_TASK_DIR = "/river"  # the per-task host dir (script) is mounted here, read-only
CONTAINER_SHARED_DIR = "/shared"  # the runner's --shared-dir, read-write
RESERVED_TARGETS = (CONTAINER_TASK_DIR, CONTAINER_SHARED_DIR)

ENV_REPOSITORY = "river-env"  # images of environments are ENV_REPOSITORY/NAME:TAG
VPS_REPOSITORY = "river-vps"  # VPS snapshots are VPS_REPOSITORY/<id>:<n> (river_server.vps)
RIVER_REPOSITORIES = (ENV_REPOSITORY, VPS_REPOSITORY)
# How docker spells its default registry in front of a repository: all name the same image.
_DEFAULT_REGISTRIES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
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


def env_loaded_tag(digest: str) -> str:
    """The tag a runner gives the image it loaded from the tarball with this sha256."""
    if not _SHA256_RE.match(digest or ""):
        raise SpecError(f"an environment digest is 64 hex digits (sha256), not {digest!r}")
    return f"d{digest}"


def river_image(reference: str) -> tuple[str, str] | None:
    """(repository, name) when an image reference names one of River's own repositories
    (`river-vps/<id>`, `river-env/<name>`), however docker would spell it
    (`docker.io/river-vps/1:2`, `river-vps/1@sha256:...`); None for any other image."""
    ref = reference.strip().lower()
    for registry in _DEFAULT_REGISTRIES:
        if ref.startswith(registry):
            ref = ref[len(registry) :]
            break
    repo = ref.split("@", 1)[0]
    head, sep, tail = repo.rpartition(":")
    if sep and "/" not in tail:
        repo = head  # drop the tag (a ':' before the last '/' is a registry port)
    namespace, _, name = repo.partition("/")
    if namespace in RIVER_REPOSITORIES:
        return namespace, name
    return None


def resolve_mount_source(source: str, prefixes: Iterable[str]) -> str:
    """The real path (symlinks resolved, on this machine) of a mount source that must lie
    under one of `prefixes` (themselves resolved); raise SpecError when it leaves them.

    Checking the path as written is not enough: a task that may mount /data can plant
    /data/root -> / and a later task mounting /data/root would get the node's whole disk.
    The caller mounts the returned path, not the one written."""
    if ".." in source.split("/"):
        raise SpecError(f"mount source {source}: '..' is not allowed")
    real = os.path.realpath(source)
    roots = [os.path.realpath(p) for p in prefixes if p.startswith("/")]
    for root in roots:
        if real == root or real.startswith(root.rstrip("/") + "/"):
            return real
    allowed = ", ".join(roots) or "none are configured"
    where = source if real == source else f"{source} (which resolves to {real})"
    raise SpecError(
        f"mount source {where} is outside the paths users may mount ({allowed}); "
        "mount a path under c.RiverHost.user_mount_prefixes, or ask an operator"
    )
