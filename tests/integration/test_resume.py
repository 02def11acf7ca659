"""Resumable subscriptions with the memory store: answers, refusals and limits of ``since``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mdgate._config import Settings
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.integration

ACME, BOLT = "EXAMPLE:ACME", "EXAMPLE:BOLT"
T0 = 1_700_000_000_000


async def feed_ticks(feed: Any, c: GatewayClient, n: int, start: int = 0) -> list[int]:
    for i in range(start, start + n):
        await feed.send_tick("ACME", 1.0 + i, ts=T0 + i)
    return [t["seq"] for t in await c.ticks(n)]


async def test_memory_store_replays_what_a_client_missed(
    feed: Any, make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(feed.url, extra=f'[subscriptions]\nalways = ["{ACME}"]\n')
    async with running_gateway(settings) as gw:
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.subscribe(ACME)
            await feed.wait_until(lambda f: "ACME" in f.subscribed)
            assert await feed_ticks(feed, c, 3) == [1, 2, 3]
        for i in range(3, 6):
            await feed.send_tick("ACME", 1.0 + i, ts=T0 + i)
        await gw.wait_for(lambda s: s["pipeline"]["ticks"] == 6)
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.send({"op": "subscribe", "instruments": [ACME, BOLT], "since": {ACME: 3}})
            answer = await c.recv()
            assert answer == {"type": "subscribed", "instruments": [ACME, BOLT], "recovered": {ACME: True}}
            snapshot = await c.recv()  # of BOLT only, which was not resumed
            assert snapshot == {"type": "snapshot", "ticks": []}
            assert [t["seq"] for t in await c.ticks(3)] == [4, 5, 6]


async def test_a_client_ahead_of_the_gateway_is_told_where_numbering_goes_on(
    feed: Any, make_settings: Callable[..., Settings],
) -> None:
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        # e.g. a gateway restarted with the memory store: it numbered nothing of ACME yet
        await c.send({"op": "subscribe", "instruments": [ACME], "since": {ACME: 500}})
        assert await c.recv() == {"type": "subscribed", "instruments": [ACME], "recovered": {ACME: False},
                                  "from_seq": {ACME: 1}}
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        assert await feed_ticks(feed, c, 2) == [1, 2]


async def test_since_for_an_instrument_already_subscribed_replays_nothing(
    feed: Any, make_settings: Callable[..., Settings],
) -> None:
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe(ACME)
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        assert await feed_ticks(feed, c, 3) == [1, 2, 3]
        await c.send({"op": "subscribe", "instruments": [ACME], "since": {ACME: 0}})
        assert await c.recv() == {"type": "subscribed", "instruments": [ACME]}
        await c.recv_type("snapshot")
        assert await feed_ticks(feed, c, 1, start=3) == [4]  # no replay of 1..3: they were delivered


@pytest.mark.parametrize("since", [[1], {ACME: -1}, {ACME: "3"}, {ACME: True}, {ACME: 1.5}])
async def test_a_bad_since_is_refused_and_nothing_is_subscribed(
    since: Any, feed: Any, make_settings: Callable[..., Settings],
) -> None:
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.send({"op": "subscribe", "instruments": [ACME], "since": since})
        error = await c.recv()
        assert (error["type"], error["code"]) == ("error", "bad_request") and "since" in error["message"]
        status = await gw.wait_for(lambda s: True)
        assert status["routing"]["instruments"] == 0


async def test_ticks_arriving_while_the_snapshot_is_read_are_not_lost(
    feed: Any, make_settings: Callable[..., Settings],
) -> None:
    import dataclasses

    import anyio

    settings = make_settings(feed.url, extra=f'[subscriptions]\nalways = ["{ACME}"]\n')
    async with running_gateway(settings) as gw:
        server = gw.gateway.server
        reading, go_on = anyio.Event(), anyio.Event()
        real = server.backends.snapshot

        async def slow_snapshot(names: Any) -> Any:
            reading.set()
            await go_on.wait()  # ticks flow meanwhile
            return await real(names)

        server.backends = dataclasses.replace(server.backends, snapshot=slow_snapshot)
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.send({"op": "subscribe", "instruments": [ACME]})
            with anyio.fail_after(5):
                await reading.wait()
            for i in range(3):
                await feed.send_tick("ACME", 1.0 + i, ts=T0 + i)
            await gw.wait_for(lambda s: s["pipeline"]["ticks"] == 3)
            go_on.set()
            assert await c.recv() == {"type": "subscribed", "instruments": [ACME]}
            assert (await c.recv())["type"] == "snapshot"
            assert [t["seq"] for t in await c.ticks(3)] == [1, 2, 3]
