"""Resource-request parsing: one parser for every surface, with messages that say what to fix."""

from __future__ import annotations

import pytest

from river_runner.ids import SnowflakeGenerator, parse_id, timestamp_ms
from river_runner.spec import SpecError, Target, parse_memory, parse_request, parse_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu1", Target("gpu1")),
        ("gpu1:0", Target("gpu1", numa=0)),
        ("gpu1::0,1", Target("gpu1", gpus=(0, 1))),
        ("gpu1:1::2", Target("gpu1", numa=1, gpus=(2,))),
        ("node-a.lab", Target("node-a.lab")),
    ],
)
def test_targets_parse(text: str, expected: Target) -> None:
    assert parse_target(text) == expected
    assert str(parse_target(text)) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "must look like"),
        ("gpu1:x", "NUMA node"),
        ("gpu1:", "empty NUMA"),
        ("gpu1::", "GPU list"),
        ("gpu1::a,b", "GPU list"),
        ("gpu1::0,0", "twice"),
        ("bad name!", "bad node name"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        parse_target(text)


def test_memory_sizes() -> None:
    assert parse_memory("512M") == 512 * 1024**2
    assert parse_memory("8G") == 8 * 1024**3
    assert parse_memory("1.5GiB") == int(1.5 * 1024**3)
    assert parse_memory(1024) == 1024
    assert parse_memory(None) == 0
    for bad in ("12Q", "lots", -1, "-5G"):
        with pytest.raises(SpecError):
            parse_memory(bad)


def test_request_validation() -> None:
    request = parse_request({"cores": 2, "memory": "1G", "target": "n1::0,1"})
    assert request.gpu_count == 2 and request.gpu_indices == (0, 1)
    assert request.to_json()["target"] == "n1::0,1"
    with pytest.raises(SpecError, match="cores must be a whole number from 0 to 4096"):
        parse_request({"cores": -1})
    with pytest.raises(SpecError, match="whole number"):
        parse_request({"cores": "two"})
    with pytest.raises(SpecError, match="contradicts"):
        parse_request({"gpus": 3, "target": "n1::0"})


def test_request_bounds() -> None:
    """0 cores (unpinned, outside quotas) only where the host allows it; absurd sizes never
    (an overflowing memory size used to raise OverflowError: a 500)."""
    assert parse_request({"cores": 0}).cores == 0
    with pytest.raises(SpecError, match="from 1 to 4096.*operator role"):
        parse_request({"cores": 0}, min_cores=1)
    for body in (
        {"cores": 10**30},
        {"cores": float("inf")},
        {"gpus": 10**6},
        {"memory": "9" * 400 + "G"},
        {"memory": 2**62},
        {"memory": "5000T"},
    ):
        with pytest.raises(SpecError):
            parse_request(body)


def test_snowflakes_are_ordered_and_unique() -> None:
    generator = SnowflakeGenerator(worker_id=3)
    ids = [generator.next_id() for _ in range(20000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)
    generator.bump_past(ids[-1] + (1 << 30))
    assert generator.next_id() > ids[-1] + (1 << 30)
    assert abs(timestamp_ms(ids[0]) - timestamp_ms(ids[-1])) < 60_000
    assert parse_id(str(ids[0])) == ids[0]
    for bad in ("abc", "-1", "0", str(2**64)):
        with pytest.raises(ValueError):
            parse_id(bad)


@pytest.mark.parametrize("flag", [False, True])
def test_a_boolean_is_not_a_gpu_count(flag: bool) -> None:
    """`gpus: false` was read as 0 (`False or 0`), while `true` was refused: both are
    refused now, by the parser and by the wire models of tasks and VPSes alike."""
    from pydantic import ValidationError

    from river_runner.wire.requests import TaskSubmit, VpsCreate

    with pytest.raises(SpecError, match="gpus must be a whole number"):
        parse_request({"gpus": flag})
    for model, body in ((TaskSubmit, {"command": ["true"]}), (VpsCreate, {"image": "busybox"})):
        with pytest.raises(ValidationError, match="gpus must be a whole number"):
            model.model_validate({**body, "gpus": flag})
