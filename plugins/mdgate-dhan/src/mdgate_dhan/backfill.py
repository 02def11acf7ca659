"""
Backfill through Dhan REST v2: one-minute intraday bars (and LTP snapshots).

* ``POST /charts/intraday``: columnar OHLCV with genuine UTC epoch seconds
  (unlike the feed's IST-shifted LTT); at most 90 days per request, so
  longer ranges are split. Dates are sent as IST wall-clock strings
  (``YYYY-MM-DD HH:MM:SS``), as the API expects.
* ``POST /marketfeed/ltp``: last prices for up to 1000 instruments a request.

Client-side rate limits follow Dhan's published ones: Data APIs (charts)
5 requests/s, Quote APIs (``/marketfeed/*``) 1 request/s, shared by every
client of the same credentials in this process. Error bodies
(``{errorType, errorCode, errorMessage}``) become typed errors; no message
carries a credential. Endpoints, limits and error codes:
docs/protocols/dhan.md#rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Final

import anyio
import httpx

from mdgate import (
    AuthenticationError,
    Bar,
    ProviderConnectionError,
    ProviderError,
    RateLimitedError,
    SubscriptionRejected,
)
from mdgate_dhan.config import DhanConfig
from mdgate_dhan.hints import TOKEN_HINT
from mdgate_dhan.protocol import NAME, parse_code, price_decimals

__all__ = [
    "INTRADAY_MAX_DAYS",
    "LTP_MAX_INSTRUMENTS",
    "DhanRest",
    "RateLimiter",
    "fetch_intraday_bars",
    "instrument_type",
    "rest_error",
]

IST: Final = timezone(timedelta(hours=5, minutes=30), "IST")
INTRADAY_MAX_DAYS: Final = 90
LTP_MAX_INSTRUMENTS: Final = 1000
DATA_RATE: Final = 5.0
QUOTE_RATE: Final = 1.0
_MINUTE_MS: Final = 60_000

# Chart "instrument" values by segment, where the segment alone decides it.
_INSTRUMENT_TYPES: Final[Mapping[str, str]] = {
    "NSE_EQ": "EQUITY",
    "BSE_EQ": "EQUITY",
    "IDX_I": "INDEX",
}


class RateLimiter:
    """
    Space calls at least ``1 / rate`` seconds apart (no burst).

    Safe within one event loop without a lock: the slot is claimed before
    the first ``await``.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0

    async def acquire(self) -> None:
        """Wait for this caller's slot."""
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await anyio.sleep(slot - now)


# One pair of limiters per (base URL, client id): Dhan's limits are per user.
_LIMITERS: dict[tuple[str, int], tuple[RateLimiter, RateLimiter]] = {}


def _limiters(config: DhanConfig) -> tuple[RateLimiter, RateLimiter]:
    key = (config.rest_url, hash(config.client_id))
    pair = _LIMITERS.get(key)
    if pair is None:
        pair = _LIMITERS[key] = (RateLimiter(DATA_RATE), RateLimiter(QUOTE_RATE))
    return pair


def instrument_type(code: str) -> str | None:
    """Return the chart API's ``instrument`` for a code's segment, or ``None``."""
    segment, _, _ = parse_code(code)
    return _INSTRUMENT_TYPES.get(segment)


def rest_error(status: int, body: Any, secrets: Sequence[str] = ()) -> ProviderError:
    """
    Map an error response to a typed error.

    DH-901 (and HTTP 401/403 without a body) -> AuthenticationError; DH-902
    (no data plan) and DH-903 (account) -> AuthenticationError with a hint;
    DH-904 and HTTP 429 -> RateLimitedError; DH-908, DH-909 and 5xx ->
    ProviderConnectionError; DH-905/906/907/910/911 and other 4xx ->
    SubscriptionRejected (the request itself is wrong).
    """
    code = ""
    text = ""
    if isinstance(body, Mapping):
        code = str(body.get("errorCode") or "")
        text = str(body.get("errorMessage") or body.get("remarks") or "")[:200]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    message = f"HTTP {status} {code} {text}".strip()
    if code == "DH-901" or (not code and status in (401, 403)):
        return AuthenticationError(
            NAME,
            message,
            code=status,
            hint="access token invalid or expired: " + TOKEN_HINT,
        )
    if code in ("DH-902", "DH-903"):
        return AuthenticationError(
            NAME,
            message,
            code=status,
            hint="the account has no active Data API plan or access: check web.dhan.co",
        )
    if code == "DH-904" or status == 429:
        return RateLimitedError(NAME, message, code=status)
    if code in ("DH-908", "DH-909") or status >= 500:
        return ProviderConnectionError(NAME, message, code=status)
    return SubscriptionRejected(NAME, message, code=status)


def _ist(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, IST).strftime("%Y-%m-%d %H:%M:%S")


