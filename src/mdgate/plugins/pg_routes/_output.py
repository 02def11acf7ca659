"""Plain-text output helpers for the database commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["err", "out", "table"]


def out(line: str = "") -> None:
    """Write one line to stdout."""
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    """Write one error line to stderr."""
    sys.stderr.write(f"mdgate: error: {line}\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> list[str]:
    """Format ``rows`` as left-aligned columns under ``headers``."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
