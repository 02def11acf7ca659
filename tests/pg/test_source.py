from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from structlog.testing import capture_logs
from tests.pg._fakes import DEFAULT_ROUTES, PLAN

from mdgate._config import Settings, load_settings
from mdgate._errors import ConfigError, RoutingError
from mdgate._providers.registry import load_registry
from mdgate._routing.table import ExchangeRoute, RouteSource, RouteTable
from mdgate.plugins.pg_routes.cache import write_cache
from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, current_version, upgrade
from mdgate.plugins.pg_routes.seed import seed
from mdgate.plugins.pg_routes.source import PgRouteSource

pytestmark = pytest.mark.integration


def make_settings(dsn: str, tmp_path: Path, **env: str) -> Settings:
    environ = {
        "MDGATE_DATABASE_URL": dsn,
        "MDGATE_DATABASE__CACHE_PATH": str(tmp_path / "cache" / "routes.json"),
        "MDGATE_DATABASE__CONNECT_TIMEOUT": "2",
        "MDGATE_RUNTIME__BACKOFF_INITIAL": "0.1",
        "MDGATE_RUNTIME__BACKOFF_MAX": "0.5",
        **env,
    }
    return load_settings(None, environ)


class Changes:
    """Collects on_change calls; ``wait`` returns the next table (or fails)."""

    def __init__(self) -> None:
        self.tables: list[RouteTable] = []
        self._seen = 0

    def __call__(self, table: RouteTable) -> None:
        self.tables.append(table)

    async def wait(self, seconds: float) -> RouteTable:
        with anyio.fail_after(seconds):
            while len(self.tables) <= self._seen:
                await anyio.sleep(0.01)
        self._seen += 1
        return self.tables[self._seen - 1]

    async def wait_for(self, seconds: float, pred: Any) -> RouteTable:
        with anyio.fail_after(seconds):
            while True:
                table = await self.wait(seconds)
                if pred(table):
                    return table


async def _execute(dsn: str, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.encode())


async def test_pg_route_source_load_returns_table_and_writes_cache(dsn: str, tmp_path: Path) -> None:
    source = PgRouteSource(make_settings(dsn, tmp_path))
    assert isinstance(source, RouteSource)
    assert source.description.startswith("postgresql postgresql://postgres@127.0.0.1:")
    table = await source.load()
    assert table.source == "postgresql"
    assert [r.provider for r in table.exchanges["NSE"]] == ["dhan", "yahoo"]
    cached = json.loads(source.cache_path.read_bytes())
    assert cached["version"] == 1 and len(cached["exchanges"]) == 6
    assert not list(source.cache_path.parent.glob(".routes-*"))  # no temp file left


async def test_pg_route_source_schema_behind_refuses_to_start(empty_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn, target=1)
    source = PgRouteSource(make_settings(empty_dsn, tmp_path))
    with pytest.raises(ConfigError) as info:
        await source.load()
    assert info.value.key == "database.url"
    assert str(info.value) == (
        f"database.url: schema is at version 1, this mdgate needs {SCHEMA_VERSION}: run `mdgate db upgrade`"
    )


async def test_pg_route_source_auto_upgrade_migrates_seeds_then_loads(empty_dsn: str, tmp_path: Path) -> None:
    settings = make_settings(
        empty_dsn, tmp_path, MDGATE_DATABASE__AUTO_UPGRADE="true", MDGATE_LOAD_PLUGINS="yahoo,dhan"
    )
    with capture_logs() as logs:
        table = await PgRouteSource(settings).load()
    # A database without the schema is created AND seeded: a first run routes like the defaults
    # (the seed comes from the real Yahoo and Dhan specs: the same table as the fakes' one).
    assert table.source == "postgresql"
    assert table.exchanges == RouteTable.build(list(DEFAULT_ROUTES), {}, "x").exchanges
    with psycopg.connect(empty_dsn) as conn:
        assert current_version(conn) == SCHEMA_VERSION
    assert any(e["event"] == "schema_upgraded" and e["from_version"] == 0 for e in logs)
    seeded = [(e["providers"], e["exchanges"], e["mappings"]) for e in logs if e["event"] == "routes_seeded"]
    assert seeded == [(2, 4, 6)]


