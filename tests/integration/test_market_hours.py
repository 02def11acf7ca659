"""
Market-hours-aware staleness, on a whole gateway: the example provider's
fake feed (real sockets on 127.0.0.1) and a fake clock (a ManualClock for the
sessions and market hours, the calendars' wall clock derived from it).

With the exchange calendar saying closed, a silent provider causes no
reconnect and no stale state; with it open, it does; one instrument silent
while another on the same connection flows is stale and reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from mdgate._app import Gateway
from mdgate._clock import ManualClock
from mdgate._config import Settings
from mdgate._providers.registry import load_registry
from mdgate.testing import GatewayHandle

pytestmark = pytest.mark.anyio

IST = ZoneInfo("Asia/Kolkata")
#: The example feed's exchange, given NSE's hours (the provider's stall_timeout: 4 s).
CALENDAR = """
[calendars.EXAMPLE]
timezone = "Asia/Kolkata"
open = "09:15"
close = "15:30"
holidays = ["2026-12-04"]

[subscriptions]
always = ["EXAMPLE:ACME", "EXAMPLE:BOLT"]
"""


def ist(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=IST).timestamp()


@asynccontextmanager
async def clocked_gateway(
    settings: Settings, wall0: float,
) -> AsyncIterator[tuple[GatewayHandle, ManualClock]]:
    """A gateway on a free port whose sessions and market hours run on a ManualClock starting at ``wall0``."""
    clock = ManualClock()
    start = clock.time
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, port=0))
    registry = load_registry(settings.environ)
    gw = Gateway(settings, registry, clock=clock, wall=lambda: wall0 + clock.time - start)
    async with anyio.create_task_group() as tg:
        port: int = await tg.start(gw.run)
        try:
            yield GatewayHandle(gw, port), clock
        finally:
            gw.stop()
            with anyio.CancelScope(shield=True):
                await gw.wait_stopped()


async def advance(clock: ManualClock, seconds: float) -> None:
    """Move the clock on one second at a time (the watchdog and the market look tick every second)."""
    for _ in range(int(seconds)):
        await clock.advance(1.0)
        await anyio.sleep(0.005)  # real sockets: let frames in flight arrive


async def states(gw: GatewayHandle) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        doc: dict[str, Any] = (await http.get("/status?instruments=1")).json()
    return doc


@pytest.fixture
def calendar_settings(feed: Any, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(feed.url, CALENDAR, example="stall_timeout = 4.0")


async def test_closed_market_silent_provider_no_reconnect_and_closed(feed, calendar_settings):
    async with clocked_gateway(calendar_settings, ist("2026-12-03 16:00")) as (gw, clock):
        await feed.wait_subscribed("ACME", "BOLT")
        await advance(clock, 120)
        doc = await states(gw)
        assert feed.accepted == 1
        assert doc["providers"]["example"]["state"] == "connected"
        assert doc["providers"]["example"]["reconnects"] == 0
        assert {i["state"] for i in doc["instruments"].values()} == {"closed"}
        assert doc["routing"]["stale"] == 0 and doc["routing"]["markets"]["EXAMPLE"] == "closed"


async def test_holiday_from_the_config_is_closed_all_day(feed, calendar_settings):
    async with clocked_gateway(calendar_settings, ist("2026-12-04 11:00")) as (gw, clock):
        await feed.wait_subscribed("ACME", "BOLT")
        await advance(clock, 30)
        assert feed.accepted == 1
        assert gw.status()["routing"]["markets"]["EXAMPLE"] == "closed"


async def test_open_market_silent_provider_stalls_reconnects_and_goes_stale(feed, calendar_settings):
    async with clocked_gateway(calendar_settings, ist("2026-12-03 11:00")) as (gw, clock):
        await feed.wait_subscribed("ACME", "BOLT")
        await advance(clock, 3)
        assert {i["state"] for i in (await states(gw))["instruments"].values()} == {"live"}
        with capture_logs() as logs:
            await advance(clock, 3)
        doc = await states(gw)
        assert "stalled" in doc["providers"]["example"]["last_error"]
        assert {i["state"] for i in doc["instruments"].values()} == {"stale"}
        assert doc["routing"]["stale"] == 2
        stale = [e for e in logs if e["event"] == "instrument_stale"]
        assert sorted(e["instrument"] for e in stale) == ["EXAMPLE:ACME", "EXAMPLE:BOLT"]
        assert all(e["connection_flows"] is False and e["provider"] == "example" for e in stale)
        await advance(clock, 1)  # the backoff (at most 0.05 s) is over: reconnect
        await feed.wait_until(lambda f: f.accepted >= 2)
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            metrics = (await http.get("/metrics")).text
        assert "mdgate_instruments_stale 2.0" in metrics


async def test_silence_counts_from_the_open_not_from_the_last_tick(feed, calendar_settings):
    async with clocked_gateway(calendar_settings, ist("2026-12-03 09:14:30")) as (gw, clock):
        await feed.wait_subscribed("ACME", "BOLT")
        await advance(clock, 33)  # 09:15:03: silent since 09:14:30, but open for 3 s only
        doc = await states(gw)
        assert feed.accepted == 1 and doc["providers"]["example"]["state"] == "connected"
        assert {i["state"] for i in doc["instruments"].values()} == {"live"}
        await advance(clock, 3)  # 09:15:06
        assert "stalled" in gw.status()["providers"]["example"]["last_error"]
        assert {i["state"] for i in (await states(gw))["instruments"].values()} == {"stale"}


async def test_one_silent_instrument_while_its_connection_flows_is_stale_and_logged(feed, calendar_settings):
    async with clocked_gateway(calendar_settings, ist("2026-12-03 11:00")) as (gw, clock):
        await feed.wait_subscribed("ACME", "BOLT")
        with capture_logs() as logs:
            for i in range(8):
                await feed.send_tick("ACME", 100.0 + i)
                with anyio.fail_after(5):
                    while gw.gateway.latest.get("EXAMPLE:ACME") is None or \
                            gw.gateway.latest.get("EXAMPLE:ACME").price != 100.0 + i:
                        await anyio.sleep(0.005)
                await advance(clock, 1)
        doc = await states(gw)
        assert feed.accepted == 1  # the connection flows: no stall
        assert doc["instruments"]["EXAMPLE:ACME"]["state"] == "live"
        assert doc["instruments"]["EXAMPLE:BOLT"]["state"] == "stale"
        assert doc["instruments"]["EXAMPLE:BOLT"]["silent_s"] >= 4
        assert doc["routing"]["stale"] == 1
        stale = [e for e in logs if e["event"] == "instrument_stale"]
        assert len(stale) == 1 and stale[0]["instrument"] == "EXAMPLE:BOLT"
        assert stale[0]["connection_flows"] is True and stale[0]["others_flowing"] == 1
        assert stale[0]["connection"] == 0
        # logged once per move to stale, not at every look
        with capture_logs() as later:
            await feed.send_tick("ACME", 1.0)
            await advance(clock, 3)
        assert not [e for e in later if e["event"] == "instrument_stale"]


async def test_reload_applies_a_new_calendar(feed, calendar_settings, tmp_path):
    async with clocked_gateway(calendar_settings, ist("2026-12-03 11:00")) as (gw, clock):
        await feed.wait_subscribed("ACME", "BOLT")
        assert gw.status()["routing"]["markets"]["EXAMPLE"] == "open"
        cfg = tmp_path / "reload.toml"
        cfg.write_text(f'[providers.example]\nurl = "{feed.url}"\nstall_timeout = 4.0\n'
                       '[calendars.EXAMPLE]\ntimezone = "Asia/Kolkata"\nopen = "09:15"\nclose = "15:30"\n'
                       'holidays = ["2026-12-03"]\n'
                       '[subscriptions]\nalways = ["EXAMPLE:ACME", "EXAMPLE:BOLT"]\n')
        gw.gateway.config_path = str(cfg)
        assert gw.gateway.reload()
        assert gw.status()["routing"]["markets"]["EXAMPLE"] == "closed"
        await advance(clock, 20)
        assert feed.accepted == 1
        assert {i["state"] for i in (await states(gw))["instruments"].values()} == {"closed"}