class DhanRest:
    """
    Async Dhan REST client (``httpx.AsyncClient``).

    Use as ``async with DhanRest(config) as rest: ...``; pass ``client`` to
    share a connection pool or to inject a transport in tests.
    """

    def __init__(
        self,
        config: DhanConfig,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 15.0,
    ) -> None:
        self._config = config
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._data, self._quote = _limiters(config)
        self._headers = {
            "access-token": config.access_token.reveal(),
            "client-id": config.client_id.reveal(),
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    async def __aenter__(self) -> DhanRest:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_client:
            await self._client.aclose()

    async def _post(self, path: str, body: Mapping[str, Any], limiter: RateLimiter) -> Any:
        await limiter.acquire()
        url = f"{self._config.rest_url}{path}"
        try:
            response = await self._client.post(url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ProviderConnectionError(NAME, f"POST {path} failed: {type(exc).__name__}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        secrets = (self._config.access_token.reveal(), self._config.client_id.reveal())
        if response.status_code >= 400:
            raise rest_error(response.status_code, data, secrets)
        if isinstance(data, Mapping) and data.get("errorCode"):
            raise rest_error(response.status_code, data, secrets)
        if data is None:
            raise ProviderConnectionError(NAME, f"POST {path}: response is not JSON")
        return data

    async def intraday_bars(
        self,
        instrument: str,
        code: str,
        start_ms: int,
        end_ms: int,
        *,
        instrument_kind: str | None = None,
    ) -> list[Bar]:
        """
        Fetch one-minute bars with ``start_ms <= start < end_ms``.

        Args:
            instrument: the mdgate instrument the bars are for (``NSE:RELIANCE``).
            code: its Dhan code (``NSE_EQ:2885``).
            start_ms: range start, epoch ms UTC.
            end_ms: range end (exclusive), epoch ms UTC.
            instrument_kind: the chart API's ``instrument`` (``EQUITY``,
                ``INDEX``, ``FUTSTK``...); derived from the segment when omitted.

        Raises:
            ValueError: the code's segment needs an explicit ``instrument_kind``.
            ProviderError: a typed error for a failed request.
        """
        segment, number, sid = parse_code(code)
        kind = instrument_kind or _INSTRUMENT_TYPES.get(segment)
        if kind is None:
            raise ValueError(f"{code}: give instrument_kind for segment {segment}")
        ndigits = price_decimals(number)
        bars: dict[int, Bar] = {}
        chunk = INTRADAY_MAX_DAYS * 86_400_000
        lo = start_ms - start_ms % _MINUTE_MS
        while lo < end_ms:
            hi = min(lo + chunk, end_ms)
            body = {
                "securityId": str(sid),
                "exchangeSegment": segment,
                "instrument": kind,
                "interval": "1",
                "oi": False,
                "fromDate": _ist(lo),
                "toDate": _ist(hi),
            }
            try:
                data = await self._post("/charts/intraday", body, self._data)
            except SubscriptionRejected as exc:
                if "DH-907" in exc.message:  # no data in this range (holidays)
                    lo = hi
                    continue
                raise
            for bar in _bars(instrument, data, ndigits):
                if start_ms <= bar.start < end_ms:
                    bars[bar.start] = bar
            lo = hi
        return [bars[k] for k in sorted(bars)]

    async def ltp(self, codes: Sequence[str]) -> dict[str, float]:
        """
        Return the last traded price of each code (unanswered codes are absent).

        Requests carry at most 1000 instruments and are spaced 1 s apart.
        """
        out: dict[str, float] = {}
        for i in range(0, len(codes), LTP_MAX_INSTRUMENTS):
            body: dict[str, list[int]] = {}
            decimals: dict[str, int] = {}
            for code in codes[i : i + LTP_MAX_INSTRUMENTS]:
                segment, number, sid = parse_code(code)
                body.setdefault(segment, []).append(sid)
                decimals[segment] = price_decimals(number)
            data = await self._post("/marketfeed/ltp", body, self._quote)
            segments = data.get("data") if isinstance(data, Mapping) else None
            if not isinstance(segments, Mapping):
                raise ProviderConnectionError(NAME, "/marketfeed/ltp: no data object")
            for segment, by_id in segments.items():
                if not isinstance(by_id, Mapping):
                    continue
                for sid, quote in by_id.items():
                    price = quote.get("last_price") if isinstance(quote, Mapping) else None
                    if isinstance(price, int | float) and math.isfinite(price):
                        out[f"{segment}:{sid}"] = round(float(price), decimals.get(segment, 2))
        return out


def _bars(instrument: str, data: Any, ndigits: int) -> list[Bar]:
    if not isinstance(data, Mapping):
        raise ProviderConnectionError(NAME, "/charts/intraday: response is not an object")
    if "data" in data and isinstance(data["data"], Mapping):
        data = data["data"]
    try:
        columns = [data[k] for k in ("timestamp", "open", "high", "low", "close", "volume")]
    except KeyError as exc:
        raise ProviderConnectionError(NAME, f"/charts/intraday: missing column {exc.args[0]!r}") from None
    if len({len(c) for c in columns}) > 1:
        raise ProviderConnectionError(NAME, "/charts/intraday: columns of unequal length")
    out: list[Bar] = []
    try:
        for ts, o, h, lo, c, v in zip(*columns, strict=True):
            out.append(
                Bar(
                    instrument,
                    int(ts) * 1000,
                    round(float(o), ndigits),
                    round(float(h), ndigits),
                    round(float(lo), ndigits),
                    round(float(c), ndigits),
                    int(v),
                    0,
                )
            )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProviderConnectionError(NAME, f"/charts/intraday: bad value in response ({exc})") from None
    return out


async def fetch_intraday_bars(
    config: DhanConfig, instrument: str, code: str, start_ms: int, end_ms: int
) -> list[Bar]:
    """Fetch one-minute bars with a short-lived client (for ``mdgate_backfill``)."""
    async with DhanRest(config) as rest:
        return await rest.intraday_bars(instrument, code, start_ms, end_ms)
