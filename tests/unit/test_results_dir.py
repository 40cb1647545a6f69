"""Where tasks write pulled values: a runner's own directory in /dev/shm, never one planted
there by someone else (river_runner/data_out.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from river_runner import data_out


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A world-writable directory standing in for /dev/shm, taken for a tmpfs."""
    root = tmp_path / "shm"
    root.mkdir(mode=0o1777)
    os.chmod(root, 0o1777)
    monkeypatch.setattr(data_out, "_is_tmpfs", lambda path: path == root)
    return root


def test_results_go_to_the_runners_own_directory_in_memory(shm: Path, tmp_path: Path) -> None:
    chosen = data_out.results_dir("n1", tmp_path / "data", tmp_path / "disk", shm)
    assert chosen == data_out.memory_dir("n1", tmp_path / "data", shm)
    assert chosen.parent == shm and chosen.is_dir()
    assert chosen.stat().st_mode & 0o777 == 0o711
    # The same runner finds it again after a restart (results of tasks that ended meanwhile).
    assert data_out.results_dir("n1", tmp_path / "data", tmp_path / "disk", shm) == chosen
    # Another runner of the same name with another data directory gets its own.
    assert data_out.results_dir("n1", tmp_path / "other", tmp_path / "disk", shm) != chosen


def test_a_planted_directory_or_link_is_not_used(shm: Path, tmp_path: Path) -> None:
    fallback = tmp_path / "disk"
    planted = data_out.memory_dir("n1", tmp_path / "data", shm)
    planted.mkdir()
    os.chmod(planted, 0o777)  # anyone may write: someone else's trap
    assert data_out.results_dir("n1", tmp_path / "data", fallback, shm) == fallback
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = data_out.memory_dir("n2", tmp_path / "data", shm)
    link.symlink_to(target)
    assert data_out.results_dir("n2", tmp_path / "data", fallback, shm) == fallback


def test_without_a_tmpfs_results_stay_on_disk(tmp_path: Path) -> None:
    fallback = tmp_path / "disk"
    assert data_out.results_dir("n1", tmp_path / "data", fallback, tmp_path) == fallback
