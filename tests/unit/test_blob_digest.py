"""Blob names: BLAKE3 of the bytes, with sha256 names from before still recognised."""

from __future__ import annotations

import hashlib
from pathlib import Path

import blake3
import pytest

from river_runner import digest


def test_a_blob_is_named_by_the_blake3_of_its_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB: large enough for the threaded path
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = blake3.blake3(data).hexdigest()
    assert digest.of_bytes(data) == expected
    assert digest.file_digest(path) == expected
    hashing = digest.hasher()
    for start in range(0, len(data), 4 * 1024 * 1024):
        hashing.update(memoryview(data)[start : start + 4 * 1024 * 1024])
    assert hashing.hexdigest() == expected
    assert len(expected) == 64 and expected != hashlib.sha256(data).hexdigest()


def test_a_sha256_name_from_before_blake3_still_matches_but_no_other_name_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"pushed before the upgrade")
    computed = digest.file_digest(path)
    assert digest.matches(path, computed, computed)
    assert digest.matches(path, hashlib.sha256(path.read_bytes()).hexdigest(), computed)
    assert not digest.matches(path, "0" * 64, computed)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert digest.file_digest(empty) == blake3.blake3(b"").hexdigest()


def test_a_client_without_blake3_names_blobs_by_sha256_which_hosts_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """River's modules on a kernel's path as a zip cannot load the compiled blake3: such a
    client still pushes, naming by sha256 (the host's `matches` accepts it)."""
    path = tmp_path / "blob"
    path.write_bytes(b"pushed from a zip")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    with monkeypatch.context() as patched:
        patched.setattr(digest, "blake3", None)
        assert digest.of_bytes(path.read_bytes()) == expected
        assert digest.file_digest(path) == expected
    assert digest.matches(path, expected, digest.file_digest(path))
