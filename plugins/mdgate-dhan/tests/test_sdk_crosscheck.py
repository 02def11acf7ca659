"""
Cross-check the decoder against Dhan's own SDK parser (dhanhq 2.3.0) on the same bytes.

The SDK stringifies prices with 2 decimals and renders LTT as ``HH:MM:SS`` in
UTC of the raw (IST-shifted) epoch, i.e. the IST clock time; our ``ts`` is
the true UTC instant, whose IST clock time must be the same string.
``MarketFeed.__new__`` gives a bare object: no event loop is created.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings, strategies as st

from mdgate._model import Tick
from mdgate_dhan.protocol import (
    DhanDecoder,
    encode_full,
    encode_oi,
    encode_prev_close,
    encode_quote,
    encode_ticker,
)

IST = timezone(timedelta(hours=5, minutes=30))
CODE = "NSE_FNO:52175"
RECV = 1_760_000_000_000


def sdk() -> Any:
    from dhanhq.marketfeed import MarketFeed

    return MarketFeed.__new__(MarketFeed)


def decoder() -> DhanDecoder:
    d = DhanDecoder()
    d.track(CODE, "NFO:OPT")
    return d


def ist_clock(tick: Tick) -> str:
    return datetime.fromtimestamp(tick.ts / 1000, IST).strftime("%H:%M:%S")


# Prices on a 0.05 grid (NSE tick size), as exchanges publish them.
prices = st.integers(min_value=1, max_value=2_000_000).map(lambda k: k * 0.05)
qty = st.integers(min_value=1, max_value=2**31 - 1)
ltq = st.integers(min_value=1, max_value=65_535)
# LTT within 2020..2035, IST-shifted as Dhan sends it.
ltts = st.integers(min_value=1_577_836_800, max_value=2_051_222_400)


@settings(max_examples=150, deadline=None)
@given(ltp=prices, ltt=ltts, size=ltq, volume=qty, o=prices, h=prices, lo=prices, atp=prices)
def test_quote_matches_sdk(
    ltp: float, ltt: int, size: int, volume: int, o: float, h: float, lo: float, atp: float
) -> None:
    packet = encode_quote(CODE, ltp=ltp, ltq=size, ltt=ltt, atp=atp, volume=volume, open=o, high=h, low=lo)
    (tick,) = decoder().feed(packet, RECV)
    ref = sdk().process_data(packet)
    assert ref["type"] == "Quote Data"
    assert ref["LTP"] == f"{tick.price:.2f}"
    assert ref["LTQ"] == tick.size
    assert ref["volume"] == tick.volume
    assert (ref["open"], ref["high"], ref["low"]) == (
        f"{tick.open:.2f}",
        f"{tick.high:.2f}",
        f"{tick.low:.2f}",
    )
    assert ref["LTT"] == ist_clock(tick)


@settings(max_examples=150, deadline=None)
@given(
    ltp=prices,
    ltt=ltts,
    size=ltq,
    volume=qty,
    oi=qty,
    bid=prices,
    ask=prices,
    bq=qty,
    aq=qty,
)
def test_full_matches_sdk(
    ltp: float,
    ltt: int,
    size: int,
    volume: int,
    oi: int,
    bid: float,
    ask: float,
    bq: int,
    aq: int,
) -> None:
    packet = encode_full(
        CODE,
        ltp=ltp,
        ltq=size,
        ltt=ltt,
        volume=volume,
        oi=oi,
        open=ltp,
        high=ltp,
        low=ltp,
        depth=[(bq, aq, 1, 2, bid, ask)],
    )
    (tick,) = decoder().feed(packet, RECV)
    ref = sdk().process_data(packet)
    assert ref["type"] == "Full Data"
    assert ref["LTP"] == f"{tick.price:.2f}"
    assert (ref["LTQ"], ref["volume"], ref["OI"]) == (tick.size, tick.volume, tick.oi)
    assert ref["LTT"] == ist_clock(tick)
    top = ref["depth"][0]
    assert top["bid_price"] == f"{tick.bid:.2f}"
    assert top["ask_price"] == f"{tick.ask:.2f}"
    assert (top["bid_quantity"], top["ask_quantity"]) == (tick.bid_size, tick.ask_size)
    assert ref["depth"][1]["bid_price"] == "-0.01"  # the SDK shows empty levels; we drop them


@settings(max_examples=100, deadline=None)
@given(ltp=prices, ltt=ltts, close=prices, oi=qty)
def test_ticker_prev_close_and_oi_match_sdk(ltp: float, ltt: int, close: float, oi: int) -> None:
    d = decoder()
    prev = encode_prev_close(CODE, close, 7)
    oi_packet = encode_oi(CODE, oi)
    ticker = encode_ticker(CODE, ltp, ltt)
    assert d.feed(prev + oi_packet, RECV) == []
    (tick,) = d.feed(ticker, RECV)
    ref_prev, ref_oi, ref_tick = (sdk().process_data(p) for p in (prev, oi_packet, ticker))
    assert ref_prev["prev_close"] == f"{tick.prev_close:.2f}"
    assert ref_oi["OI"] == tick.oi
    assert ref_tick["LTP"] == f"{tick.price:.2f}"
    assert ref_tick["LTT"] == ist_clock(tick)


def test_sdk_reads_only_first_packet_of_stacked_frame_we_read_all() -> None:
    frame = encode_ticker(CODE, 10.0, 1_760_019_800) + encode_ticker(CODE, 11.0, 1_760_019_801)
    ref = sdk().process_data(frame)
    ticks = decoder().feed(frame, RECV)
    assert ref["LTP"] == "10.00"
    assert [t.price for t in ticks] == [10.0, 11.0]
