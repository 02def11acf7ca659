"""
The black-box scenarios with PostgreSQL routing on a FRESH database
(``[database] auto_upgrade = true``, no schema, no rows): the gateway creates
the schema, seeds the default routes, and streams as it does without a
database. Real plugins (Yahoo, Dhan) against their fake servers on loopback.

* smoke: ``mdgate run`` + ``mdgate tail NASDAQ:AAPL`` (subprocesses);
* no_loss: every tick the fakes send lands in Redis exactly once;
* failover: the Dhan endpoint dies, NSE:RELIANCE continues on Yahoo, and
  comes back; a made-up NSE symbol is refused with ``no_route``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
import redis.asyncio as aioredis

from mdgate.plugins.pg_routes.migrations import SCHEMA_VERSION, current_version
from mdgate.plugins.stores.redis_store._codec import ticks_key
from mdgate.testing import GatewayClient, running_gateway, settings_from_toml
from mdgate.testing.redis import RedisServer
from mdgate_dhan.testing import FakeDhanServer
from mdgate_yahoo.testing import FakeYahooServer

pytestmark = pytest.mark.integration

MDGATE = [sys.executable, "-m", "mdgate"]
TOKEN, CLIENT = "tok-fresh", "1100002222"
PLUGINS = {"MDGATE_LOAD_PLUGINS": "yahoo,dhan"}
DHAN = {**PLUGINS, "DHAN_CLIENT_ID": CLIENT, "DHAN_ACCESS_TOKEN": TOKEN}
T0 = int(time.time()) * 1000


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
    env.update(extra)
    return env


def _fresh_config(dsn: str, yahoo_url: str, dhan_url: str | None = None, extra: str = "") -> str:
    dhan = f'[providers.dhan]\nurl = "{dhan_url}"\n' if dhan_url else ""
    return f"""
[database]
url = "{dsn}"
auto_upgrade = true
[runtime]
backoff_initial = 0.05
backoff_max = 0.2
failover_after = 0.5
failback_after = 1.0
[subscriptions]
linger = 0
[providers.yahoo]
url = "{yahoo_url}"
{dhan}{extra}"""


def _schema_version(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return current_version(conn)


def _start_mdgate_run(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``mdgate --config PATH run`` as a user types it, stderr (the JSON log) to ``log``."""
    with log.open("w") as err:
        return subprocess.Popen(
            [*MDGATE, "--config", str(config), "run", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=err, env=_env(**PLUGINS),
        )


async def _healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    async with httpx.AsyncClient() as http:
        with anyio.fail_after(timeout):
            while proc.poll() is None:
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.05)
    raise AssertionError(f"mdgate run exited with {proc.returncode}")


