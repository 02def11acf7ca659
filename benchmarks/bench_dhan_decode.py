"""
Dhan feed decoding: mdgate_dhan's DhanDecoder.feed vs dhanhq's own parser.

Both parse the same binary packets (one packet per frame, since dhanhq
parses only the first packet of a frame): a mix of Quote, Full and Ticker
packets over 50 NSE instruments with moving prices (day high/low fixed).
DhanDecoder produces normalized, rounded Tick objects with merged day
statistics; dhanhq
(``MarketFeed.process_data``, 2.3.0) produces dicts of 2-decimal strings.
A last row shows DhanDecoder on stacked frames (10 packets per frame).

Run: ``.venv/bin/python benchmarks/bench_dhan_decode.py``; prints a markdown
table (best of several repeats, microseconds per packet).
"""

from __future__ import annotations

import platform
import random
import sys
import time
from collections.abc import Callable, Sequence

from mdgate_dhan.protocol import DhanDecoder, encode_full, encode_quote, encode_ticker

N_INSTRUMENTS = 50
N_PACKETS = 6_000
REPEATS = 15
LTT = 1_767_606_599


def make_packets(kind: str, rng: random.Random) -> list[bytes]:
    packets = []
    for i in range(N_PACKETS):
        sid = 1000 + i % N_INSTRUMENTS
        code = f"NSE_EQ:{sid}"
        base = 100 + sid / 10
        price = round(base + rng.randint(-200, 200) * 0.05, 2)
        # Day high/low move rarely in a real session: fixed per instrument here.
        high, low = round(base + 10.5, 2), round(base - 10.5, 2)
        k = kind if kind != "mix" else ("quote", "full", "ticker")[i % 3]
        if k == "ticker":
            packets.append(encode_ticker(code, price, LTT + i // 100))
        elif k == "quote":
            packets.append(
                encode_quote(
                    code,
                    ltp=price,
                    ltq=rng.randint(1, 500),
                    ltt=LTT + i // 100,
                    atp=price,
                    volume=10_000 + i,
                    open=100.0,
                    high=high,
                    low=low,
                )
            )
        else:
            packets.append(
                encode_full(
                    code,
                    ltp=price,
                    ltq=rng.randint(1, 500),
                    ltt=LTT + i // 100,
                    volume=10_000 + i,
                    open=100.0,
                    high=high,
                    low=low,
                    depth=[(rng.randint(1, 900), rng.randint(1, 900), 3, 4, price - 0.05, price + 0.05)] * 5,
                )
            )
    return packets


def _once(fn: Callable[[bytes], object], frames: Sequence[bytes]) -> float:
    start = time.perf_counter()
    for frame in frames:
        fn(frame)
    return time.perf_counter() - start


def best_us(fns: Sequence[Callable[[bytes], object]], frames: Sequence[bytes], packets: int) -> list[float]:
    """Best time per packet of each function, runs interleaved so both see the same load."""
    best = [float("inf")] * len(fns)
    for _ in range(REPEATS):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _once(fn, frames))
    return [t / packets * 1e6 for t in best]


def main() -> int:
    from dhanhq.marketfeed import MarketFeed  # the SDK's parser, without its event loop

    sdk = MarketFeed.__new__(MarketFeed)
    decoder = DhanDecoder()
    for i in range(N_INSTRUMENTS):
        decoder.track(f"NSE_EQ:{1000 + i}", f"NSE:S{i}")

    def ours(frame: bytes) -> object:
        return decoder.feed(frame, 0)

    rng = random.Random(7)
    rows: list[tuple[str, float, float | None]] = []
    for kind in ("mix", "quote", "full", "ticker"):
        packets = make_packets(kind, rng)
        a, b = best_us([ours, sdk.process_data], packets, len(packets))
        rows.append((f"{kind} (1 packet/frame)", a, b))
    packets = make_packets("mix", rng)
    stacked = [b"".join(packets[i : i + 10]) for i in range(0, len(packets), 10)]
    rows.append(("mix (10 packets/frame)", best_us([ours], stacked, len(packets))[0], None))

    print(
        f"Python {platform.python_version()}, {platform.machine()}, {N_PACKETS} packets x best of {REPEATS}\n"
    )
    print("| packets | DhanDecoder.feed µs/packet | dhanhq process_data µs/packet | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, ours_us, sdk_us in rows:
        if sdk_us is None:
            print(f"| {name} | {ours_us:.2f} | n/a (parses 1st packet only) | |")
        else:
            print(f"| {name} | {ours_us:.2f} | {sdk_us:.2f} | {sdk_us / ours_us:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
