"""
The Redis store in ``/metrics`` and ``/readyz``: ticks written and write
latency counted, and readiness kept while Redis is down but the buffer has
room, lost once the buffer is full (ticks are being dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mdgate._config import Settings
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
STORE = (("store", "redis"),)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def get(gw: Any, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{gw.http_url}{path}")


async def test_store_metrics_and_readiness_through_a_redis_outage(
    feed: Any, make_settings: Callable[..., Settings], redis_factory: Any
) -> None:
    server = redis_factory()
    server.start()
    extra = f'[redis]\nurl = "{server.url}"\nbatch_interval = 0.001\nbuffer_max = 30\n'
    n = 0
    async with running_gateway(make_settings(feed.url, extra=extra)) as gw, \
            GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_subscribed("ACME")

        async def burst(k: int) -> None:
            nonlocal n
            for _ in range(k):
                await feed.send_tick("ACME", 1.0, ts=T0 + n, q=1, v=n)
                n += 1
            await c.ticks(k)

        await burst(25)
        await gw.wait_for(lambda s: s["store"]["written"] == 25)
        m = samples((await get(gw, "/metrics")).text)
        assert m[("mdgate_store_ticks_written_total", STORE)] == 25
        assert m[("mdgate_store_up", STORE)] == 1
        batches = m[("mdgate_store_write_seconds_count", STORE)]
        assert batches >= 1 and m[("mdgate_store_write_seconds_bucket", (("le", "+Inf"), *STORE))] == batches
        assert (await get(gw, "/readyz")).status_code == 200

        server.kill()
        await burst(20)  # 20 of buffer_max 30: buffering within its limit
        await gw.wait_for(lambda s: s["store"]["state"] == "down" and s["store"]["buffered"] == 20)
        answer = await get(gw, "/readyz")
        assert answer.status_code == 200, answer.text
        m = samples((await get(gw, "/metrics")).text)
        assert m[("mdgate_store_up", STORE)] == 0
        assert m[("mdgate_store_state", (("state", "down"), *STORE))] == 1
        assert m[("mdgate_store_buffered_ticks", STORE)] == 20

        await burst(15)  # 35 waiting, over buffer_max 30: the next ticks push out the oldest
        await gw.wait_for(lambda s: s["store"]["buffered"] == 35)
        answer = await get(gw, "/readyz")
        assert answer.status_code == 503
        assert answer.json()["reasons"] == [
            "store redis is down and its buffer is full (35 ticks waiting, buffer_max 30): "
            "new ticks push out the oldest"]
        await burst(40)
        st = await gw.wait_for(lambda s: s["store"]["dropped"] > 0)
        m = samples((await get(gw, "/metrics")).text)
        assert m[("mdgate_store_dropped_ticks_total", STORE)] == st["store"]["dropped"]
        assert m[("mdgate_ready", ())] == 0
