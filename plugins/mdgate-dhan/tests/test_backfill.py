"""REST backfill and LTP against a real local HTTP server (and MockTransport for parsing)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mdgate._errors import (
    AuthenticationError,
    ProviderConnectionError,
    RateLimitedError,
    SubscriptionRejected,
)
from mdgate._model import Bar
from mdgate.testing.http import QuietHandler, serve_http
from mdgate_dhan import plugin
from mdgate_dhan.backfill import DhanRest, RateLimiter, rest_error
from mdgate_dhan.config import DhanConfig, parse_config

TOKEN = "rest-secret-token"
ENV = {"DHAN_CLIENT_ID": "1100223344", "DHAN_ACCESS_TOKEN": TOKEN}
# 2026-01-05 09:15 IST = 03:45 UTC.
OPEN_MS = int(datetime(2026, 1, 5, 3, 45, tzinfo=UTC).timestamp() * 1000)


class FakeDhanRest(QuietHandler):
    """Answers /charts/intraday and /marketfeed/ltp in Dhan's documented shapes."""

    calls: list[tuple[str, dict[str, str], Any, float]] = []
    mode = "ok"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        headers = {k.lower(): v for k, v in self.headers.items()}
        type(self).calls.append((self.path, headers, body, time.monotonic()))
        if headers.get("access-token") != TOKEN:
            self.reply_json(
                401,
                {
                    "errorType": "Invalid_Authentication",
                    "errorCode": "DH-901",
                    "errorMessage": "Client ID or user generated access token is invalid",
                },
            )
            return
        if type(self).mode == "rate":
            self.reply_json(
                429, {"errorType": "Rate_Limit", "errorCode": "DH-904", "errorMessage": "Too many requests"}
            )
            return
        if self.path == "/v2/charts/intraday":
            # Three one-minute candles from 09:15 IST, UTC epoch seconds.
            start = OPEN_MS // 1000
            self.reply_json(
                200,
                {
                    "open": [2885.0, 2886.05, 2887.0],
                    "high": [2886.5, 2887.0, 2888.1],
                    "low": [2884.1, 2885.95, 2886.9],
                    "close": [2886.05, 2887.0, 2888.0],
                    "volume": [12000, 8000, 9500],
                    "timestamp": [start, start + 60, start + 120],
                },
            )
        elif self.path == "/v2/marketfeed/ltp":
            data = {seg: {str(i): {"last_price": 100.0 + i} for i in ids} for seg, ids in body.items()}
            self.reply_json(200, {"data": data, "status": "success"})
        else:
            self.reply_json(404, {"errorCode": "DH-905", "errorMessage": "not found"})


@pytest.fixture
def rest_server() -> Iterator[str]:
    FakeDhanRest.calls = []
    FakeDhanRest.mode = "ok"
    with serve_http(FakeDhanRest) as url:
        yield f"{url}/v2"


def config(rest_url: str, **env: str) -> DhanConfig:
    return parse_config({"rest_url": rest_url}, {**ENV, **env})


async def test_intraday_over_real_socket_returns_bars_in_utc(rest_server: str) -> None:
    async with DhanRest(config(rest_server)) as rest:
        bars = await rest.intraday_bars("NSE:RELIANCE", "NSE_EQ:2885", OPEN_MS, OPEN_MS + 120_000)
    assert bars == [
        Bar("NSE:RELIANCE", OPEN_MS, 2885.0, 2886.5, 2884.1, 2886.05, 12000, 0),
        Bar("NSE:RELIANCE", OPEN_MS + 60_000, 2886.05, 2887.0, 2885.95, 2887.0, 8000, 0),
    ]  # end is exclusive
    ((path, headers, body, _),) = FakeDhanRest.calls
    assert path == "/v2/charts/intraday"
    assert headers["access-token"] == TOKEN
    assert headers["client-id"] == "1100223344"
    assert body == {
        "securityId": "2885",
        "exchangeSegment": "NSE_EQ",
        "instrument": "EQUITY",
        "interval": "1",
        "oi": False,
        "fromDate": "2026-01-05 09:15:00",
        "toDate": "2026-01-05 09:17:00",
    }


async def test_intraday_long_range_is_split_into_90_day_requests(rest_server: str) -> None:
    day = 86_400_000
    async with DhanRest(config(rest_server)) as rest:
        await rest.intraday_bars("NSE:NIFTY", "IDX_I:13", OPEN_MS, OPEN_MS + 200 * day)
    bodies = [c[2] for c in FakeDhanRest.calls]
    assert len(bodies) == 3
    assert [b["instrument"] for b in bodies] == ["INDEX"] * 3
    assert bodies[0]["toDate"] == bodies[1]["fromDate"] == "2026-04-05 09:15:00"
    assert bodies[2]["toDate"] == "2026-07-24 09:15:00"


