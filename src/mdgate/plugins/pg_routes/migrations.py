"""
Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order.

``upgrade(conn)`` takes a session advisory lock (so concurrent upgrades
wait for each other instead of racing), creates ``schema_migrations`` when
missing, then applies every pending migration in its own transaction and
records its version, name and checksum there. Re-running it is a no-op.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Final

import psycopg
import structlog

__all__ = [
    "ADVISORY_LOCK_KEY",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AppliedMigration",
    "Migration",
    "applied_migrations",
    "current_version",
    "load_migrations",
    "pending_migrations",
    "upgrade",
]

log = structlog.get_logger(__name__)

#: ``pg_advisory_lock`` key held while migrating ("mdgate" in ASCII).
ADVISORY_LOCK_KEY: Final = 0x6D6467617465

_FILE_RE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL, recorded when applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


def load_migrations() -> tuple[Migration, ...]:
    """Read the packaged migration files, ordered by version."""
    found: list[Migration] = []
    for entry in (resources.files("mdgate.plugins.pg_routes") / "migrations").iterdir():
        m = _FILE_RE.match(entry.name)
        if m is not None:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..N without gaps, got {versions}")
    return tuple(found)


#: Every migration this mdgate ships.
MIGRATIONS: Final = load_migrations()
#: The schema version this mdgate needs.
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


def applied_migrations(conn: psycopg.Connection) -> list[AppliedMigration]:
    """Return the rows of ``schema_migrations`` (empty when it does not exist)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def current_version(conn: psycopg.Connection) -> int:
    """The highest applied version (0 for an empty database)."""
    applied = applied_migrations(conn)
    return applied[-1].version if applied else 0


def pending_migrations(conn: psycopg.Connection) -> list[Migration]:
    """Migrations not applied yet, in order."""
    done = {a.version for a in applied_migrations(conn)}
    return [m for m in MIGRATIONS if m.version not in done]


def upgrade(conn: psycopg.Connection, target: int | None = None) -> list[Migration]:
    """
    Apply pending migrations up to ``target`` (default: all).

    Args:
        conn: an autocommit connection (each migration gets its own transaction).
        target: stop after this version.

    Returns:
        The migrations applied now (empty when the schema was up to date).

    Raises:
        ValueError: ``conn`` is not in autocommit mode.
        psycopg.Error: a migration failed; it was rolled back, earlier ones stay.
    """
    if not conn.autocommit:
        raise ValueError("upgrade() needs an autocommit connection")
    applied: list[Migration] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        conn.execute(_CREATE_TABLE)
        for mig in pending_migrations(conn):
            if target is not None and mig.version > target:
                break
            with conn.transaction():
                conn.execute(mig.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (mig.version, mig.name, mig.checksum),
                )
            log.info("migration_applied", version=mig.version, name=mig.name)
            applied.append(mig)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return applied
