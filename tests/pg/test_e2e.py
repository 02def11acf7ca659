"""
End to end: a gateway routing from PostgreSQL follows live changes of the
tables (NOTIFY → reload → reroute), with provider servers on loopback.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from mdgate_example.testing import FakeExampleServer as ExampleFeed
from tests.integration.test_failover import duo_gateway

from mdgate._errors import ConfigError
from mdgate._routing.table import InstrumentMapping
from mdgate.plugins.pg_routes.instruments import upsert_instrument_mappings
from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, current_version, upgrade
from mdgate.plugins.pg_routes.routes import set_exchange_route
from mdgate.testing import GatewayClient, running_gateway, settings_from_toml

pytestmark = pytest.mark.integration

def _prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO providers (name, code) VALUES ('alpha', 'A'), ('beta', 'B')")
        set_exchange_route(conn, "DUO", "alpha", priority=0, primary=True, create_exchange=True)
        set_exchange_route(conn, "DUO", "beta", priority=10)


async def test_gateway_routes_from_postgresql_and_follows_live_changes(dsn: str, tmp_path: Path) -> None:
    _prepare(dsn)
    alpha, beta = ExampleFeed(), ExampleFeed()
    async with alpha, beta:
        settings = settings_from_toml(
            f"""
[database]
url = "{dsn}"
cache_path = "{tmp_path / "routes.json"}"
[runtime]
backoff_initial = 0.05
backoff_max = 0.2
[subscriptions]
linger = 0
[providers.alpha]
url = "{alpha.url}"
[providers.beta]
url = "{beta.url}"
""",
            {"MDGATE_LOAD_PLUGINS": ""},
            tmp_path,
        )
        async with (
            duo_gateway(settings) as gw,
            GatewayClient.connect(gw.ws_url) as client,
        ):
            assert gw.status()["routing"]["source"] == "postgresql"
            await client.subscribe("DUO:FOO")
            await alpha.wait_until(lambda _: "FOO" in alpha.subscribed)
            await alpha.send_tick("FOO", 1.0)
            assert (await client.ticks(1))[0]["provider"] == "A"

            # Switch alpha off for DUO in the database: FOO moves to beta.
            with psycopg.connect(dsn, autocommit=True) as conn:
                set_exchange_route(conn, "DUO", "alpha", active=False)
            await beta.wait_until(lambda _: "FOO" in beta.subscribed, timeout=2.5)
            await alpha.wait_until(lambda _: "FOO" not in alpha.subscribed, timeout=2.5)
            await beta.send_tick("FOO", 2.0)
            tick = (await client.ticks(1))[0]
            assert (tick["provider"], tick["price"]) == ("B", 2.0)

            # An explicit code added by an importer replaces the derived one live.
            upsert_instrument_mappings(dsn, [InstrumentMapping("DUO:FOO", "beta", "FOO-X")])
            await beta.wait_until(lambda _: "FOO-X" in beta.subscribed, timeout=2.5)
            await beta.send_tick("FOO-X", 3.0)
            tick = (await client.ticks(1))[0]
            assert (tick["instrument"], tick["provider"], tick["price"]) == ("DUO:FOO", "B", 3.0)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def test_gateway_schema_behind_refuses_to_start(empty_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        upgrade(conn, target=1)
    settings = settings_from_toml(f'[database]\nurl = "{empty_dsn}"\n', {"MDGATE_LOAD_PLUGINS": ""}, tmp_path)
    with pytest.raises(BaseException) as info:  # noqa: PT011 - unwrapped below
        async with running_gateway(settings, environ={"MDGATE_LOAD_PLUGINS": ""}):
            pass
    errors = [e for e in _leaves(info.value) if isinstance(e, ConfigError)]
    assert [str(e) for e in errors] == [
        f"database.url: schema is at version 1, this mdgate needs {SCHEMA_VERSION}: run `mdgate db upgrade`"
    ]


async def test_gateway_auto_upgrade_starts_on_postgresql_routes(empty_dsn: str, tmp_path: Path) -> None:
    settings = settings_from_toml(
        f'[database]\nurl = "{empty_dsn}"\nauto_upgrade = true\ncache_path = "{tmp_path / "r.json"}"\n',
        {"MDGATE_LOAD_PLUGINS": ""},
        tmp_path,
    )
    async with running_gateway(settings, environ={"MDGATE_LOAD_PLUGINS": ""}) as gw:
        assert gw.status()["routing"]["source"] == "postgresql"
    with psycopg.connect(empty_dsn) as conn:
        assert current_version(conn) == SCHEMA_VERSION
