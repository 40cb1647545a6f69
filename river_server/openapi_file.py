"""The OpenAPI document as a file, for the labextension's generated TypeScript types.

The lab build (labextension/package.json `build:types`) turns a committed copy of the
document, labextension/src/generated/openapi.json, into TypeScript with openapi-typescript.
The copy is committed rather than produced during the build because the wheel build runs
in an isolated environment without pydantic or River; writing it here, from the same
function that serves /river/api/openapi.json, needs no server: the route table is a pure
function of the models (river_server/openapi.py). tests/unit/test_generated_types.py fails
when the committed copy differs from `render()`, so a model change must be followed by
`python -m river_server.openapi_file` (or `jlpm build:openapi`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from river_server.openapi import openapi_document

DEFAULT_PATH = (
    Path(__file__).resolve().parent.parent / "labextension" / "src" / "generated" / "openapi.json"
)


def render() -> str:
    """The document's text, byte for byte what the committed copy must hold: server URL
    "/" (the lab resolves paths against its own base URL), two-space indent, final newline."""
    return json.dumps(openapi_document("/"), indent=2, ensure_ascii=False) + "\n"


def write(path: Path) -> bool:
    """Write the document to `path`; returns whether the file changed. An unchanged file
    keeps its mtime, so the wheel build's staleness check (src newer than prebuilt) does not
    rebuild the extension for nothing."""
    text = render()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m river_server.openapi_file",
        description="Write River's OpenAPI document (the one /river/api/openapi.json serves).",
    )
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    changed = write(args.path)
    print(f"{args.path}: {'written' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
