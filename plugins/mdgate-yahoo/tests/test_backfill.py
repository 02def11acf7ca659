"""Backfill planning and DataFrame normalization (offline: no Yahoo)."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest

from mdgate._errors import ProviderConnectionError
from mdgate._model import Bar
from mdgate_yahoo.backfill import (
    MAX_AGE_MS,
    MAX_WINDOW_MS,
    BackfillRangeError,
    decode_history,
    fetch_bars,
    plan_windows,
)

DAY = 86_400_000
MIN = 60_000
NOW = 1_736_509_140_000  # 2025-01-10T11:39:00Z


def test_plan_windows_short_range_one_window() -> None:
    assert plan_windows(NOW - 3600_000, NOW - 60_000, NOW) == [(NOW - 3600_000, NOW - 60_000)]


def test_plan_windows_long_range_split_eight_days() -> None:
    start = NOW - 20 * DAY
    windows = plan_windows(start, NOW, NOW)
    assert windows == [
        (start, start + 8 * DAY),
        (start + 8 * DAY, start + 16 * DAY),
        (start + 16 * DAY, NOW),
    ]
    assert all(e - s <= MAX_WINDOW_MS for s, e in windows)


def test_plan_windows_end_in_future_clipped_to_now() -> None:
    assert plan_windows(NOW - MIN, NOW + DAY, NOW) == [(NOW - MIN, NOW)]


def test_plan_windows_empty_range_no_windows() -> None:
    assert plan_windows(NOW, NOW, NOW) == []
    assert plan_windows(NOW + MIN, NOW + 2 * MIN, NOW) == []


def test_plan_windows_too_old_rejected_clearly() -> None:
    with pytest.raises(BackfillRangeError, match=r"last 29 days; the range starts 31\.0 days ago") as ei:
        plan_windows(NOW - 31 * DAY, NOW - 30 * DAY, NOW)
    assert ei.value.retryable is False
    assert ei.value.provider == "yahoo"
    assert plan_windows(NOW - MAX_AGE_MS, NOW - MAX_AGE_MS + MIN, NOW)  # the edge is accepted


def _frame(tz: str = "America/New_York", rows: int = 3) -> pd.DataFrame:
    idx = pd.date_range("2025-01-10 09:30", periods=rows, freq="1min", tz=tz)
    return pd.DataFrame(
        {
            "Open": [227.5500030517578, 227.6, 227.7][:rows],
            "High": [227.9, 227.95, 228.0][:rows],
            "Low": [227.4, 227.5, 227.6][:rows],
            "Close": [227.6, 227.7, 227.8000030517578][:rows],
            "Volume": [1200, 0, 900][:rows],
            "Dividends": [0.0] * rows,
        },
        index=idx,
    )


def test_decode_history_utc_ms_minute_starts() -> None:
    bars = decode_history(_frame(), "NASDAQ:AAPL")
    start = 1_736_519_400_000  # 2025-01-10T14:30:00Z == 09:30 New York
    assert bars == [
        Bar("NASDAQ:AAPL", start, 227.55, 227.9, 227.4, 227.6, 1200, 0),
        Bar("NASDAQ:AAPL", start + MIN, 227.6, 227.95, 227.5, 227.7, 0, 0),
        Bar("NASDAQ:AAPL", start + 2 * MIN, 227.7, 228.0, 227.6, 227.8, 900, 0),
    ]


def test_decode_history_india_timezone_converted() -> None:
    idx = pd.date_range("2025-01-10 09:15", periods=1, freq="1min", tz="Asia/Kolkata")
    frame = pd.DataFrame(
        {
            "Open": [2456.75],
            "High": [2460.0],
            "Low": [2450.0],
            "Close": [2455.5],
            "Volume": [10],
        },
        index=idx,
    )
    (bar,) = decode_history(frame, "NSE:RELIANCE")
    assert bar.start == 1_736_480_700_000  # 03:45Z


def test_decode_history_nan_rows_skipped_nan_volume_zero() -> None:
    frame = _frame()
    frame.iloc[1, frame.columns.get_loc("Close")] = float("nan")
    frame.iloc[2, frame.columns.get_loc("Volume")] = float("nan")
    bars = decode_history(frame, "NASDAQ:AAPL")
    assert [b.close for b in bars] == [227.6, 227.8]
    assert bars[1].volume == 0


def test_decode_history_price_hint_and_bounds() -> None:
    frame = _frame()
    start = 1_736_519_400_000
    bars = decode_history(frame, "X:Y", price_hint=4, start_ms=start + MIN, end_ms=start + 2 * MIN)
    assert [(b.start, b.open) for b in bars] == [(start + MIN, 227.6)]
    assert decode_history(frame, "X:Y", price_hint=0)[0].close == 228.0


def test_decode_history_empty_frame_no_bars() -> None:
    assert decode_history(pd.DataFrame(), "NASDAQ:AAPL") == []
    assert decode_history(None, "NASDAQ:AAPL") == []


async def test_fetch_bars_windows_loaded_in_worker_thread() -> None:
    calls: list[tuple[str, int, int, bool, float, str]] = []
    main = threading.current_thread().name

    def loader(symbol: str, s: int, e: int, prepost: bool, timeout: float) -> tuple[Any, int]:
        calls.append((symbol, s, e, prepost, timeout, threading.current_thread().name))
        idx = pd.to_datetime([s], unit="ms", utc=True)
        frame = pd.DataFrame(
            {
                "Open": [1.5],
                "High": [1.6],
                "Low": [1.4],
                "Close": [1.55],
                "Volume": [7],
            },
            index=idx,
        )
        return frame, 2

    start = NOW - 10 * DAY
    bars = await fetch_bars(
        "NASDAQ:AAPL",
        "AAPL",
        start,
        NOW,
        prepost=True,
        request_timeout=3.0,
        loader=loader,
        now=NOW,
    )
    assert [(c[1], c[2]) for c in calls] == [
        (start, start + 8 * DAY),
        (start + 8 * DAY, NOW),
    ]
    assert all(c[0] == "AAPL" and c[3] is True and c[4] == 3.0 for c in calls)
    assert all(c[5] != main for c in calls)
    assert [b.start for b in bars] == [start, start + 8 * DAY]


async def test_fetch_bars_loader_error_propagates() -> None:
    def loader(*_: Any) -> tuple[Any, int | None]:
        raise ProviderConnectionError("yahoo", "history AAPL: boom")

    with pytest.raises(ProviderConnectionError, match="boom"):
        await fetch_bars("NASDAQ:AAPL", "AAPL", NOW - DAY, NOW, loader=loader, now=NOW)


async def test_fetch_bars_too_old_range_raises_before_loading() -> None:
    def loader(*_: Any) -> tuple[Any, int | None]:
        raise AssertionError("must not be called")

    with pytest.raises(BackfillRangeError):
        await fetch_bars("NASDAQ:AAPL", "AAPL", NOW - 40 * DAY, NOW, loader=loader, now=NOW)
