#!/usr/bin/env python3
"""
Generate the demo recording bundled with mdgate (``mdgate demo`` replays it).

The recording is *synthetic*, not captured: twenty instruments on a seeded
random walk, written in the providers' real wire formats with the frame
builders of the plugins' fake servers, so that ``mdgate demo`` pushes them
through the real decoders and the whole pipeline:

* Yahoo Finance (ten US stocks, NASDAQ/NYSE): JSON text frames
  ``{"type": "pricing", "message": "<base64 PricingData>"}``
  (:func:`mdgate_yahoo.testing.encode_pricing`), codes = Yahoo symbols (``AAPL``);
* Dhan (ten NSE stocks): binary little-endian v2 packets, a Prev close
  packet per instrument after the subscribe, then Quote packets, sometimes
  several stacked in one frame as Dhan does (:mod:`mdgate_dhan.protocol`);
  codes = ``NSE_EQ:<security id>`` from Dhan's instrument master. Six of the
  ten are not in the plugin's small built-in table; ``mdgate demo`` supplies
  their codes as ``[instruments]`` (:data:`mdgate._demo.INSTRUMENT_CODES`).

The default start, 2025-06-02 09:50 UTC, is 15:20 in Mumbai (the last
minutes of NSE's session) and 05:50 in New York (US pre-market), so both
markets move at once. Same arguments, same bytes (seeded RNG, fixed times,
deterministic compression)::

    .venv/bin/python scripts/make_demo_recording.py            # rewrites src/mdgate/_demo/recording
    .venv/bin/python scripts/make_demo_recording.py --out /tmp/rec --seconds 60
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from mdgate._demo import DHAN_CODES, YAHOO_CODES
from mdgate._recording.format import Record, RecordingWriter
from mdgate_dhan.protocol import encode_prev_close, encode_quote, encode_subscribe as dhan_subscribe
from mdgate_yahoo.protocol import encode_subscribe as yahoo_subscribe
from mdgate_yahoo.testing import encode_pricing

DEFAULT_OUT: Final = Path(__file__).resolve().parent.parent / "src" / "mdgate" / "_demo" / "recording"
DEFAULT_START: Final = "2025-06-02T09:50:00Z"
DEFAULT_SECONDS: Final = 180.0
DEFAULT_SEED: Final = 14
IST_OFFSET: Final = 19_800  # Dhan's LTT: IST-shifted epoch seconds
YAHOO_URL: Final = "wss://streamer.finance.yahoo.com/?version=2"
DHAN_URL: Final = "wss://api-feed.dhan.co?version=2&token=***&clientId=***&authType=2"

#: instrument -> (previous close, day volume so far, Yahoo exchange code, short name)
US: Final[dict[str, tuple[float, int, str, str]]] = {
    "NASDAQ:AAPL": (201.70, 412_000, "NMS", "Apple Inc."),
    "NASDAQ:MSFT": (460.36, 188_000, "NMS", "Microsoft Corporation"),
    "NASDAQ:NVDA": (135.13, 1_650_000, "NMS", "NVIDIA Corporation"),
    "NASDAQ:AMZN": (205.01, 356_000, "NMS", "Amazon.com, Inc."),
    "NASDAQ:GOOGL": (171.74, 241_000, "NMS", "Alphabet Inc."),
    "NASDAQ:META": (647.49, 97_000, "NMS", "Meta Platforms, Inc."),
    "NASDAQ:TSLA": (346.46, 1_120_000, "NMS", "Tesla, Inc."),
    "NYSE:JPM": (264.00, 38_000, "NYQ", "JPMorgan Chase & Co."),
    "NYSE:V": (365.15, 21_000, "NYQ", "Visa Inc."),
    "NYSE:XOM": (102.29, 64_000, "NYQ", "Exxon Mobil Corporation"),
}
#: instrument -> (previous close, day volume so far)
NSE: Final[dict[str, tuple[float, int]]] = {
    "NSE:RELIANCE": (1426.80, 8_640_000),
    "NSE:TCS": (3438.50, 1_910_000),
    "NSE:HDFCBANK": (1939.90, 7_220_000),
    "NSE:INFY": (1562.40, 4_870_000),
    "NSE:ICICIBANK": (1447.30, 9_150_000),
    "NSE:SBIN": (812.25, 10_400_000),
    "NSE:BHARTIARTL": (1862.60, 3_050_000),
    "NSE:ITC": (415.35, 12_300_000),
    "NSE:LT": (3651.70, 1_280_000),
    "NSE:KOTAKBANK": (2083.10, 2_460_000),
}


@dataclass
class Walk:
    """One instrument's random walk (prices in ticks of ``tick``)."""

    instrument: str
    code: str
    tick: float
    units: int  # price / tick
    prev_close: float
    volume: int
    rate: float  # frames per second
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    turnover: float = 0.0

    def __post_init__(self) -> None:
        self.open = self.high = self.low = self.price
        self.turnover = self.price * self.volume

    @property
    def price(self) -> float:
        """The current price."""
        return round(self.units * self.tick, 2)

    def step(self, rng: random.Random, size: int) -> None:
        """Move by a few ticks (mean-reverting to the day's open a little) and trade ``size``."""
        drift = -1 if self.price > self.open * 1.004 else 1 if self.price < self.open * 0.996 else 0
        move = rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2)) + (drift if rng.random() < 0.3 else 0)
        self.units = max(1, self.units + move)
        self.high = max(self.high, self.price)
        self.low = min(self.low, self.price)
        self.volume += size
        self.turnover += self.price * size


