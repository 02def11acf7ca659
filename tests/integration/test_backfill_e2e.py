"""
Issue 15, done when: the provider connection is killed mid-stream; the client receives a ``gap``
with correct bounds, then a ``gap_filled`` once the fake's REST backfill answers, and
``mdgate:{I}:bars:1m`` has no hole.

Everything is real: the fake Dhan v2 feed (WebSocket), a local HTTP server speaking Dhan's REST
``POST /charts/intraday`` (columnar JSON, IST date strings, ``access-token`` header), a throw-away
redis-server, the whole gateway with the installed ``dhan`` plugin, and a WebSocket client. The
backfiller's clock is a ManualClock (its wall clock follows it): the test decides when the
minute holding the gap's end has closed, instead of waiting a minute.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
import redis.asyncio as aioredis

from mdgate._clock import ManualClock
from mdgate._model import now_ms
from mdgate.plugins.stores.redis_store._codec import bars_key, gaps_key
from mdgate.testing import GatewayClient, running_gateway, settings_from_toml
from mdgate.testing.http import QuietHandler, serve_http
from mdgate.testing.redis import RedisServer
from mdgate_dhan.testing import FakeDhanServer

pytestmark = pytest.mark.integration

TOKEN = "backfill-token"
CLIENT = "1100776655"
CODE = "NSE_EQ:2885"
I = "NSE:RELIANCE"  # noqa: E741
MIN = 60_000
IST = timezone(timedelta(hours=5, minutes=30))
REST_PRICE = 2900.0  # every REST bar's price: live bars are at other prices


class DhanRest(QuietHandler):
    """``POST /charts/intraday``: one bar per minute of ``[fromDate, toDate)``, as Dhan answers."""

    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        if self.path != "/v2/charts/intraday" or self.headers.get("access-token") != TOKEN:
            self.reply_json(401, {"errorType": "Invalid_Authentication", "errorCode": "DH-901",
                              "errorMessage": "invalid"})
            return

        def ms(text: str) -> int:
            return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST).timestamp() * 1000)

        lo, hi = ms(body["fromDate"]), ms(body["toDate"])
        starts = list(range(lo - lo % MIN, hi, MIN))
        self.reply_json(200, {"open": [REST_PRICE] * len(starts), "high": [REST_PRICE + 1] * len(starts),
                          "low": [REST_PRICE - 1] * len(starts), "close": [REST_PRICE] * len(starts),
                          "volume": [100] * len(starts), "timestamp": [s // 1000 for s in starts]})


@pytest.fixture
def rest() -> Iterator[str]:
    DhanRest.calls = []
    with serve_http(DhanRest) as url:
        yield f"{url}/v2"


async def stream(url: str, key: str) -> list[tuple[str, dict[str, str]]]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return cast("list[tuple[str, dict[str, str]]]", await r.xrange(key) or [])
    finally:
        await r.aclose()


async def test_a_killed_connection_is_a_gap_then_gap_filled_and_the_bars_have_no_hole(
    rest: str, redis_server: RedisServer, tmp_path: Path,
) -> None:
    text = f"""
[runtime]
backoff_initial = 0.05
backoff_max = 0.2

[redis]
url = "{redis_server.url}"
batch_interval = 0.001

[backfill]
delay = 2

