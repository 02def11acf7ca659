"""
``mdgate doctor`` with PostgreSQL: a healthy setup (schema current, routes
seeded, Redis, a fake Yahoo, a free port) passes every check; an
unreachable database, a schema behind this mdgate and an ``always``
instrument the database does not route each fail their check.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from tests.integration.test_doctor import CHECKS, doctor_inprocess, doctor_subprocess, environ, write_config

from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, upgrade
from mdgate_yahoo.testing import FakeYahooServer

pytestmark = pytest.mark.anyio




def yahoo_config(yahoo: FakeYahooServer, always: str = '"NASDAQ:AAPL"') -> str:
    return f'[providers.yahoo]\nurl = "{yahoo.url}"\n[subscriptions]\nalways = [{always}]\n'


async def test_healthy_setup_with_postgresql_passes_every_check(tmp_path, dsn, redis_server, yahoo):
    env = environ(MDGATE_DATABASE_URL=dsn, MDGATE_REDIS_URL=redis_server.url)
    res = await doctor_subprocess(env, "doctor", "--config", str(write_config(tmp_path, yahoo_config(yahoo))))
    assert res.code == 0, res.out + res.err
    assert res.marks() == dict.fromkeys(CHECKS, "✓"), res.out
    line = res.lines()["postgres"]
    assert f"schema current (version {SCHEMA_VERSION}); 4 exchange(s) routed" in line
    assert " PostgreSQL 1" in line
    resolved = "1 always instrument(s) resolve (postgresql): NASDAQ:AAPL -> yahoo"
    assert res.lines()["routes"] == f"✓ routes: {resolved}"


async def test_postgresql_unreachable_masks_the_password(tmp_path, unused_dsn):
    res = await doctor_inprocess(environ(MDGATE_DATABASE_URL=unused_dsn), "doctor",
                                 "--config", str(write_config(tmp_path, "")))
    assert res.code == 1
    line = res.lines()["postgres"]
    assert line.startswith("✗ postgres: cannot reach the database at postgresql://postgres:***@127.0.0.1:")
    assert "— start PostgreSQL, or fix [database] url / MDGATE_DATABASE_URL" in line
    assert res.lines()["routes"] == "- routes: not run: the routing database cannot be read (see postgres)"
    assert "s3cret" not in res.out and "s3cret" not in res.err


async def test_schema_behind_says_run_db_upgrade(tmp_path, empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn, target=SCHEMA_VERSION - 1)
    res = await doctor_inprocess(environ(MDGATE_DATABASE_URL=empty_dsn), "doctor", "--json",
                                 "--config", str(write_config(tmp_path, "")))
    assert res.code == 1
    postgres = json.loads(res.out)["checks"][4]
    assert postgres["name"] == "postgres" and postgres["ok"] is False
    assert (f"schema at version {SCHEMA_VERSION - 1}, this mdgate needs {SCHEMA_VERSION} (1 pending: "
            f"{SCHEMA_VERSION:04d} ") in postgres["detail"]
    assert postgres["hint"] == "run `mdgate db upgrade`"
    # the doctor only looks: the schema is still behind
    with psycopg.connect(empty_dsn) as conn:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert row == (SCHEMA_VERSION - 1,)


async def test_an_always_instrument_the_database_does_not_route(tmp_path, dsn, yahoo):
    config = write_config(tmp_path, yahoo_config(yahoo, '"NASDAQ:AAPL", "LSE:VOD"'))
    res = await doctor_inprocess(environ(MDGATE_DATABASE_URL=dsn), "doctor", "--config", str(config))
    assert res.code == 1
    line = res.lines()["routes"]
    assert line.startswith("✗ routes: 1 of 2 always instrument(s) have no route (postgresql): LSE:VOD (")
    assert "— add a route (`mdgate routes set` / `mdgate instruments add`)" in line
