"""
Regenerate the binary feed fixtures (``python make_fixtures.py``).

Written with plain ``struct`` formats restated from Dhan's docs
(docs/protocols/dhan.md#packet-types), independently of ``mdgate_dhan.protocol``, so the
decoder tests check the layout rather than the encoders against themselves.
Values: RELIANCE NSE_EQ:2885, true trade time 2025-10-09T08:53:20Z
(epoch 1760000000), which Dhan sends as LTT 1760019800 (IST-shifted).
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).parent
LTT = 1_760_019_800
NSE_EQ, NSE_FNO, NSE_CURRENCY = 1, 2, 3


def header(code: int, length: int, segment: int, sid: int) -> bytes:
    return struct.pack("<BHBI", code, length, segment, sid)


def ticker(segment: int, sid: int, ltp: float, ltt: int) -> bytes:
    return header(2, 16, segment, sid) + struct.pack("<fI", ltp, ltt)


def quote(segment: int, sid: int) -> bytes:
    return header(4, 50, segment, sid) + struct.pack(
        "<fHIfIIIffff",
        2885.05,
        25,
        LTT,
        2880.4,
        1_234_567,
        40_000,
        50_000,
        2850.0,
        0.0,
        2899.95,
        2841.1,
    )


def full(segment: int, sid: int) -> bytes:
    body = struct.pack(
        "<fHIfIIIIIIffff",
        2885.05,
        25,
        LTT,
        2880.4,
        1_234_567,
        40_000,
        50_000,
        0,
        0,
        0,
        2850.0,
        0.0,
        2899.95,
        2841.1,
    )
    levels = [
        (120, 340, 3, 5, 2885.0, 2885.1),
        (500, 60, 7, 2, 2884.95, 2885.15),
        (0, 0, 0, 0, -0.01, -0.01),
        (0, 0, 0, 0, -0.01, -0.01),
        (0, 0, 0, 0, -0.01, -0.01),
    ]
    depth = b"".join(struct.pack("<IIHHff", *lv) for lv in levels)
    return header(8, 162, segment, sid) + body + depth


def full_empty_book(segment: int, sid: int) -> bytes:
    body = struct.pack(
        "<fHIfIIIIIIffff",
        24510.5,
        75,
        LTT,
        24500.0,
        9_000,
        0,
        0,
        1_500_000,
        1_600_000,
        1_400_000,
        24400.0,
        0.0,
        24600.0,
        24350.0,
    )
    depth = struct.pack("<IIHHff", 0, 0, 0, 0, -0.01, -0.01) * 5
    return header(8, 162, segment, sid) + body + depth


def prev_close(segment: int, sid: int, close: float, oi: int) -> bytes:
    return header(6, 16, segment, sid) + struct.pack("<fI", close, oi)


def oi(segment: int, sid: int, value: int) -> bytes:
    return header(5, 12, segment, sid) + struct.pack("<I", value)


def disconnect(reason: int) -> bytes:
    return header(50, 10, 0, 0) + struct.pack("<H", reason)


FIXTURES = {
    "ws_ticker.bin": ticker(NSE_EQ, 2885, 2885.05, LTT),
    "ws_ticker_currency.bin": ticker(NSE_CURRENCY, 10093, 83.1234, LTT),
    "ws_quote.bin": quote(NSE_EQ, 2885),
    "ws_full.bin": full(NSE_EQ, 2885),
    "ws_full_fno_empty_book.bin": full_empty_book(NSE_FNO, 52175),
    "ws_prev_close.bin": prev_close(NSE_EQ, 2885, 2870.4, 0),
    "ws_oi.bin": oi(NSE_FNO, 52175, 1_525_000),
    "ws_market_status.bin": header(7, 8, 0, 0),
    "ws_disconnect_807.bin": disconnect(807),
    "ws_stacked.bin": prev_close(NSE_EQ, 2885, 2870.4, 0)
    + quote(NSE_EQ, 2885)
    + ticker(NSE_EQ, 1333, 1701.35, LTT + 1)
    + full(NSE_EQ, 2885),
}

if __name__ == "__main__":
    for name, data in FIXTURES.items():
        (HERE / name).write_bytes(data)
        print(name, len(data))
