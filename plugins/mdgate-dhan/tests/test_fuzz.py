"""Hypothesis fuzzing: any bytes give ticks or a typed error, never a crash."""

from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st

from mdgate._errors import DecodeError, ProviderError
from mdgate._model import Tick, encode_ticks
from mdgate_dhan.protocol import PACKET_SIZES, DhanDecoder

CODES = ["NSE_EQ:2885", "NSE_FNO:52175", "NSE_CURRENCY:10093", "IDX_I:13"]


def new_decoder() -> DhanDecoder:
    d = DhanDecoder()
    for i, code in enumerate(CODES):
        d.track(code, f"NSE:I{i}")
    return d


def check(frame: bytes) -> list[Tick]:
    error: ProviderError | None = None
    try:
        ticks = new_decoder().feed(frame, 1)
    except ProviderError as exc:  # DecodeError, or the typed error of a disconnect packet
        error, ticks = exc, list(exc.ticks)
    if isinstance(error, DecodeError):
        assert error.kind in {
            "short_packet",
            "bad_length",
            "unknown_code",
            "unknown_symbol",
            "bad_value",
        }
    elif error is not None:
        assert error.code is not None
    for t in ticks:
        assert isinstance(t, Tick)
        assert t.price == t.price  # never NaN
    encode_ticks(ticks)  # always serializable
    return ticks


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_feed_random_bytes_never_crashes(frame: bytes) -> None:
    check(frame)


# A packet with a valid header (code, length = layout size, tracked ids) and random body.
packet = st.builds(
    lambda code, seg_sid, body: (
        struct.pack("<BHBI", code, PACKET_SIZES.get(code, 8 + len(body)), *seg_sid)
        + body[: PACKET_SIZES.get(code, 8 + len(body)) - 8].ljust(
            PACKET_SIZES.get(code, 8 + len(body)) - 8, b"\0"
        )
    ),
    st.sampled_from([2, 4, 5, 6, 7, 8, 0, 1, 3, 9]),
    st.sampled_from([(1, 2885), (2, 52175), (3, 10093), (0, 13), (4, 1)]),
    st.binary(min_size=0, max_size=160),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(packet, min_size=1, max_size=8), st.integers(min_value=0, max_value=40))
def test_feed_stacked_valid_headers_never_crashes(packets: list[bytes], cut: int) -> None:
    frame = b"".join(packets)
    ticks = check(frame)
    trade_packets = sum(1 for p in packets if p[0] in (2, 4, 8))
    assert len(ticks) <= trade_packets
    check(frame[: max(0, len(frame) - cut)])
