"""Hypothesis: whatever arrives, the decoder returns ticks or raises DecodeError."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from mdgate._errors import DecodeError
from mdgate._model import Tick, encode_ticks
from mdgate_yahoo.protocol import YahooDecoder
from mdgate_yahoo.testing import encode_envelope, encode_pricing

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SYMBOLS = ["AAPL", "RELIANCE.NS", "BTC-USD", ""]
KINDS = {
    "bad_json",
    "bad_envelope",
    "bad_base64",
    "bad_protobuf",
    "bad_price",
    "unknown_symbol",
}


def _decoder() -> YahooDecoder:
    dec = YahooDecoder()
    dec.track("AAPL", "NASDAQ:AAPL")
    dec.track("RELIANCE.NS", "NSE:RELIANCE")
    dec.track("BTC-USD", "CRYPTO:BTC-USD")
    return dec


def _check(dec: YahooDecoder, frame: str | bytes) -> list[Tick]:
    kind: str | None = None
    try:
        ticks = dec.feed(frame, 1_700_000_000_000)
    except DecodeError as exc:
        kind = exc.kind
    if kind is not None:
        assert kind in KINDS
        return []
    assert isinstance(ticks, list)
    for t in ticks:
        assert isinstance(t, Tick)
        assert t.provider == "YF"
        encode_ticks([t])  # every tick must also be encodable for clients
    return ticks


@FUZZ
@given(st.binary(max_size=512))
def test_feed_random_bytes_ticks_or_decode_error(data: bytes) -> None:
    _check(_decoder(), data)


@FUZZ
@given(st.text(max_size=512))
def test_feed_random_text_ticks_or_decode_error(text: str) -> None:
    _check(_decoder(), text)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["type", "message", "x"]),
        st.sampled_from(["pricing", "", "QQ==", "=="]) | _json,
        max_size=3,
    )
)
def test_feed_random_json_envelope_ticks_or_decode_error(env: dict[str, Any]) -> None:
    _check(_decoder(), json.dumps(env))


@FUZZ
@given(st.binary(max_size=256))
def test_feed_random_base64_payload_ticks_or_decode_error(payload: bytes) -> None:
    _check(_decoder(), encode_envelope(payload))


@FUZZ
@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
        max_size=200,
    )
)
def test_feed_random_base64_text_ticks_or_decode_error(b64: str) -> None:
    _check(_decoder(), json.dumps({"type": "pricing", "message": b64}))


_f32 = st.floats(width=32)
_i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@FUZZ
@given(
    st.fixed_dictionaries(
        {"id": st.sampled_from(SYMBOLS)},
        optional={
            "price": _f32,
            "time": _i64,
            "day_volume": _i64,
            "last_size": _i64,
            "bid": _f32,
            "ask": _f32,
            "bid_size": _i64,
            "ask_size": _i64,
            "open_price": _f32,
            "day_high": _f32,
            "day_low": _f32,
            "previous_close": _f32,
            "price_hint": _i64,
            "open_interest": _i64,
            "quote_type": st.integers(-(2**31), 2**31 - 1),
            "exchange": st.text(max_size=5),
        },
    ),
    st.integers(min_value=1, max_value=3),
)
def test_feed_random_valid_messages_ticks_or_decode_error(fields: dict[str, Any], n: int) -> None:
    dec = _decoder()
    for _ in range(n):  # repeated messages exercise the carried state
        ticks = _check(dec, encode_pricing(**fields))
        price = fields.get("price", 0.0)
        if ticks:
            assert ticks[0].price == ticks[0].price  # never NaN
        elif fields["id"] and price and price == price and abs(price) != float("inf"):
            raise AssertionError("a finite price for a tracked symbol must give a tick")


@FUZZ
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=80))
def test_feed_truncated_or_corrupted_frames_ticks_or_decode_error(junk: bytes, cut: int) -> None:
    frame = encode_pricing(id="AAPL", price=227.55, time=1, day_volume=5)
    payload = base64.b64decode(json.loads(frame)["message"])
    _check(_decoder(), encode_envelope(payload[:cut]))
    _check(_decoder(), encode_envelope(payload[:cut] + junk + payload[cut:]))
