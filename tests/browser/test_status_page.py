"""
The status page (``GET /``) in a real headless Chromium, against a gateway
fed by the Yahoo and Dhan fakes: providers and their states, live prices of
a US and an Indian instrument, a provider going down, the token, escaping.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, WebSocketRoute, expect

from tests.browser.conftest import RELIANCE, TOKEN, Stack

pytestmark = pytest.mark.anyio

#: Longest wait for anything the page shows (it polls /status every second).
WAIT_MS = 10_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _errors_of(page: Page) -> list[str]:
    """Collect the page's console errors and uncaught exceptions into the returned list."""
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return errors


def _tick_cell(page: Page, instrument: str, cell: str) -> Locator:
    return page.locator(f'#ticks tr[data-instrument="{instrument}"] .{cell}')


def _state(page: Page, provider: str) -> Locator:
    return page.locator(f'#providers tr[data-provider="{provider}"] .state')


async def test_page_shows_providers_live_prices_and_a_provider_going_down(
    stack: Stack, browser: Browser, artifacts: Path
) -> None:
    page = await browser.new_page()
    errors = _errors_of(page)
    response = await page.goto(stack.page_url())
    assert response is not None and response.status == 200
    assert "default-src 'self'" in (await response.all_headers())["content-security-policy"]

    # both providers listed and connected; the gateway ok
    await expect(_state(page, "yahoo")).to_have_text("connected", timeout=WAIT_MS)
    await expect(_state(page, "dhan")).to_have_text("connected", timeout=WAIT_MS)
    await expect(_state(page, "yahoo")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#gw-status")).to_have_text("ok", timeout=WAIT_MS)
    await expect(page.locator("#ws-state")).to_have_text("open", timeout=WAIT_MS)
    # the live table holds the served (always) instruments by default
    await expect(page.locator("#ticks tbody tr")).to_have_count(2, timeout=WAIT_MS)

    # a US price and its update, with the change vs the first price seen
    await stack.yahoo.send_pricing("AAPL", price=227.55)
    await expect(_tick_cell(page, "NASDAQ:AAPL", "price")).to_have_text("227.55", timeout=WAIT_MS)
    await expect(_tick_cell(page, "NASDAQ:AAPL", "provider")).to_have_text("YF")
    # ticks flow: live, whatever the calendar says (the gateway's judgement, from /status)
    await expect(_tick_cell(page, "NASDAQ:AAPL", "state")).to_have_attribute("data-state", "live",
                                                                             timeout=WAIT_MS)
    await stack.yahoo.send_pricing("AAPL", price=228.1)
    await expect(_tick_cell(page, "NASDAQ:AAPL", "price")).to_have_text("228.10", timeout=WAIT_MS)
    await expect(_tick_cell(page, "NASDAQ:AAPL", "change")).to_have_text("+0.55 (+0.24%)")
    await expect(_tick_cell(page, "NASDAQ:AAPL", "change")).to_have_class(re.compile(r"\bup\b"))
    points = page.locator('#ticks tr[data-instrument="NASDAQ:AAPL"] .spark polyline')
    await expect(points).to_have_attribute("points", re.compile(r"^\S+ \S+$"))  # two prices drawn

    # an Indian price: the change is against Dhan's previous close (2400)
    await stack.dhan.send_quote(RELIANCE, 2456.75)
    await expect(_tick_cell(page, "NSE:RELIANCE", "price")).to_have_text("2456.75", timeout=WAIT_MS)
    await expect(_tick_cell(page, "NSE:RELIANCE", "provider")).to_have_text("DHAN")
    await expect(_tick_cell(page, "NSE:RELIANCE", "change")).to_have_text("+56.75 (+2.36%)")
    await stack.dhan.send_quote(RELIANCE, 2390.5)
    await expect(_tick_cell(page, "NSE:RELIANCE", "price")).to_have_text("2390.50", timeout=WAIT_MS)
    await expect(_tick_cell(page, "NSE:RELIANCE", "change")).to_have_class(re.compile(r"\bdown\b"))

    # the age of the last tick keeps counting without new ticks
    age = _tick_cell(page, "NSE:RELIANCE", "age")
    shown = await age.text_content()
    await expect(age).not_to_have_text(shown or "", timeout=WAIT_MS)

    # rates come from the deltas between two polls: frames arrived in between, so not 0.0
    for price in (2391.0, 2391.5, 2392.0):
        await stack.dhan.send_quote(RELIANCE, price)
    nonzero = re.compile(r"^(?!0\.0$)\d+\.\d$")
    dhan_row = page.locator('#providers tr[data-provider="dhan"]')
    await expect(dhan_row.locator(".frames-rate")).to_have_text(nonzero, timeout=WAIT_MS)
    await expect(dhan_row.locator(".ticks-rate")).to_have_text(nonzero, timeout=WAIT_MS)
    await expect(_tick_cell(page, "NSE:RELIANCE", "price")).to_have_text("2392.00")

    # Yahoo goes away and refuses to come back: the page shows it not connected
    stack.yahoo.refuse_for(3600)
    stack.yahoo.drop()
    down = re.compile(r"^(connecting|reconnecting)$")
    await expect(_state(page, "yahoo")).to_have_text(down, timeout=WAIT_MS)
    await expect(_state(page, "yahoo")).not_to_have_attribute("data-state", "connected")
    await expect(page.locator("#gw-status")).to_have_text("degraded", timeout=WAIT_MS)
    await expect(page.locator('#providers tr[data-provider="yahoo"] .last-error')).not_to_be_empty()
    await expect(_state(page, "dhan")).to_have_text("connected")

    shot = artifacts / f"status-page-{int(time.time())}.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"status page screenshot: {shot}")
    data = shot.read_bytes()
    assert len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)

    assert errors == []
    await page.close()


