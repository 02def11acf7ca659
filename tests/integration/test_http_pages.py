"""The status page's HTTP side: the token on ``/``, assets by name only, ``/status?instruments=1``."""

from __future__ import annotations

import httpx
import pytest

from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio

TOKEN = "page-s3cret"


async def test_the_page_needs_the_token_and_its_assets_do_not(feed, make_settings):
    settings = make_settings(feed.url, extra=f'[server]\ntokens = ["{TOKEN}"]\n')
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
        refused = await http.get("/")
        assert refused.status_code == 401 and refused.text == "open /?token=YOUR_TOKEN\n"
        assert (await http.get("/?token=wrong")).status_code == 401
        page = await http.get(f"/?token={TOKEN}")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "<script" in page.text and "https://" not in page.text  # nothing from elsewhere
        js = await http.get("/static/app.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/static/app.css")).headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", [
    "/static/../_app.py", "/static/..%2F_app.py", "/static/%2e%2e/page.py", "/static/nothing.js",
    "/static/", "/static/page.py", "/static//etc/passwd", "/index.html",
])
async def test_only_shipped_assets_are_served(feed, make_settings, path):
    async with running_gateway(make_settings(feed.url)) as gw, \
            httpx.AsyncClient(base_url=gw.http_url) as http:
        answer = await http.get(path)
        assert answer.status_code == 404
        assert "import" not in answer.text


async def test_status_lists_the_instruments_served_on_request(feed, make_settings):
    settings = make_settings(feed.url, extra='[subscriptions]\nalways = ["EXAMPLE:CRUX"]\n')
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_subscribed("ACME", "CRUX")
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            plain = (await http.get("/status")).json()
            listed = (await http.get("/status?instruments=1")).json()
    assert "instruments" not in plain
    assert listed["instruments"] == {
        "EXAMPLE:ACME": {"provider": "example", "clients": 1, "always": False, "state": "live"},
        "EXAMPLE:CRUX": {"provider": "example", "clients": 0, "always": True, "state": "live"},
    }
