"""How a task's bytes become log lines: the one rule both backends and every client follow.

Why a module of its own: the process backend's supervisor and the docker backend read
output in different pieces (pipe reads, daemon log frames), and they used to cut and decode
it differently; a `\\r` or a stray byte then lost lines on one backend and not the other.
The rule lives here once, stdlib only (the supervisor imports it under `python -S`):

* A line ends at `\\n`; a `\\r\\n` ending counts as `\\n` (one `\\r` dropped). Any other `\\r`
  stays in the text: a progress bar's redraws are one line, and a client shows what a
  terminal would (`render`), not every redraw.
* Bytes are decoded as UTF-8 with one U+FFFD per byte that is not part of a valid sequence
  (`river-replace`): what the docker daemon's json-file log already stores, so both
  backends give the same text for the same bytes.
* A line longer than MAX_LINE_BYTES (encoded) is cut, at a character boundary, into chunks
  of at most that size; every chunk but the last is marked `continued` (no newline after it).
  Cut points depend only on the line's text, never on how it arrived.
"""

from __future__ import annotations

import codecs

MAX_LINE_BYTES = 64 * 1024
ERRORS = "river-replace"


def _one_replacement_per_byte(exc: UnicodeError) -> tuple[str, int]:
    """Python's "replace" gives one U+FFFD per *maximal invalid subpart*; docker (Go) gives
    one per byte. Per byte, so the backends agree."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "\ufffd" * (exc.end - exc.start), exc.end


try:
    codecs.lookup_error(ERRORS)
except LookupError:
    codecs.register_error(ERRORS, _one_replacement_per_byte)


def decode(data: bytes) -> str:
    """Complete bytes (nothing more will follow) to text, by the rule above."""
    return data.decode("utf-8", ERRORS)


def _cut(text: str, limit: int) -> int:
    """Index of the longest prefix of `text` whose UTF-8 encoding fits in `limit` bytes."""
    if len(text) * 4 <= limit:
        return len(text)
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return len(text)
    cut = limit
    while cut > 0 and (encoded[cut] & 0xC0) == 0x80:  # inside a character: back to its start
        cut -= 1
    return len(encoded[:cut].decode("utf-8", "surrogatepass"))


class LineSplitter:
    """One stream's bytes in, `(text, continued)` lines out, whatever the read sizes."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(ERRORS)
        self._pending = ""

    def feed(self, data: bytes) -> list[tuple[str, bool]]:
        return self._split(self._decoder.decode(data))

    def flush(self) -> list[tuple[str, bool]]:
        """The end of the stream: the unterminated rest (if any) is the last line."""
        lines = self._split(self._decoder.decode(b"", True))
        rest, self._pending = self._pending, ""
        if rest:
            lines.extend(self._chunks(rest, ended=True))
        return lines

    def _split(self, text: str) -> list[tuple[str, bool]]:
        if not text:
            return []
        *complete, rest = (self._pending + text).split("\n")
        lines: list[tuple[str, bool]] = []
        short = self.max_bytes // 4  # at most 4 bytes a character: surely one chunk
        for line in complete:
            if len(line) <= short:  # the common case, without a call per line
                lines.append((line[:-1] if line.endswith("\r") else line, False))
            else:
                lines.extend(self._chunks(line, ended=True))
        self._pending = ""
        lines.extend(self._chunks(rest, ended=False))
        return lines

    def _chunks(self, line: str, ended: bool) -> list[tuple[str, bool]]:
        """Cut chunks off `line` while more text follows them; an unended rest waits."""
        out = []
        while True:
            cut = _cut(line, self.max_bytes)
            if cut == len(line):
                break
            out.append((line[:cut], True))
            line = line[cut:]
        if ended:  # a \r\n ending is a \n ending (cut after the chunks, as they were
            # cut while the \n had not arrived yet)
            out.append((line[:-1] if line.endswith("\r") else line, False))
        else:
            self._pending = line
        return out


def render(text: str) -> str:
    """What a terminal shows for one line: each `\\r` returns to the line's start and the
    text after it overwrites what was there (a progress bar shows its last state)."""
    if "\r" not in text:
        return text
    shown = ""
    for segment in text.split("\r"):
        shown = segment + shown[len(segment) :]
    return shown


class LineRenderer:
    """Joins a stream's `continued` chunks and renders whole lines, for clients that print.

    Holds only what a terminal would still show of an unfinished line, so a progress bar
    split into many chunks costs its width, not its history."""

    def __init__(self) -> None:
        self._open: dict[str, str] = {}

    def feed(self, stream: str, text: str, continued: bool = False) -> str | None:
        """The rendered line once it is complete, else None (the chunk is kept)."""
        joined = self._open.pop(stream, "") + text
        if not continued:
            return render(joined)
        head, cr, tail = joined.rpartition("\r")
        # A terminal's state: what is shown so far, and the text since the last \r (which
        # overwrites it from the start); rendering `shown + "\r" + tail` gives the same.
        self._open[stream] = render(head) + cr + tail if cr else joined
        return None

    def pending(self) -> dict[str, str]:
        """Unfinished lines, rendered (for a stream that ends without their last chunk)."""
        return {stream: render(text) for stream, text in self._open.items()}