[providers.dhan]
rest_url = "{rest}"
"""
    async with FakeDhanServer(token=TOKEN, client_id=CLIENT) as feed:
        env = {"MDGATE_LOAD_PLUGINS": "dhan", "MDGATE_SUBSCRIPTIONS__LINGER": "0",
               "DHAN_CLIENT_ID": CLIENT, "DHAN_ACCESS_TOKEN": TOKEN}
        settings = settings_from_toml(text + f'url = "{feed.url}"\n', env, tmp_path)
        async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
            backfill = gw.gateway.backfill
            clock = ManualClock(start=0.0)
            wall0 = now_ms()
            backfill.clock, backfill.wall = clock, lambda: wall0 + round(clock.time * 1000)
            await c.subscribe(I)
            await feed.wait_subscribed(CODE)
            t = now_ms() // MIN * MIN - 10 * MIN  # ten minutes ago: these minutes have closed
            await feed.send_quote(CODE, 2880.0, ts_ms=t + 5_000)
            await feed.send_quote(CODE, 2881.0, ts_ms=t + MIN + 5_000)  # closes minute t
            await c.ticks(2)
            await gw.wait_for(lambda s: s["store"]["bars_written"] == 2)  # t + 1 min closed by the clock

            dropped = now_ms()
            feed.drop()  # the provider connection dies mid-stream
            await feed.wait_until(lambda f: f.accepted == 2 and CODE in f.subscribed)
            await feed.send_quote(CODE, 2890.0)  # live again, dated now
            gap = await c.recv_type("gap")
            assert (gap["instrument"], gap["reason"]) == (I, "reconnect")
            assert gap["from_ts"] == t + MIN + 5_000  # the last tick before the drop
            assert dropped <= gap["to_ts"] <= now_ms()
            assert DhanRest.calls == []  # not before the last minute of the gap has closed

            due = gap["to_ts"] // MIN * MIN + MIN + 2_000  # the minute holding to_ts closed, plus the delay
            for _ in range(200):  # a second at a time: the request's 60 s timeout never runs out
                if DhanRest.calls:
                    break
                assert backfill.wall() < due
                await clock.advance(1)
                await anyio.sleep(0.02)  # the request is real HTTP
            assert due <= backfill.wall() < due + 3_000
            done = await c.recv_type("gap_filled", timeout=10)
            counted = gw.status()["routing"]["backfill"]
            assert {k: counted[k] for k in ("requested", "filled", "unfilled", "pending")} == {
                "requested": 1, "filled": 1, "unfilled": 0, "pending": 0}
            from tests.integration.test_metrics import samples, scrape

            page = samples((await scrape(gw)).text)
            assert page[("mdgate_backfill_gaps_total", (("outcome", "filled"),))] == 1

        assert done["instrument"] == I and done["filled"] is True
        assert (done["from_ts"], done["to_ts"]) == (gap["from_ts"], gap["to_ts"])
        assert done["provider"] == "dhan" and done["bars"] >= 9
        [call] = DhanRest.calls
        assert (call["securityId"], call["exchangeSegment"], call["interval"]) == ("2885", "NSE_EQ", "1")
        bars = await stream(redis_server.url, bars_key(I))
        starts = [int(f["start"]) for _, f in bars]
        last = gap["to_ts"] // MIN * MIN
        assert starts == list(range(t, last + MIN, MIN))  # every minute, in order, once
        closes = {int(f["start"]): float(f["close"]) for _, f in bars}
        assert (closes[t], closes[t + MIN]) == (2880.0, 2881.0)  # the live bars won
        assert {closes[m] for m in range(t + 2 * MIN, last, MIN)} == {REST_PRICE}
        kept = [f for _, f in await stream(redis_server.url, gaps_key(I))]
        assert [k.get("status", k.get("reason")) for k in kept] == ["reconnect", "filled"]
        assert kept[1]["from_ts"] == str(gap["from_ts"]) and kept[1]["provider"] == "dhan"


async def test_mdgate_backfill_store_merges_into_redis_and_refuses_the_memory_store(
    redis_server: RedisServer,
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
    environ["MDGATE_LOAD_PLUGINS"] = "example"
    argv = [sys.executable, "-m", "mdgate", "backfill", "EXAMPLE:ACME", "--since", "1700000000000",
            "--until", "1700000200000", "--store"]
    with_redis = {**environ, "MDGATE_REDIS_URL": redis_server.url}
    first = await anyio.run_process(argv, env=with_redis, check=False)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["provider"] == "example" and doc["added"] == len(doc["bars"]) == 3
    starts = [int(f["start"]) for _, f in await stream(redis_server.url, bars_key("EXAMPLE:ACME"))]
    assert starts == [b["start"] for b in doc["bars"]]
    again = await anyio.run_process(argv, env=with_redis, check=False)
    assert json.loads(again.stdout)["added"] == 0  # the minutes have bars now
    memory = await anyio.run_process(argv, env=environ, check=False)
    assert memory.returncode == 2 and "--store" in memory.stderr.decode()
