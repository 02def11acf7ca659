"""
``/metrics`` and ``/readyz`` against a real gateway fed by the example provider's fake.

The page is parsed by ``prometheus_client``'s own text parser and its
counters are checked against what the fake sent.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(gw: Any, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{gw.http_url}/metrics", **kwargs)


def provider(name: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"provider": name, **labels}.items()))


async def test_metrics_count_what_the_fake_sent(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME", "EXAMPLE:BOLT")
        await feed.wait_subscribed("ACME", "BOLT")
        frames_before = gw.status()["providers"]["example"]["frames"]  # subscribe acks and the like
        now = int(time.time() * 1000)
        for i in range(20):
            # the exchange stamped each tick 30 ms before it was sent
            await feed.send_tick("ACME" if i % 2 else "BOLT", 100.0 + i, ts=now - 30)
        for _ in range(3):
            await feed.send_malformed()
        got = await c.ticks(20)
        assert len(got) == 20
        await gw.wait_for(lambda s: s["providers"]["example"]["frames"] >= frames_before + 23)
        feed.drop()
        await feed.wait_until(lambda f: f.accepted == 2 and {"ACME", "BOLT"} <= f.subscribed)
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "connected")

        page = await scrape(gw)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/plain; version=")
        m = samples(page.text)

    ex = provider("example")
    frames = m[("mdgate_provider_frames_total", ex)]
    assert frames - frames_before == 23
    assert m[("mdgate_provider_ticks_total", ex)] == 20
    assert m[("mdgate_provider_decode_errors_total", provider("example", kind="bad_json"))] == 3
    assert m[("mdgate_provider_reconnects_total", ex)] == 1
    assert m[("mdgate_provider_up", ex)] == 1
    assert m[("mdgate_provider_state", provider("example", state="connected"))] == 1
    assert m[("mdgate_provider_state", provider("example", state="reconnecting"))] == 0
    assert m[("mdgate_provider_connections", ex)] == 1
    assert m[("mdgate_provider_subscriptions", ex)] == 2
    assert 0 <= m[("mdgate_provider_last_message_age_seconds", ex)] < 60
    # ts -> recv_ts: 30 ms and a little: every tick in the 0.05 s bucket, none in 0.025 s
    assert m[("mdgate_provider_latency_seconds_count", ex)] == 20
    assert m[("mdgate_provider_latency_seconds_bucket", provider("example", le="0.025"))] == 0
    assert m[("mdgate_provider_latency_seconds_bucket", provider("example", le="1.0"))] == 20
    assert m[("mdgate_provider_latency_seconds_sum", ex)] >= 20 * 0.030

    assert m[("mdgate_pipeline_ticks_total", ())] == 20
    assert m[("mdgate_pipeline_queue_depth", ())] == 0
    assert m[("mdgate_clients", ())] == 1
    assert m[("mdgate_client_sent_bytes_total", ())] > 20 * 40
    assert m[("mdgate_clients_closed_total", (("reason", "slow"),))] == 0
    age_writes = m[("mdgate_tick_age_at_send_seconds_count", ())]
    assert 1 <= age_writes <= 20  # one observation per write to the socket
    assert m[("mdgate_tick_age_at_send_seconds_bucket", (("le", "+Inf"),))] == age_writes
    store = (("store", "memory"),)
    assert m[("mdgate_store_up", store)] == 1
    assert m[("mdgate_store_buffered_ticks", store)] == 0
    assert m[("mdgate_route_instruments", provider("example"))] == 2
    assert m[("mdgate_ready", ())] == 1
    assert ("process_cpu_seconds_total", ()) in m


async def test_metrics_need_the_token_like_status(feed, make_settings):
    settings = make_settings(feed.url, extra='[server]\ntokens = ["s3cret-token"]\n')
    async with running_gateway(settings) as gw:
        assert (await scrape(gw)).status_code == 401
        ok = await scrape(gw, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and "mdgate_provider_up" in ok.text
        assert "s3cret-token" not in ok.text
        async with httpx.AsyncClient() as http:  # readiness and liveness never need one
            assert (await http.get(f"{gw.http_url}/readyz")).status_code == 200
            assert (await http.get(f"{gw.http_url}/healthz")).status_code == 200


async def test_metrics_public_when_configured(feed, make_settings):
    settings = make_settings(feed.url, extra='[server]\ntokens = ["s3cret-token"]\nmetrics_public = true\n')
    async with running_gateway(settings) as gw:
        assert (await scrape(gw)).status_code == 200
        async with httpx.AsyncClient() as http:  # the rest stays guarded
            assert (await http.get(f"{gw.http_url}/status")).status_code == 401


async def readyz(gw: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{gw.http_url}/readyz")


async def test_readyz_follows_the_provider_of_subscribed_exchanges(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw:
        await gw.wait_for(lambda s: s["providers"]["example"]["state"] == "connected")
        assert (await readyz(gw)).status_code == 200  # nothing subscribed: nothing to serve
        async with GatewayClient.connect(gw.ws_url) as c:
            await c.subscribe("EXAMPLE:ACME")
            await feed.wait_subscribed("ACME")
            answer = await readyz(gw)
            assert answer.status_code == 200 and answer.json() == {"ready": True, "reasons": []}
            feed.refuse_for(30)
            feed.drop()
            with anyio.fail_after(5):
                while (answer := await readyz(gw)).status_code == 200:
                    await anyio.sleep(0.02)
            assert answer.status_code == 503
            body = answer.json()
            assert body["ready"] is False
            assert body["reasons"] == ["exchange EXAMPLE: no live provider (example: reconnecting)"]
            m = samples((await scrape(gw)).text)
            assert m[("mdgate_ready", ())] == 0
            assert m[("mdgate_provider_up", provider("example"))] == 0


async def test_config_reloads_are_counted(feed, make_settings, tmp_path):
    async with running_gateway(make_settings(feed.url)) as gw:
        cfg = tmp_path / "reload.toml"
        cfg.write_text(f'[providers.example]\nurl = "{feed.url}"\n')
        gw.gateway.config_path = str(cfg)
        assert gw.gateway.reload()
        cfg.write_text("[server\n")
        assert not gw.gateway.reload()
        assert not gw.gateway.reload()
        m = samples((await scrape(gw)).text)
    assert m[("mdgate_config_reloads_total", (("result", "ok"),))] == 1
    assert m[("mdgate_config_reloads_total", (("result", "failed"),))] == 2
