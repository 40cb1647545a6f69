"""Shared container definitions: mount specs, image references, environment names."""

from __future__ import annotations

from pathlib import Path

import pytest

from river_runner.containers import (
    env_image,
    env_loaded_tag,
    env_tarball,
    mount_source,
    parse_env_name,
    parse_image,
    parse_mount,
)
from river_runner.spec import SpecError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/data:/data", "/data:/data:rw"),
        ("/data/imagenet/:/in:ro", "/data/imagenet:/in:ro"),
        ("/a//b:/c/./d:rw", "/a/b:/c/d:rw"),
        ("/sharedstuff:/sharedstuff", "/sharedstuff:/sharedstuff:rw"),  # not /shared itself
    ],
)
def test_mounts_normalize(spec: str, expected: str) -> None:
    assert parse_mount(spec) == expected
    assert mount_source(expected) == expected.split(":")[0]


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "/a",
        "a:/b",
        "/a:b",
        "/a:/b:x",
        "/a:/b:ro:z",
        "/a/../b:/c",
        "/a:/river",
        "/a:/shared/x",
        3,
    ],
)
def test_bad_mounts(spec: object) -> None:
    with pytest.raises(SpecError):
        parse_mount(spec)


def test_images_and_environment_names() -> None:
    for image in ("python:3.12-slim", "reg.lab:5000/team/img@sha256:abc", "river-test-python"):
        assert parse_image(image) == image
    for bad in ("", " x", "a b", None, 5):
        with pytest.raises(SpecError):
            parse_image(bad)
    assert parse_env_name("torch-2.4_cu12.1") == "torch-2.4_cu12.1"
    for bad in ("Upper", "-x", "a/b", "", "x" * 64, None):
        with pytest.raises(SpecError):
            parse_env_name(bad)
    assert env_tarball("/shared", "ml") == Path("/shared/environments/ml.tar")
    assert env_image("ml", env_loaded_tag("ab" * 32)) == "river-env/ml:d" + "ab" * 32
    with pytest.raises(SpecError):
        env_loaded_tag("../../etc")  # only a sha256 becomes a tag
    with pytest.raises(SpecError):
        env_tarball("/shared", "../etc/passwd")