async def test_smoke_mdgate_run_and_tail_on_fresh_database(empty_dsn: str, tmp_path: Path) -> None:
    from tests.integration.test_cli import free_port

    port = free_port()
    async with FakeYahooServer() as yahoo:
        config = tmp_path / "mdgate.toml"
        config.write_text(_fresh_config(empty_dsn, yahoo.url) + '[logging]\nformat = "json"\n')
        log = tmp_path / "mdgate.log"
        proc = _start_mdgate_run(config, port, log)
        try:
            await _healthy(port, proc)
            url = f"http://127.0.0.1:{port}"
            result: dict[str, subprocess.CompletedProcess[bytes]] = {}

            async def tail() -> None:
                result["tail"] = await anyio.run_process(
                    [*MDGATE, "tail", "NASDAQ:AAPL", "--url", url, "--count", "2"], env=_env(), check=False
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(tail)
                await yahoo.wait_subscribed("AAPL", timeout=15)
                await yahoo.send_pricing("AAPL", price=227.55, time=T0)
                await yahoo.send_pricing("AAPL", price=227.6, time=T0 + 1000)
            out = result["tail"].stdout.decode()
            assert result["tail"].returncode == 0, result["tail"].stderr
            assert "subscribed: NASDAQ:AAPL" in out and "227.55" in out and "227.6" in out
            # A made-up NSE symbol is refused, not left waiting on Yahoo's suffix rule.
            async with GatewayClient.connect(f"ws://127.0.0.1:{port}/ws") as client:
                await client.send({"op": "subscribe", "instruments": ["NSE:NOSUCHSYMBOL"]})
                err = await client.recv_type("error")
            assert err["code"] == "no_route" and "unknown instrument NSE:NOSUCHSYMBOL" in err["message"]
            assert "NOSUCHSYMBOL.NS" not in yahoo.subscribed
            async with httpx.AsyncClient() as http:
                status = (await http.get(f"{url}/status")).json()
            assert status["status"] == "ok", status
            assert status["routing"]["source"] == "postgresql"
            assert status["routing"]["problems"] == [] and status["routing"]["database"]["state"] == "ok"
        finally:
            proc.terminate()
            proc.wait(10)
    events = [json.loads(line).get("event") for line in log.read_text().splitlines() if line.startswith("{")]
    assert "schema_upgraded" in events and "routes_seeded" in events
    assert "route_table_empty" not in events
    assert _schema_version(empty_dsn) == SCHEMA_VERSION



async def test_no_loss_every_tick_lands_in_redis_once_on_fresh_database(
    empty_dsn: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    n = 100
    async with FakeYahooServer() as yahoo, FakeDhanServer(token=TOKEN, client_id=CLIENT) as dhan:
        extra = f'[redis]\nurl = "{redis_server.url}"\nbatch_interval = 0.001\n'
        settings = settings_from_toml(_fresh_config(empty_dsn, yahoo.url, dhan.url, extra), DHAN, tmp_path)
        async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as client:
            await client.subscribe("NASDAQ:AAPL", "NSE:RELIANCE")
            await yahoo.wait_subscribed("AAPL")
            await dhan.wait_subscribed("NSE_EQ:2885")
            for i in range(n):
                await yahoo.send_pricing("AAPL", price=200.0 + i, time=T0 + i * 1000)
                await dhan.send_quote("NSE_EQ:2885", 2400.0 + i, ts_ms=T0 + i * 1000)
            got = await client.ticks(2 * n, timeout=20)
            assert len(got) == 2 * n
            st = await gw.wait_for(lambda s: s["store"]["written"] == 2 * n, timeout=15)
            assert (st["store"]["state"], st["store"]["dropped"], st["routing"]["source"]) == (
                "ok", 0, "postgresql",
            )
    r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        aapl = await r.xrange(ticks_key("NASDAQ:AAPL"))
        reliance = await r.xrange(ticks_key("NSE:RELIANCE"))
    finally:
        await r.aclose()
    assert [float(f["price"]) for _, f in aapl] == [200.0 + i for i in range(n)]
    assert [float(f["price"]) for _, f in reliance] == [2400.0 + i for i in range(n)]
    assert {f["provider"] for _, f in aapl} == {"YF"} and {f["provider"] for _, f in reliance} == {"DHAN"}


async def test_failover_dhan_to_yahoo_and_back_on_fresh_database(empty_dsn: str, tmp_path: Path) -> None:
    dhan = FakeDhanServer(token=TOKEN, client_id=CLIENT)
    await dhan.start()
    dhan_port = dhan.port
    async with FakeYahooServer() as yahoo:
        settings = settings_from_toml(_fresh_config(empty_dsn, yahoo.url, dhan.url), DHAN, tmp_path)
        async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as client:
            assert gw.status()["routing"]["source"] == "postgresql"
            await client.send({"op": "subscribe", "instruments": ["NSE:NOSUCHSYMBOL"]})
            err: dict[str, Any] = await client.recv_type("error")
            assert err["code"] == "no_route" and "unknown instrument NSE:NOSUCHSYMBOL" in err["message"]

            await client.subscribe("nse:reliance")
            await dhan.wait_subscribed("NSE_EQ:2885")
            await dhan.send_quote("NSE_EQ:2885", 2456.75, ts_ms=T0)
            t = (await client.ticks(1))[0]
            assert (t["instrument"], t["provider"], t["price"]) == ("NSE:RELIANCE", "DHAN", 2456.75)

            await dhan.stop()  # the Dhan endpoint is gone
            await yahoo.wait_subscribed("RELIANCE.NS", timeout=10)
            await yahoo.send_pricing("RELIANCE.NS", price=2457.5, time=T0 + 1000)
            t = (await client.ticks(1))[0]
            assert (t["instrument"], t["provider"], t["price"]) == ("NSE:RELIANCE", "YF", 2457.5)

            dhan2 = FakeDhanServer(token=TOKEN, client_id=CLIENT, port=dhan_port)
            await dhan2.start()
            try:
                await dhan2.wait_subscribed("NSE_EQ:2885")
                await yahoo.wait_until(lambda _: "RELIANCE.NS" not in yahoo.subscribed, timeout=10)
                await dhan2.send_quote("NSE_EQ:2885", 2458.0, ts_ms=T0 + 2000)
                t = (await client.ticks(1))[0]
                assert (t["provider"], t["price"]) == ("DHAN", 2458.0)
            finally:
                await dhan2.stop()
    assert "NOSUCHSYMBOL.NS" not in {s for c in yahoo.connections for s in c.subscribed}