async def test_fresh_database_is_seeded_from_the_loaded_specs_only(empty_dsn: str, tmp_path: Path) -> None:
    settings = make_settings(
        empty_dsn, tmp_path, MDGATE_DATABASE__AUTO_UPGRADE="true", MDGATE_LOAD_PLUGINS="example"
    )
    table = await PgRouteSource(settings).load()
    assert table.exchanges == {"EXAMPLE": (ExchangeRoute("EXAMPLE", "example", 0, True),)}
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT name, code, display_name FROM providers").fetchall() == [
            ("example", "EX", "Example")
        ]


async def test_pg_route_source_auto_upgrade_of_existing_schema_does_not_seed(
    empty_dsn: str, tmp_path: Path
) -> None:
    # The schema exists (version 1) with the operator's rows: upgrading must not add defaults.
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn, target=1)
    settings = make_settings(empty_dsn, tmp_path, MDGATE_DATABASE__AUTO_UPGRADE="true")
    with capture_logs() as logs:
        table = await PgRouteSource(settings).load()
    assert dict(table.exchanges) == {}
    assert not [e for e in logs if e["event"] == "routes_seeded"]


async def test_pg_route_source_database_down_with_its_own_cache_returns_cached_table(
    dsn: str, unused_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""INSERT INTO instruments (exchange_id, symbol, name)
                        SELECT id, 'RELIANCE', 'NSE:RELIANCE' FROM exchanges WHERE code = 'NSE'""")
        conn.execute("""INSERT INTO provider_instrument_mappings
                        (provider_id, instrument_id, provider_instrument_search_code)
                        SELECT p.id, i.id, 'NSE_EQ:2885' FROM providers p, instruments i
                         WHERE p.name = 'dhan'""")
    fresh = await PgRouteSource(make_settings(dsn, tmp_path)).load()
    down = PgRouteSource(make_settings(unused_dsn, tmp_path))
    # The table the unreachable database served last time, cached under its own identity.
    write_cache(down.cache_path, fresh, down.database)
    with capture_logs() as logs:
        table = await down.load()
    assert table.source == f"cache:{down.cache_path}"
    assert table.exchanges == fresh.exchanges and table.codes == fresh.codes
    assert table.codes == {("dhan", "NSE:RELIANCE"): "NSE_EQ:2885"}
    events = [e["event"] for e in logs]
    assert events == ["route_source_unavailable", "route_table_from_cache"]
    assert all("s3cret" not in str(e) for e in logs)
    assert down.status()["state"] == "down" and "Connection refused" in down.status()["last_error"]


async def test_pg_route_source_never_starts_on_another_databases_cache(
    dsn: str, unused_dsn: str, tmp_path: Path
) -> None:
    # One cache_path shared by two configurations: the identity inside the file refuses it.
    await PgRouteSource(make_settings(dsn, tmp_path)).load()
    down = PgRouteSource(make_settings(unused_dsn, tmp_path))
    with capture_logs(), pytest.raises(RoutingError) as info:
        await down.load()
    assert "route cache belongs to another database (127.0.0.1:" in str(info.value)
    assert "s3cret" not in str(info.value)
    # Default paths: one file per database (named by a hash of host, port and name).
    mine = PgRouteSource(make_settings(dsn, tmp_path, MDGATE_DATABASE__CACHE_PATH=""))
    await mine.load()
    other = PgRouteSource(make_settings(unused_dsn, tmp_path, MDGATE_DATABASE__CACHE_PATH=""))
    assert mine.cache_path.parent == other.cache_path.parent
    assert mine.cache_path.name == f"routes-{mine.database.key}.json" != other.cache_path.name
    with capture_logs(), pytest.raises(RoutingError, match=r"no route cache at .*routes-[0-9a-f]{16}\.json"):
        await other.load()


async def test_pg_route_source_database_down_without_cache_raises_routing_error(
    unused_dsn: str, tmp_path: Path
) -> None:
    source = PgRouteSource(make_settings(unused_dsn, tmp_path))
    with capture_logs(), pytest.raises(RoutingError) as info:
        await source.load()
    msg = str(info.value)
    assert msg.startswith("cannot reach the database at postgresql://postgres:***@127.0.0.1:")
    assert msg.endswith(f"no route cache at {source.cache_path} to start from")
    assert "s3cret" not in msg


async def test_pg_route_source_corrupt_cache_raises_routing_error(unused_dsn: str, tmp_path: Path) -> None:
    source = PgRouteSource(make_settings(unused_dsn, tmp_path))
    source.cache_path.parent.mkdir(parents=True)
    source.cache_path.write_text("{not json", encoding="utf-8")
    with capture_logs(), pytest.raises(RoutingError, match="unusable: malformed route cache"):
        await source.load()


async def test_pg_route_source_watch_notify_reaches_on_change_within_2s(dsn: str, tmp_path: Path) -> None:
    source = PgRouteSource(make_settings(dsn, tmp_path))
    await source.load()
    changes = Changes()
    async with anyio.create_task_group() as tg:
        await tg.start(source.watch, changes)
        await _execute(
            dsn,
            """UPDATE exchange_provider_mappings m SET priority = 1
                                 FROM exchanges e, providers p
                                WHERE e.id = m.exchange_id AND p.id = m.provider_id
                                  AND e.code = 'NSE' AND p.name = 'yahoo'""",
        )
        table = await changes.wait(2.0)
        assert [(r.provider, r.priority) for r in table.exchanges["NSE"]] == [("dhan", 0), ("yahoo", 1)]
        # The cache follows the live table.
        cached = json.loads(source.cache_path.read_bytes())
        assert {
            "exchange": "NSE",
            "provider": "yahoo",
            "priority": 1,
            "primary": False,
            "active": True,
        } in cached["exchanges"]
        # An explicit code added by an importer arrives too.
        await _execute(
            dsn,
            """
            INSERT INTO instruments (exchange_id, symbol, name)
                 SELECT id, 'TCS', 'NSE:TCS' FROM exchanges WHERE code = 'NSE';
            INSERT INTO provider_instrument_mappings
                   (provider_id, instrument_id, provider_instrument_search_code)
                 SELECT p.id, i.id, 'NSE_EQ:11536' FROM providers p, instruments i
                  WHERE p.name = 'dhan' AND i.name = 'NSE:TCS';""",
        )
        table = await changes.wait(2.0)
        assert table.codes == {("dhan", "NSE:TCS"): "NSE_EQ:11536"}
        tg.cancel_scope.cancel()
    assert len(changes.tables) == 2  # nothing on start: load() had the same table


async def test_pg_route_source_watch_burst_is_debounced(dsn: str, tmp_path: Path) -> None:
    source = PgRouteSource(make_settings(dsn, tmp_path))
    await source.load()
    changes = Changes()
    async with anyio.create_task_group() as tg:
        await tg.start(source.watch, changes)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for i in range(1, 6):
                await conn.execute(
                    "UPDATE exchange_provider_mappings SET priority = %s WHERE NOT is_primary", (10 + i,)
                )
        table = await changes.wait_for(3.0, lambda t: t.exchanges["NSE"][1].priority == 15)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert table.exchanges["BSE"][1].priority == 15
    assert 1 <= len(changes.tables) < 5


async def test_pg_route_source_watch_callback_error_does_not_stop_it(dsn: str, tmp_path: Path) -> None:
    source = PgRouteSource(make_settings(dsn, tmp_path))
    await source.load()
    changes = Changes()
    calls = 0

    def flaky(table: RouteTable) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        changes(table)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(source.watch, flaky)
            await _execute(dsn, "UPDATE providers SET is_active = false WHERE name = 'dhan'")
            with anyio.fail_after(2):
                while calls < 1:
                    await anyio.sleep(0.02)
            await _execute(dsn, "UPDATE providers SET is_active = true WHERE name = 'dhan'")
            table = await changes.wait(2.0)
            tg.cancel_scope.cancel()
    assert table.exchanges["NSE"][0].active
    assert [e["error"] for e in logs if e["event"] == "route_change_callback_failed"] == [
        "RuntimeError: boom"
    ]


async def test_pg_route_source_watch_survives_database_restart(pg_factory: Any, tmp_path: Path) -> None:
    server = pg_factory()
    db = server.create_database()
    with psycopg.connect(db, autocommit=True) as conn:
        upgrade(conn)
        seed(conn, PLAN)
    source = PgRouteSource(make_settings(db, tmp_path))
    await source.load()
    changes = Changes()
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(source.watch, changes)
            await anyio.to_thread.run_sync(server.stop)
            await anyio.sleep(1.5)  # several reconnect attempts while it is down
            await anyio.to_thread.run_sync(server.start)
            table = await changes.wait(10.0)  # reload after reconnecting
            assert table.source == "postgresql"
            await _execute(
                db,
                "UPDATE exchange_provider_mappings SET is_active = false "
                "WHERE exchange_id = (SELECT id FROM exchanges WHERE code='NYSE')",
            )
            table = await changes.wait(2.0)
            assert [r.active for r in table.exchanges["NYSE"]] == [False]
            tg.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert events.count("route_source_lost") == 1  # once per outage, not per attempt
    assert events.count("route_source_reconnected") == 1


async def test_pg_route_source_watch_starts_while_down_then_catches_up(
    pg_factory: Any, tmp_path: Path
) -> None:
    server = pg_factory()
    db = server.create_database()
    with psycopg.connect(db, autocommit=True) as conn:
        upgrade(conn)
        seed(conn, PLAN)
    await PgRouteSource(make_settings(db, tmp_path)).load()  # leaves a cache
    await anyio.to_thread.run_sync(server.stop)
    source = PgRouteSource(make_settings(db, tmp_path))
    changes = Changes()
    with capture_logs():
        table = await source.load()
        assert table.source.startswith("cache:")
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(5):
                await tg.start(source.watch, changes)  # does not wait for the database
            await anyio.to_thread.run_sync(server.start)
            table = await changes.wait(10.0)
            tg.cancel_scope.cancel()
    assert table.source == "postgresql"
    assert table.exchanges == (await source.load()).exchanges


async def test_pg_routes_plugin_hook_returns_source_only_with_database(dsn: str, tmp_path: Path) -> None:
    registry = load_registry({}, entry_points=False)
    hook = registry.pm.hook.mdgate_route_source
    source = hook(settings=make_settings(dsn, tmp_path))
    assert isinstance(source, PgRouteSource)
    assert hook(settings=load_settings(None, {})) is None
    assert not math.isnan(source._timeout)


async def test_pg_route_source_status_down_while_database_stopped_then_ok(
    pg_factory: Any, tmp_path: Path
) -> None:
    server = pg_factory()
    db = server.create_database()
    with psycopg.connect(db, autocommit=True) as conn:
        upgrade(conn)
        seed(conn, PLAN)
    now = [1_000]
    source = PgRouteSource(make_settings(db, tmp_path), clock=lambda: now[0])
    assert source.status()["state"] == "starting"
    await source.load()
    assert (source.status()["state"], source.status()["since"]) == ("ok", 1_000)
    changes = Changes()
    with capture_logs():
        async with anyio.create_task_group() as tg:
            await tg.start(source.watch, changes)
            now[0] = 2_000
            await anyio.to_thread.run_sync(server.stop)
            with anyio.fail_after(5):
                while source.status()["attempts"] < 2:  # noticed, and still failing
                    await anyio.sleep(0.02)
            now[0] = 2_500  # more failed attempts do not move `since`
            with anyio.fail_after(5):
                while source.status()["attempts"] < 3:
                    await anyio.sleep(0.02)
            st = source.status()
            assert (st["state"], st["since"]) == ("down", 2_000)
            assert st["last_error"].startswith("cannot reach the database at postgresql://postgres@127.0.0.1:")
            now[0] = 3_000
            await anyio.to_thread.run_sync(server.start)
            await changes.wait(10.0)
            tg.cancel_scope.cancel()
    st = source.status()
    assert (st["state"], st["since"], st["attempts"]) == ("ok", 3_000, 0)
