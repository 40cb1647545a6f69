"""A task program whose output is hard on log lines, and what River must make of it.

Shared by the log-line tests (process backend through the API, the client and a notebook
cell; process against docker). It writes, on purpose:

* a progress bar exactly as tqdm draws one on stderr (tqdm is not installed here): a `\\r`
  before every redraw, block characters (multi-byte UTF-8), a `\\n` at close; with 2,000
  redraws the line is ~100 KB, so it also travels as chunks (`continued`);
* plain lines after it on both streams (the ones the process backend used to lose);
* bytes that are not UTF-8, a form feed and U+2028 (which str.splitlines() also cuts at);
* a CRLF line and a 100,000-character line.
"""

from __future__ import annotations

BAR_TOTAL = 2000
BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(n: int, total: int = BAR_TOTAL, width: int = 10) -> str:
    """tqdm's default non-tty format: `{percentage:3.0f}%|{bar}| {n}/{total} [...]`."""
    eighths = n * width * 8 // total
    full, part = divmod(eighths, 8)
    body = "█" * full + (BLOCKS[part] if full < width else "")
    return f"{100 * n // total:3d}%|{body.ljust(width)}| {n}/{total} [00:00<00:00, 99.00it/s]"


LONG = "x" * 100_000

PROGRAM = f"""
import sys
BLOCKS = {BLOCKS!r}
{__import__("inspect").getsource(bar).replace("BAR_TOTAL", str(BAR_TOTAL))}
for n in range({BAR_TOTAL} + 1):
    sys.stderr.write("\\r" + bar(n))
    sys.stderr.flush()
sys.stderr.write("\\n")
sys.stderr.flush()
print("after the bar", flush=True)
sys.stdout.buffer.write(b"\\xff\\xfe ok\\n")
sys.stdout.buffer.write(b"cut \\xe2\\x82 short\\r\\n")
sys.stdout.flush()
print("form\\x0cfeed and\\u2028separator", flush=True)
print("x" * 100_000, flush=True)
print("done", flush=True)
print("err after", file=sys.stderr, flush=True)
"""

# The whole text of every line (chunks joined) per stream, as River must deliver it.
FULL_BAR = "".join("\r" + bar(n) for n in range(BAR_TOTAL + 1))
EXPECTED = {
    "stderr": [FULL_BAR, "err after"],
    "stdout": [
        "after the bar",
        "\ufffd\ufffd ok",  # one U+FFFD per byte that is not UTF-8
        "cut \ufffd\ufffd short",  # a cut-off sequence too: per byte, as docker stores it
        "form\x0cfeed and\u2028separator",
        LONG,
        "done",
    ],
}


def joined(lines: list[dict]) -> dict[str, list[str]]:
    """Per stream, the whole lines: `continued` chunks joined to the line they start."""
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}
    open_: dict[str, str] = {}
    for line in lines:
        stream = line["stream"]
        if stream not in out:
            continue
        text = open_.pop(stream, "") + line["text"]
        if line.get("continued"):
            open_[stream] = text
        else:
            out[stream].append(text)
    assert not open_, f"a line ended on a continued chunk: {open_}"
    return out
