"""DhanDecoder: OI from a Full packet is kept and merged into later ticks."""

from __future__ import annotations

from mdgate_dhan.protocol import DhanDecoder, encode_full, encode_ticker

CODE = "NSE_FNO:35001"
LTT = 1_767_606_599


def test_full_packet_oi_is_carried_into_later_ticker_ticks() -> None:
    decoder = DhanDecoder()
    decoder.track(CODE, "NSE:NIFTYFUT")
    full = encode_full(CODE, ltp=250.5, ltt=LTT, oi=123_456)
    assert decoder.feed(full, 1)[0].oi == 123_456  # one Full packet: its own fast path
    assert decoder.feed(encode_ticker(CODE, 251.0, LTT), 2)[0].oi == 123_456
    stacked = encode_full(CODE, ltp=252.0, ltt=LTT, oi=654_321) + encode_ticker(CODE, 253.0, LTT)
    assert [t.oi for t in decoder.feed(stacked, 3)] == [654_321, 654_321]  # the walk
