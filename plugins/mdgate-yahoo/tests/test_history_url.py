"""
``[providers.yahoo] history_url``: yfinance's real code path (cookie, crumb, chart v8 request,
its DataFrame) against a local HTTP server speaking Yahoo's chart v8 JSON, through ``mdgate_backfill``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mdgate._errors import ConfigError, RateLimitedError
from mdgate._model import Bar, now_ms
from mdgate.testing.http import QuietHandler, serve_http
from mdgate_yahoo import plugin
from mdgate_yahoo.config import parse_config

MIN = 60_000


def trading_period(start_s: int) -> dict[str, Any]:
    day = start_s - start_s % 86_400
    return {"timezone": "EST", "start": day, "end": day + 86_400, "gmtoffset": -18_000}


class FakeChart(QuietHandler):
    """Yahoo as yfinance sees it: a cookie page, ``/v1/test/getcrumb`` and ``/v8/finance/chart/SYMBOL``."""

    paths: list[str] = []
    status = 200

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        type(self).paths.append(self.path)
        if url.path == "/v1/test/getcrumb":
            self.reply(200, b"fake-crumb", "text/plain")
        elif url.path.startswith("/v8/finance/chart/"):
            if type(self).status != 200:
                self.reply(type(self).status, b"Too Many Requests", "text/plain")
                return
            query = parse_qs(url.query)
            end = int(query.get("period2", [now_ms() // 1000])[0])
            start = int(query.get("period1", [end - 300])[0])
            stamps = list(range(start - start % 60, end, 60))
            n = len(stamps)
            meta = {"currency": "USD", "symbol": url.path.rsplit("/", 1)[1], "exchangeName": "NMS",
                    "instrumentType": "EQUITY", "gmtoffset": -18_000, "timezone": "EST",
                    "exchangeTimezoneName": "America/New_York", "priceHint": 2, "dataGranularity": "1m",
                    "currentTradingPeriod": {k: trading_period(start) for k in ("pre", "regular", "post")},
                    "tradingPeriods": [[trading_period(start)]]}
            quote = {"open": [190.123] * n, "high": [191.0] * n, "low": [189.5] * n,
                     "close": [190.5] * n, "volume": [1000 + i for i in range(n)]}
            result = {"meta": meta, "timestamp": stamps, "indicators": {"quote": [quote]}}
            body = {"chart": {"result": [result], "error": None}}
            self.reply(200, json.dumps(body).encode(), "application/json")
        else:  # fc.yahoo.com: the cookie page
            self.reply(200, b"ok", "text/html")


@pytest.fixture
def chart(tmp_path: Path) -> Iterator[str]:
    import yfinance as yf

    yf.set_tz_cache_location(str(tmp_path / "yf"))  # not the user's cache
    FakeChart.paths = []
    FakeChart.status = 200
    with serve_http(FakeChart) as url:
        yield url


def test_history_url_is_an_http_url_shown_masked() -> None:
    config = parse_config({"history_url": "http://user:secret@127.0.0.1:9/"}, {})
    assert config.history_url == "http://user:secret@127.0.0.1:9"
    assert "secret" not in repr(config)
    assert parse_config({}, {}).history_url is None
    with pytest.raises(ConfigError, match=r"providers\.yahoo\.history_url"):
        parse_config({"history_url": "ws://127.0.0.1:9"}, {})


async def test_backfill_through_yfinance_decodes_the_fakes_chart_json(chart: str) -> None:
    config = parse_config({"history_url": chart}, {})
    end = now_ms() // MIN * MIN - 10 * MIN
    start = end - 5 * MIN
    pending = plugin.mdgate_backfill(provider="yahoo", config=config, instrument="NASDAQ:AAPL", code="AAPL",
                                     start_ms=start, end_ms=end)
    assert pending is not None
    bars = await pending
    assert bars == [Bar("NASDAQ:AAPL", start + k * MIN, 190.12, 191.0, 189.5, 190.5, 1000 + k, 0)
                    for k in range(5)]  # UTC minute starts, priceHint 2
    [request] = [p for p in FakeChart.paths if "period1" in p]
    query = parse_qs(urlsplit(request).query)
    assert urlsplit(request).path == "/v8/finance/chart/AAPL"
    assert (query["period1"], query["period2"], query["interval"]) == ([str(start // 1000)],
                                                                      [str(end // 1000)], ["1m"])
    assert query["crumb"] == ["fake-crumb"]  # yfinance's cookie and crumb came from the fake too


async def test_a_429_from_the_chart_api_is_rate_limited(chart: str) -> None:
    FakeChart.status = 429
    config = parse_config({"history_url": chart}, {})
    end = now_ms() // MIN * MIN - 10 * MIN
    pending = plugin.mdgate_backfill(provider="yahoo", config=config, instrument="NASDAQ:AAPL", code="AAPL",
                                     start_ms=end - 5 * MIN, end_ms=end)
    assert pending is not None
    with pytest.raises(RateLimitedError):
        await pending
