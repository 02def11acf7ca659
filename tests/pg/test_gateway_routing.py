"""
The gateway and its PostgreSQL route source: an outage is ``degraded`` in
``/status`` with the reason (and ``ok`` again once the database is back); a
gateway never starts on another database's cached routes; an empty routing
table is loud in the log, ``degraded`` in ``/status`` and a hint in every
``no_route`` error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from structlog.testing import capture_logs
from tests.pg._fakes import PLAN

from mdgate._routing.table import SEED_HINT
from mdgate.plugins.pg_routes.migrations import upgrade
from mdgate.plugins.pg_routes.seed import seed
from mdgate.testing import GatewayClient, running_gateway, settings_from_toml
from mdgate_yahoo.testing import FakeYahooServer

pytestmark = pytest.mark.integration

NO_PLUGINS = {"MDGATE_LOAD_PLUGINS": ""}


def _config(dsn: str, extra: str = "") -> str:
    return (
        f'[database]\nurl = "{dsn}"\nauto_upgrade = true\nconnect_timeout = 2\n'
        "[runtime]\nbackoff_initial = 0.05\nbackoff_max = 0.2\n" + extra
    )


async def test_gateway_degraded_while_database_down_then_ok(pg_factory: Any, tmp_path: Path) -> None:
    server = pg_factory()
    db = server.create_database()
    with psycopg.connect(db, autocommit=True) as conn:  # no provider loaded: seed the fakes' routes
        upgrade(conn)
        seed(conn, PLAN)
    settings = settings_from_toml(_config(db), NO_PLUGINS, tmp_path)
    with capture_logs():
        async with running_gateway(settings) as gw:
            st = gw.status()
            routing = st["routing"]
            assert (st["status"], routing["state"], routing["database"]["state"]) == ("ok", "ok", "ok")
            await anyio.to_thread.run_sync(server.stop)
            st = await gw.wait_for(lambda s: s["status"] == "degraded", timeout=10)
            routing = st["routing"]
            assert routing["database"]["state"] == "down"
            assert routing["database"]["since"] > 0 and routing["database"]["last_error"]
            assert routing["problems"] == [
                f"route source postgresql {db} is down: {routing['database']['last_error']}"
            ]
            assert routing["source"] == "postgresql"  # the last table stays in force
            await anyio.to_thread.run_sync(server.start)
            st = await gw.wait_for(lambda s: s["status"] == "ok", timeout=15)
            assert st["routing"]["problems"] == [] and st["routing"]["database"]["state"] == "ok"


async def test_gateway_on_unreachable_database_never_uses_another_databases_cache(
    dsn: str, unused_dsn: str, tmp_path: Path
) -> None:
    shared = f'cache_path = "{tmp_path / "routes.json"}"\n'
    with psycopg.connect(dsn, autocommit=True) as conn:  # make the first database's routes recognisable
        conn.execute("UPDATE exchange_provider_mappings SET priority = 77 WHERE NOT is_primary")
    first = settings_from_toml(_config(dsn).replace("[runtime]", shared + "[runtime]"), NO_PLUGINS, tmp_path)
    async with running_gateway(first) as gw:
        assert gw.status()["routing"]["source"] == "postgresql"
    assert (tmp_path / "routes.json").exists()
    other_config = _config(unused_dsn).replace("[runtime]", shared + "[runtime]")
    other = settings_from_toml(other_config, NO_PLUGINS, tmp_path)
    with capture_logs() as logs:
        async with running_gateway(other) as gw:
            st = gw.status()
            table = gw.gateway.router.table
    assert st["routing"]["source"] == "defaults"
    assert all(r.priority != 77 for rows in table.exchanges.values() for r in rows)
    assert st["status"] == "degraded" and st["routing"]["database"]["state"] == "down"
    (unavailable,) = [e for e in logs if e["event"] == "routes_unavailable"]
    assert unavailable["using"] == "built-in defaults until the database answers"
    assert "route cache belongs to another database (127.0.0.1:" in unavailable["error"]
    assert all("s3cret" not in str(e) for e in logs) and "s3cret" not in str(st)


async def test_gateway_empty_routing_table_is_loud_degraded_and_hinted(
    empty_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn)  # the schema exists (so auto_upgrade seeds nothing), no rows
    async with FakeYahooServer() as yahoo:
        extra = f'[subscriptions]\nlinger = 0\n[providers.yahoo]\nurl = "{yahoo.url}"\n'
        settings = settings_from_toml(_config(empty_dsn, extra), {"MDGATE_LOAD_PLUGINS": "yahoo"}, tmp_path)
        with capture_logs() as logs:
            async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as client:
                st = gw.status()
                assert st["status"] == "degraded"
                assert st["routing"]["problems"] == [f"the routing table (postgresql) is empty: {SEED_HINT}"]
                await client.send({"op": "subscribe", "instruments": ["NASDAQ:AAPL", "NSE:RELIANCE"]})
                err = await client.recv_type("error")
                assert [(e["code"], e["message"].endswith(SEED_HINT)) for e in err["errors"]] == [
                    ("no_route", True),
                    ("no_route", True),
                ]
                # Seeding while it runs: the NOTIFY reload makes it whole.
                with psycopg.connect(empty_dsn, autocommit=True) as conn:
                    seed(conn, PLAN)
                await gw.wait_for(lambda s: s["status"] == "ok", timeout=5)
                await client.subscribe("NASDAQ:AAPL")
                await yahoo.wait_subscribed("AAPL")
    empty = [e for e in logs if e["event"] == "route_table_empty"]
    assert len(empty) == 1 and empty[0]["log_level"] == "error" and empty[0]["hint"] == SEED_HINT
