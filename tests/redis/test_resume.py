"""
Sequence numbers kept in Redis and resumable subscriptions replayed from it, end to end:
fake provider feed -> gateway -> Redis (throw-away server) -> WebSocket clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from mdgate._config import Settings
from mdgate.plugins.stores.redis_store._codec import ticks_key
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.integration

ACME = "EXAMPLE:ACME"
T0 = 1_700_000_000_000


def with_redis(make_settings: Callable[..., Settings], feed_url: str, url: str, extra: str = "") -> Settings:
    return make_settings(feed_url, extra=f'[redis]\nurl = "{url}"\nbatch_interval = 0.001\n{extra}')


async def stored_seqs(url: str, instrument: str = ACME) -> list[int]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return [int(f["seq"]) for _, f in await r.xrange(ticks_key(instrument))]
    finally:
        await r.aclose()


async def seqs_of(c: GatewayClient, n: int) -> list[int]:
    return [t["seq"] for t in await c.ticks(n)]


async def test_seq_is_stored_with_each_tick_and_continues_after_a_restart(
    feed: Any, make_settings: Callable[..., Settings], redis_server: Any,
) -> None:
    settings = with_redis(make_settings, feed.url, redis_server.url)
    for run in range(2):
        async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
            await c.subscribe(ACME)
            await feed.wait_until(lambda f: "ACME" in f.subscribed)
            for i in range(3):
                await feed.send_tick("ACME", 10.0 + i, ts=T0 + run * 10_000 + i)
            assert await seqs_of(c, 3) == [run * 3 + 1, run * 3 + 2, run * 3 + 3]
            await gw.wait_for(lambda s: s["store"]["written"] == 3)
        feed.subscribed.clear()
    assert await stored_seqs(redis_server.url) == [1, 2, 3, 4, 5, 6]


async def test_a_client_back_with_since_gets_exactly_what_it_missed_then_live(
    feed: Any, make_settings: Callable[..., Settings], redis_server: Any,
) -> None:
    settings = with_redis(make_settings, feed.url, redis_server.url)
    async with running_gateway(settings) as gw:
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.subscribe(ACME)
            await feed.wait_until(lambda f: "ACME" in f.subscribed)
            for i in range(4):
                await feed.send_tick("ACME", 10.0 + i, ts=T0 + i)
            assert await seqs_of(c, 4) == [1, 2, 3, 4]
        # away: ticks 5..9 flow without this client (kept alive by another one)
        async with GatewayClient.connect(gw.ws_url) as keeper:
            await keeper.subscribe(ACME)
            for i in range(4, 9):
                await feed.send_tick("ACME", 10.0 + i, ts=T0 + i)
            await keeper.ticks(5)
            async with GatewayClient.connect(gw.ws_url) as c:
                await c.send({"op": "subscribe", "instruments": [ACME], "since": {ACME: 4}})
                answer = await c.recv_type("subscribed")
                assert answer == {"type": "subscribed", "instruments": [ACME], "recovered": {ACME: True}}
                await feed.send_tick("ACME", 99.0, ts=T0 + 99)
                got = await c.ticks(6)
                assert [t["seq"] for t in got] == [5, 6, 7, 8, 9, 10]
                assert [t["price"] for t in got] == [14.0, 15.0, 16.0, 17.0, 18.0, 99.0]


async def test_history_trimmed_below_since_answers_not_recovered_and_where_it_starts(
    feed: Any, make_settings: Callable[..., Settings], redis_server: Any,
) -> None:
    settings = with_redis(make_settings, feed.url, redis_server.url, "stream_maxlen = 3\n")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as keeper:
        await keeper.subscribe(ACME)
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        for i in range(300):  # MAXLEN ~ trims whole nodes: far more than kept
            await feed.send_tick("ACME", 1.0 + i, ts=T0 + i)
        await keeper.ticks(300)
        await gw.wait_for(lambda s: s["store"]["written"] == 300)
        first = (await stored_seqs(redis_server.url))[0]
        assert first > 2
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.send({"op": "subscribe", "instruments": [ACME], "since": {ACME: 1}})
            answer = await c.recv_type("subscribed")
            assert answer["recovered"] == {ACME: False} and answer["from_seq"] == {ACME: first}
            assert [t["seq"] for t in await c.ticks(301 - first)] == list(range(first, 301))


async def test_replay_max_bounds_a_resume_to_the_newest_ticks(
    feed: Any, make_settings: Callable[..., Settings], redis_server: Any,
) -> None:
    settings = with_redis(make_settings, feed.url, redis_server.url, "[server]\nreplay_max = 4\n")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as keeper:
        await keeper.subscribe(ACME)
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        for i in range(10):
            await feed.send_tick("ACME", 1.0 + i, ts=T0 + i)
        await keeper.ticks(10)
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.send({"op": "subscribe", "instruments": [ACME], "since": {ACME: 2}})
            answer = await c.recv_type("subscribed")
            assert answer["recovered"] == {ACME: False} and answer["from_seq"] == {ACME: 7}
            assert await seqs_of(c, 4) == [7, 8, 9, 10]


async def test_a_long_replay_is_paced_by_the_clients_byte_budget(
    feed: Any, make_settings: Callable[..., Settings], redis_server: Any,
) -> None:
    extra = f'[server]\nclient_buffer_bytes = 65536\n[subscriptions]\nalways = ["{ACME}"]\n'
    settings = with_redis(make_settings, feed.url, redis_server.url, extra)
    async with running_gateway(settings) as gw:
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        for i in range(3000):  # ~300 KB of replay: several budgets' worth
            await feed.send_tick("ACME", 1.0 + i, ts=T0 + i, q=100, v=1000 + i)
        await gw.wait_for(lambda s: s["store"]["written"] == 3000)
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.send({"op": "subscribe", "instruments": [ACME], "since": {ACME: 0}})
            assert (await c.recv_type("subscribed"))["recovered"] == {ACME: True}
            assert await seqs_of(c, 3000) == list(range(1, 3001))
        status = await gw.wait_for(lambda s: True)
        assert status["server"]["closed"] == {"slow": 0, "over_budget": 0}


# -- property: any disconnect times, each seq once, in order, none missing ------------------------


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(0, 25), st.integers(0, 30)), min_size=1, max_size=3),
       pace=st.sampled_from([0.0, 0.0005, 0.002]))
def test_resume_after_random_disconnects_delivers_every_seq_once_in_order(
    plan: list[tuple[int, int]], pace: float, make_settings: Callable[..., Settings], redis_server: Any,
) -> None:
    """
    A feed ticks without pause while one client, after each ``(k, away_ms)`` of the plan,
    disconnects once it has ``k`` more ticks, stays away ``away_ms`` and comes back with
    ``since``: over all its connections it receives 1..N, each once, in order.
    """
    from mdgate_example.testing import FakeExampleServer

    async def scenario() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        await r.flushall()
        await r.aclose()
        always = f'[subscriptions]\nalways = ["{ACME}"]\n'  # subscribed while the client is away
        async with FakeExampleServer() as feed:
            async with running_gateway(with_redis(make_settings, feed.url, redis_server.url, always)) as gw:
                await feed.wait_until(lambda f: "ACME" in f.subscribed)
                sent = 0
                stop = anyio.Event()

                async def ticking() -> None:
                    nonlocal sent
                    while not stop.is_set() and sent < 5_000:  # well under [server] replay_max
                        sent += 1
                        await feed.send_tick("ACME", float(sent), ts=T0 + sent)
                        await anyio.sleep(pace)

                seen: list[int] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ticking)
                    for k, away_ms in plan:
                        async with GatewayClient.connect(gw.ws_url) as c:
                            await c.send({"op": "subscribe", "instruments": [ACME],
                                          "since": {ACME: seen[-1] if seen else 0}})
                            answer = await c.recv_type("subscribed")
                            assert answer["recovered"] == {ACME: True}, (answer, gw.status()["store"])
                            seen += await seqs_of(c, k)
                            c.ws.transport.abort()  # gone at once (a close may wait on a full socket)
                        await anyio.sleep(away_ms / 1000)
                    stop.set()
                async with GatewayClient.connect(gw.ws_url) as c:
                    await c.send({"op": "subscribe", "instruments": [ACME],
                                  "since": {ACME: seen[-1] if seen else 0}})
                    answer = await c.recv_type("subscribed")
                    assert answer["recovered"] == {ACME: True}, (answer, gw.status()["store"])
                    seen += await seqs_of(c, sent - len(seen))
                assert seen == list(range(1, sent + 1))

    anyio.run(scenario)
