from __future__ import annotations

import threading

import psycopg
import pytest

from mdgate.plugins.pg_routes import migrations
from mdgate.plugins.pg_routes.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    applied_migrations,
    current_version,
    pending_migrations,
    upgrade,
)

pytestmark = pytest.mark.integration

TABLES = {
    "providers",
    "exchanges",
    "exchange_provider_mappings",
    "instruments",
    "provider_instrument_mappings",
    "schema_migrations",
}


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_migrations_packaged_files_are_numbered_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert SCHEMA_VERSION >= 2
    assert all(m.sql.strip() for m in MIGRATIONS)


def test_upgrade_empty_database_applies_all_and_records_versions(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert current_version(conn) == 0
        assert [m.version for m in pending_migrations(conn)] == [m.version for m in MIGRATIONS]
        applied = upgrade(conn)
        assert [m.version for m in applied] == [m.version for m in MIGRATIONS]
        rows = applied_migrations(conn)
        assert [(r.version, r.name, r.checksum) for r in rows] == [
            (m.version, m.name, m.checksum) for m in MIGRATIONS
        ]
        assert TABLES <= _tables(conn)
        assert current_version(conn) == SCHEMA_VERSION


def test_upgrade_rerun_is_a_noop(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn)
        first = applied_migrations(conn)
        assert upgrade(conn) == []
        assert applied_migrations(conn) == first


def test_upgrade_target_stops_there_and_resumes(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert [m.version for m in upgrade(conn, target=1)] == [1]
        assert current_version(conn) == 1
        assert [m.version for m in upgrade(conn)] == list(range(2, SCHEMA_VERSION + 1))


def test_upgrade_failing_migration_rolls_back_only_itself(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Migration(SCHEMA_VERSION + 1, "broken", "CREATE TABLE half_done (x int); SELECT 1/0;")
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, broken))
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            upgrade(conn)
        assert current_version(conn) == SCHEMA_VERSION
        assert "half_done" not in _tables(conn)
        # The advisory lock was released: another upgrade can run.
        locked = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).fetchone()
        assert locked == (0,)


def test_upgrade_concurrent_runs_apply_each_migration_once(empty_dsn: str) -> None:
    errors: list[BaseException] = []
    results: list[list[int]] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_dsn, autocommit=True) as conn:
                results.append([m.version for m in upgrade(conn)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(v for r in results for v in r) == [m.version for m in MIGRATIONS]
    with psycopg.connect(empty_dsn) as conn:
        assert [a.version for a in applied_migrations(conn)] == [m.version for m in MIGRATIONS]


def test_upgrade_non_autocommit_connection_is_refused(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn) as conn, pytest.raises(ValueError, match="autocommit"):
        upgrade(conn)


def test_route_triggers_mapping_change_notifies_once_per_statement(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as writer:
        listener.execute("LISTEN mdgate_routes")
        writer.execute("UPDATE exchange_provider_mappings SET priority = priority + 1")
        got = list(listener.notifies(timeout=2, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [("mdgate_routes", "exchange_provider_mappings")]
