"""
The route cache file: the last table loaded from PostgreSQL, as JSON, so
that the daemon can start with the right routes while the database is down.

Format (``version`` 1)::

    {"version": 1, "written_at": 1700000000000, "source": "postgresql",
     "exchanges": [{"exchange": "NSE", "provider": "dhan", "priority": 0,
                    "primary": true, "active": true}, ...],
     "codes": [["dhan", "NSE:RELIANCE", "NSE_EQ:2885"], ...]}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from mdgate.model import now_ms
from mdgate.routing import ExchangeRoute, RouteTable

__all__ = [
    "CACHE_VERSION",
    "decode_table",
    "default_cache_path",
    "encode_table",
    "read_cache",
    "write_cache",
]

CACHE_VERSION: Final = 1


def default_cache_path(cache_path: str, environ: Mapping[str, str]) -> Path:
    """
    Return ``[database] cache_path``, else ``$XDG_CACHE_HOME/mdgate/routes.json``
    (``~/.cache`` when ``XDG_CACHE_HOME`` is unset).
    """
    if cache_path:
        return Path(cache_path).expanduser()
    base = environ.get("XDG_CACHE_HOME") or ""
    if not base:
        home = environ.get("HOME") or str(Path.home())
        base = str(Path(home) / ".cache")
    return Path(base) / "mdgate" / "routes.json"


def encode_table(table: RouteTable, written_at: int | None = None) -> bytes:
    """Serialize ``table`` to the cache format."""
    doc = {
        "version": CACHE_VERSION,
        "written_at": now_ms() if written_at is None else written_at,
        "source": table.source,
        "exchanges": [
            {
                "exchange": r.exchange,
                "provider": r.provider,
                "priority": r.priority,
                "primary": r.primary,
                "active": r.active,
            }
            for rows in table.exchanges.values()
            for r in rows
        ],
        "codes": sorted([p, i, c] for (p, i), c in table.codes.items()),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_table(data: bytes | str, source: str) -> RouteTable:
    """
    Parse the cache format into a table whose ``source`` is ``source``.

    Raises:
        ValueError: not a cache file of a known version.
    """
    try:
        doc: Any = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
            raise ValueError(f"not a version {CACHE_VERSION} route cache")
        rows = [
            ExchangeRoute(
                str(e["exchange"]),
                str(e["provider"]),
                int(e["priority"]),
                bool(e["primary"]),
                bool(e["active"]),
            )
            for e in doc["exchanges"]
        ]
        codes = {(str(p), str(i)): str(c) for p, i, c in doc["codes"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed route cache: {exc}") from None
    return RouteTable.build(rows, codes, source)


def write_cache(path: Path, table: RouteTable) -> None:
    """Write ``table`` to ``path`` atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".routes-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(encode_table(table))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cache(path: Path) -> RouteTable:
    """
    Read a cache file; the table's source is ``cache:PATH``.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when absent).
        ValueError: the file is not a valid cache.
    """
    return decode_table(path.read_bytes(), f"cache:{path}")
