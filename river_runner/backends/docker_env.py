"""Loading exported environments (tarballs in the shared dir) into a runner's daemon, safely.

Why it is careful: the shared directory is storage that tasks and other machines can reach,
so a tarball found there is not trusted. `docker load` applies whatever tags the tarball's
manifest names, so a forged tarball could re-tag any image on the node (the default image,
another user's snapshot). Hence, before anything reaches the daemon:

1. the tarball is copied to the runner's private work directory while its sha256 is taken,
   and the digest must equal the one the host recorded at export (sent with the task); the
   copy is what gets loaded, so nobody can swap the file between the check and the load;
2. its manifest must name exactly one image with exactly the tag the export gives it
   (`river-env/NAME:latest`), and an OCI index (newer daemons) no other name;
3. after the load, the daemon must report exactly that image (the manifest's config id);
   otherwise the tag is dropped and the task fails with the reason.

The loaded image is then tagged `river-env/NAME:d<sha256>`: "is my copy current?" is one
image lookup, and a new export (another digest) is loaded by the next task that names it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors

from river_runner.containers import ENV_REPOSITORY, env_image, env_loaded_tag, env_tarball
from river_runner.spec import SpecError

log = logging.getLogger("river.runner.docker")

CHUNK = 1 << 20


class EnvironmentLoader:
    """Loads and checks environment tarballs for one runner's daemon (blocking calls)."""

    def __init__(self, client: docker.DockerClient, shared_dir: str | None, work_root: Path):
        self.client = client
        self.shared_dir = shared_dir
        self.scratch = Path(work_root) / ".env-load"
        self._locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)

    def ensure(self, name: str, digest: str | None) -> str:
        """The local image of environment `name` at export `digest`, loaded if needed."""
        if not self.shared_dir:
            raise RuntimeError(
                f"environment {name!r}: this runner has no shared directory "
                "(start it with --shared-dir)"
            )
        if not digest:
            raise RuntimeError(
                f"environment {name!r} has no export recorded on the host (deleted, or "
                "exported by an older version): export it again"
            )
        try:
            wanted = env_image(name, env_loaded_tag(digest))
        except SpecError as exc:
            raise RuntimeError(f"environment {name!r}: {exc}") from None
        tarball = env_tarball(self.shared_dir, name)
        with self._locks[name]:
            try:
                self.client.images.get(wanted)
                return wanted
            except docker.errors.ImageNotFound:
                pass
            started = time.monotonic()
            copy = self._verified_copy(name, tarball, digest)
            try:
                config_id = self._check_manifest(name, copy)
                self._load(name, copy, config_id)
            finally:
                copy.unlink(missing_ok=True)
            tag = wanted.rpartition(":")[2]
            self.client.images.get(config_id).tag(f"{ENV_REPOSITORY}/{name}", tag)
            log.info(
                "loaded environment %s from %s (sha256 %s) in %.1fs",
                name,
                tarball,
                digest,
                time.monotonic() - started,
            )
            self._drop_old_tags(name, wanted)
            return wanted

    def _verified_copy(self, name: str, tarball: Path, digest: str) -> Path:
        """A private copy of the tarball whose sha256 is `digest` (else RuntimeError)."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        copy = self.scratch / f"{name}.{uuid.uuid4().hex}.tar"
        sha = hashlib.sha256()
        try:
            with open(tarball, "rb") as source, open(copy, "wb") as out:
                while chunk := source.read(CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
        except FileNotFoundError:
            copy.unlink(missing_ok=True)
            raise RuntimeError(
                f"environment {name!r} is not exported: no {tarball} on this runner"
            ) from None
        except OSError as exc:
            copy.unlink(missing_ok=True)
            raise RuntimeError(f"environment {name!r}: cannot read {tarball}: {exc}") from None
        if sha.hexdigest() != digest:
            copy.unlink(missing_ok=True)
            raise RuntimeError(
                f"environment {name!r}: {tarball} is not the tarball its owner exported "
                f"(sha256 {sha.hexdigest()}, the host recorded {digest}); refusing to load "
                "it. Export the environment again."
            )
        return copy

    @staticmethod
    def _check_manifest(name: str, copy: Path) -> str:
        """The image id the tarball holds, when it holds exactly `river-env/NAME:latest`."""
        expected = env_image(name)

        def refuse(why: str) -> RuntimeError:
            return RuntimeError(f"environment {name!r}: refusing its tarball: {why}")

        try:
            with tarfile.open(copy) as tar:
                manifest = _json_member(tar, "manifest.json")
                index = _json_member(tar, "index.json")
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise refuse(f"not a readable docker save archive ({exc})") from None
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise refuse("its manifest.json must describe exactly one image")
        entry = manifest[0] if isinstance(manifest[0], dict) else {}
        if entry.get("RepoTags") != [expected]:
            raise refuse(f"it is tagged {entry.get('RepoTags')!r}, not [{expected!r}] only")
        config = str(entry.get("Config") or "")
        hex_id = config.rsplit("/", 1)[-1].removesuffix(".json")
        if len(hex_id) != 64 or any(c not in "0123456789abcdef" for c in hex_id):
            raise refuse(f"its manifest names no image config ({config!r})")
        if index is not None:
            for item in (index or {}).get("manifests") or []:
                notes = (item or {}).get("annotations") or {}
                for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
                    value = notes.get(key)
                    if value not in (None, "latest", expected, f"docker.io/{expected}"):
                        raise refuse(f"its OCI index names {value!r}, not {expected!r}")
        return f"sha256:{hex_id}"

    def _load(self, name: str, copy: Path, config_id: str) -> None:
        """`docker load` the checked copy; the daemon must report exactly that image."""
        try:
            with open(copy, "rb") as handle:
                loaded = self.client.images.load(handle)
        except docker.errors.DockerException as exc:
            raise RuntimeError(f"environment {name!r}: docker could not load it: {exc}") from exc
        ids = {image.id for image in loaded}
        if ids != {config_id}:
            with contextlib.suppress(docker.errors.APIError):
                image = self.client.images.get(env_image(name))
                if image.id != config_id:
                    self.client.images.remove(env_image(name))
            raise RuntimeError(
                f"environment {name!r}: loading its tarball gave {sorted(ids)}, not the one "
                f"image {config_id} its manifest names; refused"
            )

    def _drop_old_tags(self, name: str, keep: str) -> None:
        prefix = f"{ENV_REPOSITORY}/{name}:"
        try:
            images = self.client.images.list(name=f"{ENV_REPOSITORY}/{name}")
        except docker.errors.DockerException:
            return
        for image in images:
            for tag in image.tags:
                old = tag.startswith(prefix + "d") or tag.startswith(prefix + "t")
                if old and tag != keep:
                    with contextlib.suppress(docker.errors.APIError):
                        self.client.images.remove(tag)


def _json_member(tar: tarfile.TarFile, name: str) -> Any:
    """A small JSON file at the archive's top, or None when absent."""
    try:
        member = tar.getmember(name)
    except KeyError:
        return None
    if not member.isfile() or member.size > 16 << 20:
        raise ValueError(f"{name} is not a regular file of reasonable size")
    handle = tar.extractfile(member)
    if handle is None:
        return None
    with handle:
        return json.loads(handle.read())
