"""Where the shell CLI finds its host and token, and the file `river login` writes.

Order: --url/--token on the command line, then RIVER_URL/RIVER_TOKEN (as the notebook
client reads them), then the config file. The file holds an API token, so it is written
0600 in a 0700 directory, created with that mode (never readable for an instant).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import RiverError

NO_HOST = "no River host: run `river login URL --token T`, or set RIVER_URL and RIVER_TOKEN"


def config_path() -> Path:
    """$XDG_CONFIG_HOME/river/config.json (default ~/.config/river/config.json)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "river" / "config.json"


def load() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RiverError(f"cannot read {path}: {exc}; fix it or run `river login` again") from None
    return data if isinstance(data, dict) else {}


def save(url: str, token: str) -> Path:
    """Write {url, token} to the config file, 0600."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token}, handle)
        handle.write("\n")
    return path


def connection(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The host URL and token to use (see the module docstring for the order)."""
    saved = load()
    url = url or os.environ.get("RIVER_URL") or None
    if url is None:
        url = saved.get("url")
        token = token or os.environ.get("RIVER_TOKEN") or saved.get("token")
    else:
        same_host = saved.get("url") == url.rstrip("/")
        token = (
            token or os.environ.get("RIVER_TOKEN") or (saved.get("token") if same_host else None)
        )
    if not url:
        raise RiverError(NO_HOST)
    return str(url), token
