"""Task output kept by the host: one append-only JSON-lines file per task.

Runners push lines with sequence numbers; lines already stored are dropped, so a runner
that re-sends after a reconnect or restart never duplicates output. Readers ask for
`since=SEQ`, and an index of byte offsets lets them skip to it without rereading the file.

Each log is bounded (`c.RiverHost.log_max_bytes`): the line that would pass the bound is
replaced by one note on the "river" stream, and later lines are counted (so the sequence
stays gapless and re-sends are still recognised) but not stored. The task runs on.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from pathlib import Path
from typing import Any

from river_runner.protocol import LOG_STREAM_RIVER
from river_server.private import make_private, open_private

INDEX_EVERY = 256  # remember the byte offset of every Nth line
TRUNCATED = "[river] log truncated at "
NOTE_TRUNCATED = "truncated"
NOTE_ROOM = 128 * 1024  # kept under the bound for River's own notes (truncation, pulls)


class _TaskLog:
    def __init__(self, path: Path, repair: bool = True) -> None:
        self.path = path
        self.repair = repair  # only the writer (the leader) may cut a torn last line
        self.last_seq = 0
        self.size = 0
        self.truncated = False
        self.index_seqs: list[int] = [0]
        self.index_offsets: list[int] = [0]
        if path.exists():
            self._rebuild_index()

    def _rebuild_index(self) -> None:
        offset = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # torn last line from a crash: ignored, rewritten on resend
                line = json.loads(raw)
                seq = line["seq"]
                self.last_seq = seq
                self.truncated = self.truncated or line.get("note") == NOTE_TRUNCATED
                offset += len(raw)
                if seq % INDEX_EVERY == 0:
                    self.index_seqs.append(seq)
                    self.index_offsets.append(offset)
        if self.repair:
            with open(self.path, "r+b") as handle:
                handle.truncate(offset)
        self.size = offset


class LogStore:
    def __init__(self, root: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.root = root
        self.max_bytes = max(max_bytes, NOTE_ROOM * 2)
        make_private(root)
        self._logs: dict[int, _TaskLog] = {}
        # A standby host reads files the leader appends to: it must not keep an index
        # that the leader's later lines make stale (river_server/leadership.py).
        self.cache = True

    def reset(self, cache: bool) -> None:
        """Forget every in-memory index; keep new ones only if `cache` (leading)."""
        self._logs.clear()
        self.cache = cache

    def _log(self, task_id: int) -> _TaskLog:
        log = self._logs.get(task_id)
        if log is None:
            # The DB writer thread appends while the loop reads: setdefault keeps one
            # index per task even when both open it at once.
            log = _TaskLog(self.root / f"{task_id}.jsonl", repair=self.cache)
            if self.cache:
                log = self._logs.setdefault(task_id, log)
        return log

    def append(self, task_id: int, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store the lines not seen before (in order); return exactly those."""
        log = self._log(task_id)
        fresh = []
        raws = []
        for line in lines:
            if int(line["seq"]) != log.last_seq + 1:
                continue
            log.last_seq += 1
            entry = {
                "seq": int(line["seq"]),
                "stream": str(line.get("stream", "stdout")),
                "text": str(line.get("text", "")),
                "ts": float(line.get("ts", 0.0)),
            }
            if line.get("continued") is True:  # a chunk of a longer line (river_runner.loglines)
                entry["continued"] = True
            # River's own notes (e.g. "pulled values, part 2 of 3") may use the room kept
            # under the bound, so results pulled after a flood of output still arrive.
            note = entry["stream"] == LOG_STREAM_RIVER
            if log.truncated and not note:
                continue  # counted, not kept
            raw = _encode(entry)
            if log.size + len(raw) > self.max_bytes - (0 if note else NOTE_ROOM):
                if log.truncated:
                    continue
                entry = {
                    **{k: v for k, v in entry.items() if k != "continued"},
                    # stderr, so every client shows it; "note" marks it (a task cannot
                    # set that key) for a host restarting on this log.
                    "stream": "stderr",
                    "note": NOTE_TRUNCATED,
                    "text": f"{TRUNCATED}{log.size} bytes (c.RiverHost.log_max_bytes = "
                    f"{self.max_bytes}); later output of this task is not kept: write large "
                    "output to a file instead",
                }
                raw = _encode(entry)
                log.truncated = True
            fresh.append(entry)
            raws.append(raw)
            log.size += len(raw)
        if fresh:
            with open_private(log.path, "ab") as handle:
                offset = handle.tell()
                for line, raw in zip(fresh, raws, strict=True):
                    handle.write(raw)
                    offset += len(raw)
                    if line["seq"] % INDEX_EVERY == 0:
                        # offset first: a reader on the loop bisects the seqs, then
                        # looks up the offset at that position
                        log.index_offsets.append(offset)
                        log.index_seqs.append(line["seq"])
        return fresh

    def read(self, task_id: int, since: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        log = self._log(task_id)
        if not log.path.exists():
            return []
        position = bisect_right(log.index_seqs, since) - 1
        lines = []
        with open(log.path, "rb") as handle:
            handle.seek(log.index_offsets[position])
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                line = json.loads(raw)
                if line["seq"] > since:
                    lines.append(line)
                    if len(lines) >= limit:
                        break
        return lines

    def last_seq(self, task_id: int) -> int:
        return self._log(task_id).last_seq

    def truncated(self, task_id: int) -> bool:
        return self._log(task_id).truncated

    def forget(self, task_id: int) -> None:
        """Drop the in-memory index of a finished task (the file stays)."""
        self._logs.pop(task_id, None)


def _encode(line: dict[str, Any]) -> bytes:
    return (json.dumps(line, separators=(",", ":")) + "\n").encode()