async def test_backfill_hook_returns_awaitable_bars(rest_server: str) -> None:
    pending = plugin.mdgate_backfill(
        provider="dhan",
        config=config(rest_server),
        instrument="NSE:RELIANCE",
        code="NSE_EQ:2885",
        start_ms=OPEN_MS,
        end_ms=OPEN_MS + 180_000,
    )
    assert pending is not None
    bars = await pending
    assert [b.volume for b in bars] == [12000, 8000, 9500]


async def test_ltp_groups_by_segment_over_real_socket(rest_server: str) -> None:
    async with DhanRest(config(rest_server)) as rest:
        prices = await rest.ltp(["NSE_EQ:2885", "NSE_EQ:1333", "BSE_EQ:500325"])
    assert prices == {"NSE_EQ:2885": 2985.0, "NSE_EQ:1333": 1433.0, "BSE_EQ:500325": 500425.0}
    ((_, _, body, _),) = FakeDhanRest.calls
    assert body == {"NSE_EQ": [2885, 1333], "BSE_EQ": [500325]}


async def test_ltp_more_than_1000_codes_paced_one_request_per_second(rest_server: str) -> None:
    codes = [f"NSE_EQ:{i}" for i in range(1, 1502)]
    cfg = parse_config({"rest_url": rest_server}, {**ENV, "DHAN_CLIENT_ID": "pace-test"})
    async with DhanRest(cfg) as rest:
        prices = await rest.ltp(codes)
    assert len(prices) == 1501
    times = [c[3] for c in FakeDhanRest.calls]
    assert [len(c[2]["NSE_EQ"]) for c in FakeDhanRest.calls] == [1000, 501]
    assert times[1] - times[0] >= 0.9


async def test_bad_token_is_authentication_error_without_secret(rest_server: str) -> None:
    cfg = config(rest_server, DHAN_ACCESS_TOKEN="wrong-token-value")
    async with DhanRest(cfg) as rest:
        with pytest.raises(AuthenticationError) as info:
            await rest.ltp(["NSE_EQ:2885"])
    assert "DH-901" in str(info.value)
    assert "wrong-token-value" not in str(info.value)
    assert "SIGHUP" in (info.value.hint or "")


async def test_rate_limited_is_rate_limited_error(rest_server: str) -> None:
    FakeDhanRest.mode = "rate"
    async with DhanRest(config(rest_server)) as rest:
        with pytest.raises(RateLimitedError, match="DH-904"):
            await rest.intraday_bars("NSE:RELIANCE", "NSE_EQ:2885", OPEN_MS, OPEN_MS + 60_000)


async def test_unreachable_server_is_connection_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with DhanRest(config(f"http://127.0.0.1:{port}/v2")) as rest:
        with pytest.raises(ProviderConnectionError):
            await rest.ltp(["NSE_EQ:2885"])


def mock_client(status: int, body: Any) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_intraday_no_data_range_returns_empty() -> None:
    body = {"errorType": "Data_Error", "errorCode": "DH-907", "errorMessage": "no data"}
    async with DhanRest(config("http://x/v2"), client=mock_client(400, body)) as rest:
        assert await rest.intraday_bars("NSE:RELIANCE", "NSE_EQ:2885", 0, 60_000) == []


async def test_intraday_malformed_columns_are_connection_errors() -> None:
    for body in (
        {"open": [1.0]},
        {k: [1] for k in ("timestamp", "open", "high", "low", "close")} | {"volume": []},
        {k: [None] for k in ("timestamp", "open", "high", "low", "close", "volume")},
    ):
        async with DhanRest(config("http://x/v2"), client=mock_client(200, body)) as rest:
            with pytest.raises(ProviderConnectionError):
                await rest.intraday_bars("NSE:RELIANCE", "NSE_EQ:2885", 0, 60_000)


async def test_intraday_needs_kind_for_derivatives() -> None:
    async with DhanRest(config("http://x/v2"), client=mock_client(200, {})) as rest:
        with pytest.raises(ValueError, match="instrument_kind"):
            await rest.intraday_bars("NFO:X", "NSE_FNO:1", 0, 1)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (401, "DH-901", AuthenticationError),
        (403, "DH-902", AuthenticationError),
        (400, "DH-903", AuthenticationError),
        (429, "DH-904", RateLimitedError),
        (400, "DH-905", SubscriptionRejected),
        (500, "DH-908", ProviderConnectionError),
        (502, "", ProviderConnectionError),
        (401, "", AuthenticationError),
        (429, "", RateLimitedError),
    ],
)
def test_rest_error_maps_codes(status: int, code: str, error: type[Exception]) -> None:
    err = rest_error(status, {"errorCode": code, "errorMessage": f"x {TOKEN} y"}, [TOKEN])
    assert type(err) is error
    assert TOKEN not in str(err)


async def test_rate_limiter_spaces_calls() -> None:
    limiter = RateLimiter(20.0)
    start = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    assert time.monotonic() - start >= 4 * 0.05 * 0.9
