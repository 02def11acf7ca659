"""
Benchmark: decoding Yahoo streamer frames, mdgate-yahoo vs yfinance.

Both sides get the same N realistic frames (``{"type":"pricing","message":
"<base64 PricingData>"}``, fields as a live equity/crypto message carries
them: symbol, price, time, currency, exchange, quote type, market hours,
change, day volume/high/low, open, previous close, last size, price hint):

* ``mdgate-yahoo``: ``YahooDecoder.feed(frame, recv_ts)``, i.e. envelope
  parsing (msgspec), strict base64, ``ParseFromString`` into a reused
  message, rounding, day-statistics state and a normalized ``Tick``;
* ``yfinance``: what yfinance 1.7.0's ``AsyncWebSocket.listen()`` does per
  frame: ``json.loads`` then ``BaseWebSocket._decode_message`` (base64,
  ``ParseFromString``, ``MessageToDict``). Its output is a dict of strings
  and floats, not yet a tick, so the comparison favours yfinance.

Each side decodes all frames ``--repeat`` times; the best pass is reported.
Run::

    .venv/bin/python benchmarks/bench_yahoo_decode.py [--frames N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import __version__ as protobuf_version
from google.protobuf.internal import api_implementation

from mdgate_yahoo.protocol import YahooDecoder
from mdgate_yahoo.testing import encode_pricing

SYMBOLS = {
    "AAPL": ("NASDAQ:AAPL", 227.55, "USD", "NMS", 8),
    "MSFT": ("NASDAQ:MSFT", 415.5, "USD", "NMS", 8),
    "NVDA": ("NASDAQ:NVDA", 138.25, "USD", "NMS", 8),
    "IBM": ("NYSE:IBM", 218.42, "USD", "NYQ", 8),
    "BRK-B": ("NYSE:BRK.B", 476.13, "USD", "NYQ", 8),
    "RELIANCE.NS": ("NSE:RELIANCE", 2456.75, "INR", "NSI", 8),
    "TCS.BO": ("BSE:TCS", 3987.45, "INR", "BSE", 8),
    "BTC-USD": ("CRYPTO:BTC-USD", 94745.08, "USD", "CCC", 41),
}


def make_frames(n: int, seed: int = 7) -> list[str]:
    """Build ``n`` frames cycling over the symbols with moving prices."""
    rng = random.Random(seed)
    frames = []
    t0 = 1_736_509_140_000
    volume = dict.fromkeys(SYMBOLS, 1_000_000)
    names = list(SYMBOLS)
    for i in range(n):
        sym = names[i % len(names)]
        _, base, currency, exchange, quote_type = SYMBOLS[sym]
        price = round(base * (1 + rng.uniform(-0.01, 0.01)), 2)
        size = rng.randint(1, 500)
        volume[sym] += size
        frames.append(
            encode_pricing(
                id=sym,
                price=price,
                time=t0 + i * 1000,
                currency=currency,
                exchange=exchange,
                quote_type=quote_type,
                market_hours=1,
                change_percent=rng.uniform(-2, 2),
                day_volume=volume[sym],
                day_high=round(base * 1.012, 2),
                day_low=round(base * 0.987, 2),
                change=round(price - base * 0.995, 2),
                open_price=round(base * 0.999, 2),
                previous_close=round(base * 0.995, 2),
                last_size=size,
                price_hint=2,
            )
        )
    return frames


def best_pass(fn: Callable[[], Any], repeat: int) -> float:
    """Run ``fn`` ``repeat`` times; return the best wall time in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frames = make_frames(args.frames)

    dec = YahooDecoder()
    for code, (instrument, *_) in SYMBOLS.items():
        dec.track(code, instrument)
    feed = dec.feed

    def ours() -> None:
        for f in frames:
            feed(f, 1)

    t = time.perf_counter()
    from yfinance.live import BaseWebSocket  # imported after ours: ~1 s, pandas & co

    yf_import = time.perf_counter() - t
    yf_ws = BaseWebSocket("ws://127.0.0.1:9/unused", verbose=False)
    decode_message = yf_ws._decode_message
    loads = json.loads

    def theirs() -> None:
        for f in frames:
            decode_message(loads(f).get("message", ""))

    # Same frames, same answers: symbol, price, time and volume agree.
    for f in frames[:50]:
        (tick,) = dec.feed(f, 1)
        d = decode_message(loads(f)["message"])
        assert tick.instrument == SYMBOLS[d["id"]][0]
        assert tick.price == round(d["price"], 2)
        assert tick.ts == int(d["time"])
        assert tick.volume == int(d["day_volume"])

    ours()
    theirs()  # warm-up
    ours_s = best_pass(ours, args.repeat)
    theirs_s = best_pass(theirs, args.repeat)
    n = len(frames)
    ours_us = ours_s / n * 1e6
    theirs_us = theirs_s / n * 1e6

    print(f"Decoding {n} Yahoo streamer frames, best of {args.repeat} passes.\n")
    print("| decoder | µs/frame | frames/s | output |")
    print("| --- | ---: | ---: | --- |")
    print(
        f"| mdgate-yahoo `YahooDecoder.feed` | {ours_us:.2f} | {n / ours_s:,.0f} "
        "| normalized `Tick` (rounded, day stats) |"
    )
    print(
        f"| yfinance 1.7.0 `json.loads` + `_decode_message` | {theirs_us:.2f} "
        f"| {n / theirs_s:,.0f} | `MessageToDict` dict |"
    )
    print(f"\nmdgate-yahoo is **{theirs_us / ours_us:.1f}x** faster per frame.")
    print(
        f"\nMachine: {platform.python_implementation()} {platform.python_version()}, "
        f"protobuf {protobuf_version} ({api_implementation.Type()} backend), "
        f"{os.cpu_count()} CPUs (shared); `import yfinance.live` took "
        f"{yf_import:.2f} s (not counted)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