def _start_ms(text: str) -> int:
    """``2025-06-02T09:50:00Z`` (or epoch milliseconds) -> epoch milliseconds."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _walks(rng: random.Random) -> tuple[list[Walk], list[Walk]]:
    us = []
    for instrument, (close, volume, _exch, _name) in US.items():
        start = close * (1 + rng.uniform(-0.012, 0.012))  # pre-market gap
        us.append(Walk(instrument, YAHOO_CODES[instrument], 0.01, round(start / 0.01), close, volume,
                       rate=rng.uniform(1.5, 3.5)))
    nse = []
    for instrument, (close, volume) in NSE.items():
        start = close * (1 + rng.uniform(-0.015, 0.015))  # the day's move so far
        nse.append(Walk(instrument, DHAN_CODES[instrument], 0.05, round(start / 0.05), close, volume,
                        rate=rng.uniform(2.0, 4.5)))
    return us, nse


def _yahoo_frame(w: Walk, rng: random.Random, t_ms: int) -> str:
    size = rng.choice((1, 5, 10, 20, 50, 100, 100, 100, 200, 300, 500))
    w.step(rng, size)
    _, _, exchange, name = US[w.instrument]
    change = w.price - w.prev_close
    # pre-market: market_hours 0 (PRE_MARKET) is not on the wire (proto3 zero)
    return encode_pricing(
        id=w.code, price=w.price, time=t_ms // 1000 * 1000, currency="USD", exchange=exchange,
        quote_type=8, change_percent=change / w.prev_close * 100, day_volume=w.volume,
        day_high=w.high, day_low=w.low, change=change, short_name=name, open_price=w.open,
        previous_close=w.prev_close, last_size=size, price_hint=2,
    )


def _dhan_packet(w: Walk, rng: random.Random, t_ms: int) -> bytes:
    size = rng.choice((1, 1, 2, 5, 10, 12, 25, 40, 50, 100, 150, 300))
    w.step(rng, size)
    return encode_quote(
        w.code, ltp=w.price, ltq=size, ltt=t_ms // 1000 + IST_OFFSET,
        atp=round(w.turnover / w.volume, 2), volume=w.volume,
        total_sell_qty=rng.randint(200_000, 900_000), total_buy_qty=rng.randint(200_000, 900_000),
        open=w.open, high=w.high, low=w.low,
    )


def _connection(provider: str, url: str, t0: int, walks: list[Walk], subscribe: list[str]) -> list[Record]:
    records = [Record(t0, "open", provider, 0, url)]
    records += [Record(t0, "track", provider, 0, w.code, w.instrument) for w in walks]
    records += [Record(t0 + 1, "send", provider, 0, frame) for frame in subscribe]
    return records


def generate(out: Path, start_ms: int, seconds: float, seed: int) -> int:
    """
    Write the recording to ``out`` (a new or empty directory).

    Returns:
        The number of frame records written.
    """
    rng = random.Random(seed)
    us, nse = _walks(rng)
    writer = RecordingWriter(out)
    records = _connection("yahoo", YAHOO_URL, start_ms, us, [yahoo_subscribe([w.code for w in us])])
    records += _connection("dhan", DHAN_URL, start_ms, nse, dhan_subscribe([w.code for w in nse], "quote"))
    # Dhan answers a subscribe with a Prev close packet per instrument, stacked in one frame.
    records.append(Record(start_ms + 40, "frame", "dhan", 0,
                          b"".join(encode_prev_close(w.code, w.prev_close) for w in nse)))
    end = start_ms + int(seconds * 1000)
    # (next frame time, index): one event queue over all instruments, in time order
    walks = us + nse
    queue = [(start_ms + 60 + int(rng.expovariate(w.rate) * 1000), i) for i, w in enumerate(walks)]
    heapq.heapify(queue)
    frames = 1
    last_flush = start_ms
    while queue:
        t, i = heapq.heappop(queue)
        if t >= end:
            continue
        w = walks[i]
        if i < len(us):
            records.append(Record(t, "frame", "yahoo", 0, _yahoo_frame(w, rng, t)))
        else:
            packets = [_dhan_packet(w, rng, t)]
            # now and then a second instrument's quote rides in the same frame
            if rng.random() < 0.15:
                packets.append(_dhan_packet(nse[rng.randrange(len(nse))], rng, t))
            records.append(Record(t, "frame", "dhan", 0, b"".join(packets)))
        frames += 1
        heapq.heappush(queue, (t + max(1, int(rng.expovariate(w.rate) * 1000)), i))
        if t - last_flush >= 5000:  # one chunk per five seconds of recording
            for record in records:
                writer.add(record)
            writer.flush()
            records, last_flush = [], t
    for record in records:
        writer.add(record)
    writer.close()
    return frames


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and (re)write the recording."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"directory (default {DEFAULT_OUT})")
    parser.add_argument("--start", default=DEFAULT_START, help="first record's time, ISO 8601 or epoch ms")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of the recording")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    if args.out.is_dir():  # the recording is regenerated whole; nothing else in the directory is touched
        for old in [args.out / "index.json", *args.out.glob("*.mdrec")]:
            old.unlink(missing_ok=True)
    frames = generate(args.out, _start_ms(args.start), args.seconds, args.seed)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{args.out}: {frames} frames, {size} bytes", file=sys.stderr)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