async def test_page_needs_the_token(stack: Stack, browser: Browser) -> None:
    page = await browser.new_page()
    for url in (stack.page_url(None), stack.page_url("wrong-token")):
        response = await page.goto(url)
        assert response is not None and response.status == 401
        assert "/?token=YOUR_TOKEN" in await response.text()
    # the assets hold no data: served without a token
    response = await page.goto(stack.gateway.http_url + "/static/app.js")
    assert response is not None and response.status == 200
    assert TOKEN not in await response.text()
    await page.close()


async def test_banner_when_status_refuses_or_fails(stack: Stack, browser: Browser) -> None:
    page = await browser.new_page()
    await page.goto(stack.page_url())
    await expect(page.locator("#gw-status")).to_have_text("ok", timeout=WAIT_MS)
    await expect(page.locator("#banner")).to_be_hidden()

    # /status answers 401 (say, the token was removed from the configuration)
    await page.route("**/status?*", lambda route: route.fulfill(status=401, body="no\n"))
    await expect(page.locator("#banner")).to_contain_text("/?token=YOUR_TOKEN", timeout=WAIT_MS)
    await expect(page.locator("#gw-status")).to_have_text("token needed")

    # the gateway does not answer at all
    await page.unroute("**/status?*")
    await page.route("**/status?*", lambda route: route.abort("connectionrefused"))
    await expect(page.locator("#banner")).to_contain_text("unreachable", timeout=WAIT_MS)

    # back: the banner goes
    await page.unroute("**/status?*")
    await expect(page.locator("#banner")).to_be_hidden(timeout=WAIT_MS)
    await page.close()


async def test_chosen_instruments_are_kept_and_escaped(stack: Stack, browser: Browser) -> None:
    page = await browser.new_page()
    errors = _errors_of(page)
    await page.goto(stack.page_url())
    await expect(page.locator("#ticks tbody tr")).to_have_count(2, timeout=WAIT_MS)

    evil = "<b>X</b>:Y"
    await page.fill("#pick-input", f"nasdaq:aapl, {evil}")
    await page.click("#pick button[type=submit]")
    rows = page.locator("#ticks tbody tr")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    await expect(page.locator('#ticks tr[data-instrument="NSE:RELIANCE"]')).to_have_count(0)
    # the refused name comes back in an error frame and is shown as text, never as markup
    await expect(page.locator("#ws-error")).to_contain_text(evil.upper(), timeout=WAIT_MS)
    assert await page.locator("#ws-error b, #ticks b").count() == 0
    await expect(_tick_cell(page, evil.upper(), "instrument")).to_have_text(evil.upper())

    # the choice lives in the URL hash and survives a reload
    assert "#instruments=" in page.url
    await page.reload()
    await expect(page.locator("#pick-input")).to_have_value(f"NASDAQ:AAPL {evil.upper()}")
    await expect(page.locator('#ticks tr[data-instrument="NASDAQ:AAPL"]')).to_have_count(1)
    await expect(page.locator('#ticks tr[data-instrument="NSE:RELIANCE"]')).to_have_count(0)

    # back to the default: every served instrument
    await page.click("#pick-reset")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    await expect(page.locator('#ticks tr[data-instrument="NSE:RELIANCE"]')).to_have_count(1)
    assert errors == []
    await page.close()


async def test_websocket_reconnects_and_resubscribes(stack: Stack, browser: Browser) -> None:
    page = await browser.new_page()
    errors = _errors_of(page)
    sockets: list[WebSocketRoute] = []

    def through(ws: WebSocketRoute) -> None:  # every page socket, passed through to the gateway
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket(re.compile(r"/ws\?token="), through)
    await page.goto(stack.page_url())
    await expect(page.locator("#ws-state")).to_have_attribute("data-opened", "1", timeout=WAIT_MS)
    await stack.yahoo.send_pricing("AAPL", price=101.25)
    await expect(_tick_cell(page, "NASDAQ:AAPL", "price")).to_have_text("101.25", timeout=WAIT_MS)
    assert len(sockets) == 1

    # the gateway side goes away: the page shows it, reconnects and subscribes again
    await sockets[0].close(code=1001, reason="going away")
    await expect(page.locator("#ws-state")).to_have_attribute("data-opened", "2", timeout=WAIT_MS)
    await expect(page.locator("#ws-state")).to_have_text("open")
    assert len(sockets) == 2
    await stack.yahoo.send_pricing("AAPL", price=102.5)
    await expect(_tick_cell(page, "NASDAQ:AAPL", "price")).to_have_text("102.50", timeout=WAIT_MS)
    # the snapshot after the resubscribe repeats 101.25: not a new point of the sparkline
    points = page.locator('#ticks tr[data-instrument="NASDAQ:AAPL"] .spark polyline')
    await expect(points).to_have_attribute("points", re.compile(r"^\S+ \S+$"))
    assert errors == []
    await page.close()
