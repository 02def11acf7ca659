"""
The route cache file: the last table loaded from PostgreSQL, as JSON, so
that the daemon can start with the right routes while the database is down.

A cache belongs to one database. Its identity (:func:`database_identity`:
host, port and database name, hashed; never the user or the password) names
the default file (``routes-<key>.json``) and is recorded inside it, so a
gateway never starts on routes another database wrote, even when two
configurations share a ``cache_path``.

Format (``version`` 1)::

    {"version": 1, "written_at": 1700000000000, "source": "postgresql",
     "database": "3f2a...", "database_name": "127.0.0.1:5432/mdgate",
     "exchanges": [{"exchange": "NSE", "provider": "dhan", "priority": 0,
                    "primary": true, "active": true}, ...],
     "codes": [["dhan", "NSE:RELIANCE", "NSE_EQ:2885"], ...],
     "listed": ["NSE:TCS", ...]}

``database``, ``database_name`` and ``listed`` came after the first
release: a file without ``database`` is still readable, but never used for a
database (nothing proves which one wrote it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict

from mdgate._config import mask_url
from mdgate._model import now_ms
from mdgate._routing.table import ExchangeRoute, RouteTable

__all__ = [
    "CACHE_VERSION",
    "DatabaseIdentity",
    "ForeignCacheError",
    "database_identity",
    "decode_table",
    "default_cache_path",
    "encode_table",
    "read_cache",
    "write_cache",
]

CACHE_VERSION: Final = 1


class ForeignCacheError(ValueError):
    """The cache file was written for another database (or for none we can prove)."""


@dataclass(frozen=True, slots=True)
class DatabaseIdentity:
    """Which database a route cache belongs to: ``key`` (a hash) and a readable ``name``."""

    key: str
    name: str


def database_identity(dsn: str, environ: Mapping[str, str]) -> DatabaseIdentity:
    """
    Identify the database ``dsn`` points at: host, port and database name, with
    libpq's defaults (``PGHOST``, ``PGPORT``, ``PGDATABASE``, the user name)
    where the DSN leaves them out. The user and password take no part: the
    same database reached as another role has the same routes.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        # The parser's message may quote the DSN: use only the masked form.
        masked = mask_url(dsn)
        return DatabaseIdentity(hashlib.sha256(masked.encode()).hexdigest()[:16], masked)
    host = str(params.get("host") or params.get("hostaddr") or environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or environ.get("PGPORT") or "5432")
    user = params.get("user") or environ.get("PGUSER") or environ.get("USER") or ""
    dbname = str(params.get("dbname") or environ.get("PGDATABASE") or user)
    name = f"{host.lower()}:{port}/{dbname}"
    return DatabaseIdentity(hashlib.sha256(name.encode()).hexdigest()[:16], name)


def default_cache_path(cache_path: str, environ: Mapping[str, str], database: str | None = None) -> Path:
    """
    Return ``[database] cache_path``, else ``$XDG_CACHE_HOME/mdgate/routes-KEY.json``
    for the database whose identity key is ``database`` (``routes.json``
    without one; ``~/.cache`` when ``XDG_CACHE_HOME`` is unset).
    """
    if cache_path:
        return Path(cache_path).expanduser()
    base = environ.get("XDG_CACHE_HOME") or ""
    if not base:
        home = environ.get("HOME") or str(Path.home())
        base = str(Path(home) / ".cache")
    return Path(base) / "mdgate" / (f"routes-{database}.json" if database else "routes.json")


def encode_table(
    table: RouteTable, written_at: int | None = None, database: DatabaseIdentity | None = None
) -> bytes:
    """Serialize ``table`` (read from ``database``) to the cache format."""
    doc = {
        "version": CACHE_VERSION,
        "written_at": now_ms() if written_at is None else written_at,
        "source": table.source,
        "database": database.key if database else None,
        "database_name": database.name if database else None,
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
        "listed": sorted(table.listed),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_table(data: bytes | str, source: str, database: DatabaseIdentity | None = None) -> RouteTable:
    """
    Parse the cache format into a table whose ``source`` is ``source``.

    Args:
        data: the file's content.
        source: the table's ``source``.
        database: when given, the cache must have been written for it.

    Raises:
        ForeignCacheError: written for another database, or with no identity.
        ValueError: not a cache file of a known version.
    """
    try:
        doc: Any = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
            raise ValueError(f"not a version {CACHE_VERSION} route cache")
        if database is not None and doc.get("database") != database.key:
            owner = doc.get("database_name")
            raise ForeignCacheError(
                f"route cache belongs to another database ({owner}), not {database.name}"
                if owner
                else f"route cache does not say which database wrote it; not used for {database.name}"
            )
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
        listed = [str(i) for i in doc.get("listed", ())]
    except ForeignCacheError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed route cache: {exc}") from None
    return RouteTable.build(rows, codes, source, listed)


def write_cache(path: Path, table: RouteTable, database: DatabaseIdentity | None = None) -> None:
    """Write ``table`` (read from ``database``) to ``path`` atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".routes-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(encode_table(table, database=database))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cache(path: Path, database: DatabaseIdentity | None = None) -> RouteTable:
    """
    Read a cache file (written for ``database``, when given); the table's source is ``cache:PATH``.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when absent).
        ForeignCacheError: the file belongs to another database.
        ValueError: the file is not a valid cache.
    """
    return decode_table(path.read_bytes(), f"cache:{path}", database)
