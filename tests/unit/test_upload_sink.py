"""The host's upload sink (river_server/uploadsink.py): real threads, a real event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from river_server.uploadsink import SinkError, UploadSink


def test_a_slow_writer_holds_the_reader_back_at_the_bound_then_lets_it_go() -> None:
    gate = threading.Event()
    absorbed: list[bytes] = []

    def absorb(chunk: bytes) -> None:
        gate.wait(timeout=30)
        absorbed.append(chunk)

    async def scenario() -> None:
        sink = UploadSink(absorb, limit=4 * 1024)
        assert sink.put(b"a" * 1024) is None  # under the bound: keep reading
        assert sink.put(b"b" * 1024) is None
        held = sink.put(b"c" * 2048)  # 4 KiB waiting: the reader must wait
        assert held is not None and not held.done()
        gate.set()  # the writer catches up
        await asyncio.wait_for(held, 10)
        await asyncio.wait_for(sink.close(), 10)

    asyncio.run(scenario())
    assert b"".join(absorbed) == b"a" * 1024 + b"b" * 1024 + b"c" * 2048


def test_a_failed_write_is_raised_on_the_loop_and_stops_the_writing() -> None:
    calls: list[int] = []

    def absorb(chunk: bytes) -> None:
        calls.append(len(chunk))
        raise OSError(28, "No space left on device")

    async def scenario() -> None:
        sink = UploadSink(absorb)
        sink.put(b"x")
        sink.put(b"y")
        with pytest.raises(SinkError) as failed:
            await asyncio.wait_for(sink.close(), 10)
        assert isinstance(failed.value.cause, OSError)
        assert "No space left" in str(failed.value)
        with pytest.raises(SinkError):
            sink.put(b"z")  # refused at once after a failure

    asyncio.run(scenario())
    assert calls == [1]  # nothing written after the first failure


def test_a_dropped_upload_stops_absorbing_and_its_thread_exits() -> None:
    gate = threading.Event()
    absorbed: list[bytes] = []

    def absorb(chunk: bytes) -> None:
        gate.wait(timeout=30)
        absorbed.append(chunk)

    async def scenario() -> None:
        before = {t.ident for t in threading.enumerate() if t.name == "river-upload"}
        sink = UploadSink(absorb)
        for _ in range(5):
            sink.put(b"x" * 10)
        sink.drop()
        gate.set()
        mine = [t for t in threading.enumerate() if t.name == "river-upload"]
        for thread in mine:
            if thread.ident not in before:
                await asyncio.to_thread(thread.join, 10)
                assert not thread.is_alive(), "the upload thread did not exit"

    asyncio.run(scenario())
    assert len(absorbed) <= 1  # at most the chunk in hand when dropped
