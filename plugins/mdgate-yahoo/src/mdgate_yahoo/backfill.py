"""
One-minute backfill through yfinance's REST history (``Ticker.history``).

Yahoo's limits for 1-minute bars (docs/protocols/yahoo.md#rest-history):
at most 8 days per request, and only within roughly the last 30 days
(probes: 29 days accepted, 30 refused). :func:`plan_windows` therefore splits a range into
windows of at most :data:`MAX_WINDOW_MS` and refuses ranges starting more
than :data:`MAX_AGE_MS` ago with :class:`BackfillRangeError`, instead of
letting Yahoo answer with an empty frame.

yfinance is imported lazily inside the worker-thread function: importing it
loads pandas, numpy and curl_cffi (about a second), which the streaming path
must never pay. Its calls are blocking, so they run in
``anyio.to_thread.run_sync``.

The pure parts (:func:`plan_windows`, :func:`decode_history`) are tested
offline. ``[providers.yahoo] history_url`` sends yfinance's requests to
``*.yahoo.com`` (the chart API, and the cookie and crumb it fetches first) to
another base URL, path and query kept: the real yfinance code path then
decodes a local fake's chart v8 JSON (the plugin's
``tests/test_history_url.py``). yfinance keeps one session per process (its ``YfData``
singleton): the redirecting session stays in place for every later yfinance
call of the process, so changing ``history_url`` needs a restart.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
from collections.abc import Callable
from typing import Any, Final

import anyio.to_thread

from mdgate import Bar, ProviderConnectionError, ProviderError, RateLimitedError, now_ms
from mdgate_yahoo.protocol import NAME, round_price

__all__ = [
    "MAX_AGE_MS",
    "MAX_WINDOW_MS",
    "BackfillRangeError",
    "HistoryLoader",
    "decode_history",
    "fetch_bars",
    "load_history_yfinance",
    "plan_windows",
    "yfinance_loader",
]

_DAY_MS: Final = 86_400_000
_MINUTE_MS: Final = 60_000

#: Longest range of one 1-minute history request (Yahoo: 8 days).
MAX_WINDOW_MS: Final = 8 * _DAY_MS
#: Oldest start accepted for 1-minute bars (Yahoo refuses ~30 days; 29 is safe).
MAX_AGE_MS: Final = 29 * _DAY_MS

#: ``loader(symbol, start_ms, end_ms, prepost, request_timeout)``
#: ``-> (DataFrame-like, price_hint)``
HistoryLoader = Callable[[str, int, int, bool, float], tuple[Any, int | None]]


class BackfillRangeError(ProviderError):
    """The requested range is outside what Yahoo serves for 1-minute bars."""

    retryable = False


def plan_windows(start_ms: int, end_ms: int, now: int) -> list[tuple[int, int]]:
    """
    Split ``[start_ms, end_ms)`` into Yahoo-sized 1-minute history requests.

    Args:
        start_ms: range start, epoch ms UTC (inclusive).
        end_ms: range end, epoch ms UTC (exclusive); clipped to ``now``.
        now: the current time, epoch ms UTC.

    Returns:
        Consecutive ``(start, end)`` windows of at most :data:`MAX_WINDOW_MS`,
        oldest first; empty when the (clipped) range is empty.

    Raises:
        BackfillRangeError: ``start_ms`` is more than :data:`MAX_AGE_MS`
            before ``now``.
    """
    end_ms = min(end_ms, now)
    if start_ms >= end_ms:
        return []
    if start_ms < now - MAX_AGE_MS:
        days = (now - start_ms) / _DAY_MS
        raise BackfillRangeError(
            NAME,
            "1-minute bars are only available for the last "
            f"{MAX_AGE_MS // _DAY_MS} days; "
            f"the range starts {days:.1f} days ago",
        )
    windows: list[tuple[int, int]] = []
    s = start_ms
    while s < end_ms:
        e = min(s + MAX_WINDOW_MS, end_ms)
        windows.append((s, e))
        s = e
    return windows


def _decimals(price: float, hint: int | None) -> int:
    if hint is not None and 0 <= hint <= 10:
        return hint
    return 2 if abs(price) >= 1.0 else 4


def decode_history(
    frame: Any,
    instrument: str,
    *,
    price_hint: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Bar]:
    """
    Turn a yfinance history DataFrame into :class:`~mdgate.Bar` objects.

    Args:
        frame: a pandas DataFrame indexed by (tz-aware, any zone) minute
            timestamps with columns ``Open``, ``High``, ``Low``, ``Close``,
            ``Volume``. Naive timestamps are taken as UTC.
        instrument: the instrument name for the bars.
        price_hint: decimals to round prices to (Yahoo's ``priceHint``);
            ``None``: 2, or 4 below 1.
        start_ms: drop bars starting before this (epoch ms UTC).
        end_ms: drop bars starting at or after this.

    Returns:
        Bars in time order, ``start`` in epoch ms UTC; rows with a missing
        price are skipped, a missing volume counts as 0. ``count`` is 0:
        REST bars do not say how many ticks they cover.
    """
    if frame is None or len(frame) == 0:
        return []
    cols = [frame[c].tolist() for c in ("Open", "High", "Low", "Close", "Volume")]
    bars: list[Bar] = []
    for ts, o, h, lo, c, v in zip(frame.index, *cols, strict=True):
        if not all(isinstance(x, int | float) and math.isfinite(x) for x in (o, h, lo, c)):
            continue
        start = round(ts.timestamp() * 1000)
        start -= start % _MINUTE_MS
        if (start_ms is not None and start < start_ms) or (end_ms is not None and start >= end_ms):
            continue
        d = _decimals(c, price_hint)
        volume = int(v) if isinstance(v, int | float) and math.isfinite(v) else 0
        bars.append(
            Bar(
                instrument,
                start,
                round_price(o, d),
                round_price(h, d),
                round_price(lo, d),
                round_price(c, d),
                volume,
                0,
            )
        )
    bars.sort(key=lambda b: b.start)
    return bars


def _session_to(base: str) -> Any:
    """A ``requests`` session that sends every request for ``*.yahoo.com`` to ``base`` instead."""
    from urllib.parse import urlsplit

    import requests  # yfinance's own dependency; lazy, as yfinance

    class Redirected(requests.Session):
        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            parts = urlsplit(str(url))
            host = parts.hostname or ""
            if host == "yahoo.com" or host.endswith(".yahoo.com"):
                url = base + parts.path + (f"?{parts.query}" if parts.query else "")
            return super().request(method, url, *args, **kwargs)

    return Redirected()


def yfinance_loader(history_url: str | None = None) -> HistoryLoader:
    """The yfinance loader, its requests sent to ``history_url`` when given (else to Yahoo)."""
    if history_url is None:
        return load_history_yfinance
    return functools.partial(load_history_yfinance, history_url=history_url)


def load_history_yfinance(
    symbol: str, start_ms: int, end_ms: int, prepost: bool, timeout: float, *, history_url: str | None = None
) -> tuple[Any, int | None]:
    """
    Fetch one window of 1-minute history with yfinance (blocking; worker thread).

    ``history_url``: send yfinance's requests to ``*.yahoo.com`` there instead.

    Returns:
        The DataFrame and Yahoo's ``priceHint`` for the symbol (or ``None``).

    Raises:
        RateLimitedError: Yahoo answered 429.
        ProviderConnectionError: any other failure of the request.
    """
    import yfinance as yf  # lazy: ~1 s and ~950 modules, never on the streaming path
    from yfinance.exceptions import YFRateLimitError

    # Raise instead of logging and returning an empty frame (a process-wide switch).
    yf.config.debug.hide_exceptions = False
    try:
        ticker = yf.Ticker(symbol, session=_session_to(history_url) if history_url else None)
        frame = ticker.history(
            interval="1m",
            start=_dt.datetime.fromtimestamp(start_ms / 1000, tz=_dt.UTC),
            end=_dt.datetime.fromtimestamp(end_ms / 1000, tz=_dt.UTC),
            prepost=prepost,
            auto_adjust=False,
            actions=False,
            timeout=timeout,
        )
        hint = (ticker.history_metadata or {}).get("priceHint")
    except YFRateLimitError as exc:
        raise RateLimitedError(NAME, f"history {symbol}: {exc}") from exc
    except Exception as exc:  # network, HTTP and yfinance errors alike
        raise ProviderConnectionError(NAME, f"history {symbol}: {type(exc).__name__}: {exc}") from exc
    return frame, hint if isinstance(hint, int) else None


def _fetch_sync(
    loader: HistoryLoader,
    instrument: str,
    code: str,
    windows: list[tuple[int, int]],
    prepost: bool,
    timeout: float,
) -> list[Bar]:
    bars: list[Bar] = []
    for s, e in windows:
        frame, hint = loader(code, s, e, prepost, timeout)
        bars.extend(decode_history(frame, instrument, price_hint=hint, start_ms=s, end_ms=e))
    return bars


async def fetch_bars(
    instrument: str,
    code: str,
    start_ms: int,
    end_ms: int,
    *,
    prepost: bool = False,
    request_timeout: float = 30.0,
    loader: HistoryLoader = load_history_yfinance,
    now: int | None = None,
) -> list[Bar]:
    """
    Fetch 1-minute bars for ``code`` over ``[start_ms, end_ms)`` in a worker thread.

    Args:
        instrument: instrument name for the bars (``NASDAQ:AAPL``).
        code: the Yahoo symbol (``AAPL``).
        start_ms: range start, epoch ms UTC.
        end_ms: range end, epoch ms UTC (clipped to now).
        prepost: include pre/post-market minutes.
        request_timeout: seconds per yfinance request.
        loader: what fetches one window (yfinance by default; tests pass a fake).
        now: the current time (epoch ms) for the range checks; default: now.

    Raises:
        BackfillRangeError: the range starts too long ago.
        RateLimitedError: Yahoo answered 429.
        ProviderConnectionError: a request failed.
    """
    windows = plan_windows(start_ms, end_ms, now_ms() if now is None else now)
    if not windows:
        return []
    work = functools.partial(_fetch_sync, loader, instrument, code, windows, prepost, request_timeout)
    return await anyio.to_thread.run_sync(work)
