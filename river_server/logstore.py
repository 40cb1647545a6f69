"""Task output kept by the host: one append-only JSON-lines file per task.

Runners push lines with sequence numbers; lines already stored are dropped, so a runner
that re-sends after a reconnect or restart never duplicates output. Readers ask for
`since=SEQ`, and an index of byte offsets lets them skip to it without rereading the file.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from pathlib import Path
from typing import Any

INDEX_EVERY = 256  # remember the byte offset of every Nth line


class _TaskLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_seq = 0
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
                seq = json.loads(raw)["seq"]
                self.last_seq = seq
                offset += len(raw)
                if seq % INDEX_EVERY == 0:
                    self.index_seqs.append(seq)
                    self.index_offsets.append(offset)
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._logs: dict[int, _TaskLog] = {}

    def _log(self, task_id: int) -> _TaskLog:
        log = self._logs.get(task_id)
        if log is None:
            log = self._logs[task_id] = _TaskLog(self.root / f"{task_id}.jsonl")
        return log

    def append(self, task_id: int, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store the lines not seen before (in order); return exactly those."""
        log = self._log(task_id)
        fresh = []
        for line in lines:
            if int(line["seq"]) == log.last_seq + 1:
                fresh.append(
                    {
                        "seq": int(line["seq"]),
                        "stream": str(line.get("stream", "stdout")),
                        "text": str(line.get("text", "")),
                        "ts": float(line.get("ts", 0.0)),
                    }
                )
                log.last_seq += 1
        if fresh:
            with open(log.path, "ab") as handle:
                offset = handle.tell()
                for line in fresh:
                    raw = (json.dumps(line, separators=(",", ":")) + "\n").encode()
                    handle.write(raw)
                    offset += len(raw)
                    if line["seq"] % INDEX_EVERY == 0:
                        log.index_seqs.append(line["seq"])
                        log.index_offsets.append(offset)
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

    def forget(self, task_id: int) -> None:
        """Drop the in-memory index of a finished task (the file stays)."""
        self._logs.pop(task_id, None)
