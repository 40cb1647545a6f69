"""The log-line rule (river_runner.loglines) on its own, and the process backend following
it on real processes: \\r kept, bytes decoded per byte, long lines in marked chunks, the
same lines however the bytes arrive."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from river_runner.backends.base import TaskLaunch
from river_runner.backends.process import ProcessBackend
from river_runner.loglines import MAX_LINE_BYTES, LineRenderer, LineSplitter, render
from river_runner.protocol import TaskState
from river_runner.task_account import TaskAccount, resolve_task_account
from tests.log_program import EXPECTED, PROGRAM, bar, joined
from tests.unit.test_process_backend import Recorder, _run

SAMPLE = (
    b"\r0\r1\r2after\nplain\r\n\xff\xfe ok\n\xe2\x82A\n"
    + "é".encode() * 40_000  # 80,000 bytes of two-byte characters
    + b"\r\n"
    + b"x" * 70_000
    + "€".encode() * 10
    + b"\nno newline at the end\r"
)


def shared_account() -> TaskAccount:
    """One account for every task: these tests drive the backend without a host, so no
    launch carries the user number a root runner's per-user uids need (task_account.py)."""
    return resolve_task_account("nobody" if os.geteuid() == 0 else None)


class ChunkRecorder(Recorder):
    """The process backend tests' recorder, also noting which lines are `continued`."""

    def __init__(self) -> None:
        super().__init__()
        self.continued: dict[int, list[bool]] = {}

    def output_for(self, task_id: int):  # type: ignore[no-untyped-def]
        record = super().output_for(task_id)

        def on_output(stream: str, text: str, continued: bool = False, **kw: object) -> None:
            record(stream, text, **kw)
            self.continued.setdefault(task_id, []).append(continued)

        return on_output


def split(pieces: list[bytes]) -> list[tuple[str, bool]]:
    splitter = LineSplitter()
    lines = [line for piece in pieces for line in splitter.feed(piece)]
    return lines + splitter.flush()


def test_the_rule() -> None:
    lines = split([SAMPLE])
    assert lines[:4] == [
        ("\r0\r1\r2after", False),  # \r kept inside a line
        ("plain", False),  # a CRLF ending is a line ending
        ("\ufffd\ufffd ok", False),  # one U+FFFD per invalid byte, as docker stores it
        ("\ufffd\ufffdA", False),
    ]
    # 80,000 bytes of "é": cut at a character boundary, never inside one.
    assert lines[4] == ("é" * (MAX_LINE_BYTES // 2), True)
    assert lines[5] == ("é" * (40_000 - MAX_LINE_BYTES // 2), False)
    assert lines[6] == ("x" * MAX_LINE_BYTES, True)
    assert lines[7] == ("x" * (70_000 - MAX_LINE_BYTES) + "€" * 10, False)
    assert lines[8:] == [("no newline at the end", False)]
    assert all(len(text.encode()) <= MAX_LINE_BYTES for text, _ in lines)


def test_the_same_lines_however_the_bytes_arrive() -> None:
    whole = split([SAMPLE])
    chance = random.Random(14)
    for _ in range(200):
        cuts = sorted(chance.sample(range(1, len(SAMPLE)), chance.randint(1, 60)))
        pieces = [SAMPLE[a:b] for a, b in zip([0, *cuts], [*cuts, len(SAMPLE)], strict=True)]
        assert split(pieces) == whole
    assert split([bytes([b]) for b in SAMPLE[:200]]) == split([SAMPLE[:200]])


def test_clients_render_what_a_terminal_shows() -> None:
    assert render("\r  0%|\r 50%|\r100%|") == "100%|"
    assert render("abcdef\rXY") == "XYcdef"  # a shorter redraw leaves the rest, as a tty
    assert render("plain") == "plain"
    renderer = LineRenderer()
    bar_text = "".join("\r" + bar(n) for n in range(2001))
    chunks = [text for text, _ in split([bar_text.encode() + b"\n"])]
    assert len(chunks) == 2  # the bar crossed a chunk boundary
    shown = [renderer.feed("stderr", text, i < len(chunks) - 1) for i, text in enumerate(chunks)]
    assert shown == [None, bar(2000)]
    # what is held for an unfinished line is what a terminal shows, not the whole history
    renderer.feed("stderr", bar_text, True)
    assert len(renderer._open["stderr"]) <= 2 * len(bar(2000)) + 1


def test_process_backend_keeps_every_line(tmp_path: Path) -> None:
    """A task that draws a progress bar and writes bytes that are not UTF-8: the process
    backend used to drop the bar's line and every line after it."""

    async def scenario() -> None:
        backend, recorder = ProcessBackend(tmp_path, account=shared_account()), ChunkRecorder()
        outcome = await _run(backend, recorder, TaskLaunch(1, "python", script=PROGRAM))
        await backend.close()
        assert outcome.state == TaskState.COMPLETED
        seqs = [seq for seq, _, _ in recorder.lines[1]]
        assert seqs == list(range(1, len(seqs) + 1))  # gapless
        lines = [
            {"stream": stream, "text": text, "continued": continued}
            for (_, stream, text), continued in zip(
                recorder.lines[1], recorder.continued[1], strict=True
            )
        ]
        assert joined(lines) == EXPECTED
        assert any(line["continued"] for line in lines)

    asyncio.run(scenario())
