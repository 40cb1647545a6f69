"""`UsageError`: IPython's when it is installed, else a plain exception.

The magics raise IPython's UsageError so a notebook shows one line and no traceback. The
shell CLI (river_magics/shell) shares the magics' argument definitions and submit logic but
must run where IPython is not installed (a login node with the base install), so those
modules import UsageError from here, and the CLI catches this same class.
"""

from __future__ import annotations

try:
    from IPython.core.error import UsageError
except ImportError:  # pragma: no cover - the test environment has IPython

    class UsageError(Exception):  # type: ignore[no-redef]
        """Bad input the user can fix; shown as one line."""


__all__ = ["UsageError"]
