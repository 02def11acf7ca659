"""YahooDecoder and the frame encoders, on frames built from pricing.proto."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mdgate._errors import DecodeError
from mdgate._model import Tick
from mdgate_yahoo.pricing_pb2 import PricingData
from mdgate_yahoo.protocol import (
    STATS_MAX_GAP_MS,
    YahooDecoder,
    encode_heartbeat,
    encode_subscribe,
    encode_unsubscribe,
    round_price,
)
from mdgate_yahoo.testing import MALFORMED_FRAMES, encode_envelope, encode_pricing

T = 1736509140000
RECV = T + 250

# The published yfinance test vector (tests/test_live.py): BTC-USD PricingData.
YFINANCE_BTC_VECTOR = (
    "CgdCVEMtVVNEFYoMuUcYwLCVgIplIgNVU0QqA0NDQzApOAFFPWrEP0iAgOrxvANVx/25R12csrRHZYD8"
    "skR9/7i0R7ABgIDq8bwD2AEE4AGAgOrxvAPoAYCA6vG8A/IBA0JUQ4ECAAAAwPrjckGJAgAA2P5ZT3tC"
)


def decoder(**codes: str) -> YahooDecoder:
    dec = YahooDecoder()
    for code, instrument in codes.items():
        dec.track(code, instrument)
    return dec


def aapl() -> YahooDecoder:
    return decoder(AAPL="NASDAQ:AAPL")


def one(dec: YahooDecoder, recv_ts: int = RECV, **fields: Any) -> Tick:
    fields.setdefault("id", "AAPL")
    ticks = dec.feed(encode_pricing(**fields), recv_ts)
    assert len(ticks) == 1
    return ticks[0]


# ---------------------------------------------------------------- encoders


def test_encode_subscribe_symbols_json_object() -> None:
    frame = encode_subscribe(["AAPL", "RELIANCE.NS"])
    assert json.loads(frame) == {"subscribe": ["AAPL", "RELIANCE.NS"]}
    assert frame == '{"subscribe": ["AAPL", "RELIANCE.NS"]}'  # as yfinance sends it


def test_encode_unsubscribe_symbols_json_object() -> None:
    assert json.loads(encode_unsubscribe(("TCS.BO",))) == {"unsubscribe": ["TCS.BO"]}


def test_encode_heartbeat_whole_set_resubscribes() -> None:
    assert json.loads(encode_heartbeat(["A", "B", "C"])) == {"subscribe": ["A", "B", "C"]}


@pytest.mark.parametrize("bad", ["", None, 5])
def test_encode_subscribe_bad_symbol_raises_value_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        encode_subscribe(["AAPL", bad])


# ---------------------------------------------------------------- fixtures


@pytest.mark.parametrize(
    "name",
    [
        "ws_pricing_equity.json",
        "ws_pricing_india.json",
        "ws_pricing_crypto.json",
        "ws_pricing_zero.json",
    ],
)
def test_decoder_fixture_frames_golden_ticks(name: str, load_variants: Any) -> None:
    variants = load_variants(name)
    assert len(variants) >= 3
    for v in variants:
        # The stored frame is exactly what the schema builds from the fields.
        assert encode_pricing(**v["fields"]) == v["frame"], v["name"]
        dec = decoder(**v["track"])
        got = [t.to_dict() for t in dec.feed(v["frame"], v["recv_ts"])]
        assert got == v["ticks"], v["name"]


def test_decoder_yfinance_vector_recreated_byte_identical(load_variants: Any) -> None:
    (btc,) = [v for v in load_variants("ws_pricing_crypto.json") if "yfinance" in v["name"]]
    assert json.loads(btc["frame"])["message"] == YFINANCE_BTC_VECTOR
    tick = decoder(**{"BTC-USD": "CRYPTO:BTC-USD"}).feed(btc["frame"], RECV)[0]
    assert tick.price == 94745.08
    assert tick.ts == 1736509140000
    assert tick.volume == 59712028672
    assert tick.size is None  # last_size == day_volume: not a trade size
    assert tick.open == 92529.99


# ---------------------------------------------------------------- fields


def test_decoder_every_field_maps_to_tick() -> None:
    t = one(
        aapl(),
        price=227.55,
        time=T,
        day_volume=41_000_000,
        last_size=100,
        bid=227.54,
        bid_size=300,
        ask=227.56,
        ask_size=200,
        open_price=226.0,
        day_high=229.1,
        day_low=225.31,
        previous_close=224.85,
        open_interest=12,
        price_hint=2,
        currency="USD",
        exchange="NMS",
        quote_type=8,
        market_hours=1,
        short_name="Apple",
    )
    assert t == Tick(
        "NASDAQ:AAPL",
        227.55,
        T,
        RECV,
        "YF",
        size=100,
        volume=41_000_000,
        bid=227.54,
        ask=227.56,
        bid_size=300,
        ask_size=200,
        open=226.0,
        high=229.1,
        low=225.31,
        prev_close=224.85,
        oi=12,
    )


def test_decoder_only_required_fields_others_none() -> None:
    t = one(aapl(), price=1.5, time=T)
    assert t.to_dict() == {
        "instrument": "NASDAQ:AAPL",
        "price": 1.5,
        "ts": T,
        "recv_ts": RECV,
        "provider": "YF",
    }


def test_decoder_non_us_symbol_named_by_tracking() -> None:
    dec = decoder(**{"RELIANCE.NS": "NSE:RELIANCE", "TCS.BO": "BSE:TCS"})
    assert one(dec, id="RELIANCE.NS", price=2456.75, time=T).instrument == "NSE:RELIANCE"
    assert one(dec, id="TCS.BO", price=3987.45, time=T).instrument == "BSE:TCS"


def test_decoder_bytes_frame_decoded_like_text() -> None:
    frame = encode_pricing(id="AAPL", price=227.55, time=T).encode()
    assert aapl().feed(frame, RECV)[0].price == 227.55


# ---------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("price", "hint", "expected"),
    [
        (2456.75, 2, 2456.75),  # exact in float32
        (94745.08, 2, 94745.08),  # float32 94745.078125
        (227.55, 2, 227.55),  # float32 227.5500030517578
        (1234.56, 0, 1234.56),  # no hint: 2 decimals
        (0.12345, 0, 0.1235),  # no hint, below 1: 4 decimals (float32 0.12345000356)
        (0.00001234, 8, 0.00001234),
        (19.9, 3, 19.9),
        (99.995, 2, 100.0),
    ],
)
def test_decoder_price_float32_rounded_to_precision(price: float, hint: int, expected: float) -> None:
    t = one(aapl(), price=price, time=T, price_hint=hint)
    assert t.price == expected
    assert repr(t.price) == repr(expected)


def test_decoder_rounds_half_up_like_every_provider() -> None:
    # 1.125 and 2.5 are exact in float32: a tie, which half-even round() would send down.
    t = one(aapl(), price=1.125, time=T, price_hint=2, bid=2.5, ask=-1.125, day_high=1.375)
    assert (t.price, t.bid, t.high) == (1.13, 2.5, 1.38)
    assert t.ask == -1.12  # half up is toward +infinity
    assert round_price(1.125, 2) == 1.13 and round_price(2.5, 0) == 3.0


def test_decoder_price_hint_remembered_across_messages() -> None:
    dec = aapl()
    one(dec, price=1.123456, time=T, price_hint=6)
    assert one(dec, price=1.234567, time=T + 1000).price == 1.234567


def test_decoder_day_statistics_rounded_too() -> None:
    t = one(
        aapl(),
        price=227.55,
        time=T,
        day_high=229.1,
        day_low=225.31,
        open_price=226.07,
        previous_close=224.85,
    )
    assert (t.high, t.low, t.open, t.prev_close) == (229.1, 225.31, 226.07, 224.85)


def test_decoder_late_price_hint_rerounds_cached_statistics() -> None:
    dec = aapl()
    one(dec, price=1.5, time=T, day_high=1.23456)  # no hint yet: 2 decimals
    t = one(dec, price=1.5, time=T + 1, day_high=1.23456, price_hint=4)
    assert t.high == 1.2346


# ---------------------------------------------------------------- state


def test_decoder_day_statistics_carried_to_later_ticks() -> None:
    dec = aapl()
    one(
        dec,
        price=227.55,
        time=T,
        day_high=229.1,
        day_low=225.31,
        open_price=226.0,
        previous_close=224.85,
        day_volume=1000,
    )
    t = one(dec, price=227.6, time=T + 1000)
    assert (t.open, t.high, t.low, t.prev_close, t.volume) == (
        226.0,
        229.1,
        225.31,
        224.85,
        1000,
    )


def test_decoder_statistics_updated_by_newer_message() -> None:
    dec = aapl()
    one(dec, price=227.55, time=T, day_high=229.1, day_volume=1000)
    t = one(dec, price=230.0, time=T + 1000, day_high=230.0, day_volume=1500)
    assert (t.high, t.volume) == (230.0, 1500)


def test_decoder_long_gap_forgets_statistics() -> None:
    dec = aapl()
    one(dec, price=227.55, time=T, day_high=229.1, day_volume=1000)
    t = one(dec, price=228.0, time=T + STATS_MAX_GAP_MS + 1)
    assert (t.high, t.volume) == (None, None)


def test_decoder_older_message_does_not_reset_gap_clock() -> None:
    dec = aapl()
    one(dec, price=227.55, time=T, day_high=229.1)
    one(dec, price=227.0, time=T - STATS_MAX_GAP_MS - 1)  # stale snapshot
    assert one(dec, price=228.0, time=T + 1000).high == 229.1


def test_decoder_message_without_price_updates_state_only() -> None:
    dec = aapl()
    assert dec.feed(encode_pricing(id="AAPL", time=T, day_high=229.1, day_volume=7), RECV) == []
    t = one(dec, price=228.0, time=T + 1)
    assert (t.high, t.volume) == (229.1, 7)


def test_decoder_symbols_keep_separate_state() -> None:
    dec = decoder(AAPL="NASDAQ:AAPL", IBM="NYSE:IBM")
    one(dec, id="AAPL", price=227.55, time=T, day_high=229.1)
    assert one(dec, id="IBM", price=218.0, time=T).high is None


def test_decoder_retrack_other_instrument_resets_state() -> None:
    dec = aapl()
    one(dec, price=227.55, time=T, day_high=229.1)
    dec.track("AAPL", "NASDAQ:AAPL")  # same mapping: state kept
    assert one(dec, price=227.6, time=T + 1).high == 229.1
    dec.track("AAPL", "NYSE:AAPL")
    t = one(dec, price=227.6, time=T + 2)
    assert (t.instrument, t.high) == ("NYSE:AAPL", None)


# ---------------------------------------------------------------- zero values


def test_decoder_time_absent_uses_recv_ts() -> None:
    assert one(aapl(), price=227.55).ts == RECV


def test_decoder_zero_volume_and_sizes_absent() -> None:
    t = one(aapl(), price=227.55, time=T, day_volume=0, last_size=0, bid=0.0, bid_size=0)
    assert (t.volume, t.size, t.bid, t.bid_size) == (None, None, None, None)


def test_decoder_market_hours_zero_not_on_wire() -> None:
    # proto3 implicit presence: PRE_MARKET (0) is serialized as nothing at all.
    assert (
        PricingData(id="AAPL", market_hours=0).SerializeToString()
        == PricingData(id="AAPL").SerializeToString()
    )


# ---------------------------------------------------------------- size


def test_decoder_last_size_is_trade_size_for_equity() -> None:
    assert one(aapl(), price=1.5, time=T, last_size=100, day_volume=5000).size == 100


def test_decoder_last_size_equal_day_volume_dropped() -> None:
    assert one(aapl(), price=1.5, time=T, last_size=5000, day_volume=5000).size is None


def test_decoder_crypto_last_size_dropped() -> None:
    dec = decoder(**{"BTC-USD": "CRYPTO:BTC-USD"})
    t = one(dec, id="BTC-USD", price=95000.0, time=T, last_size=3, quote_type=41)
    assert t.size is None


# ---------------------------------------------------------------- errors


def test_decoder_untracked_symbol_unknown_symbol() -> None:
    with pytest.raises(DecodeError) as ei:
        aapl().feed(encode_pricing(id="MSFT", price=1.5, time=T), RECV)
    assert ei.value.kind == "unknown_symbol"
    assert ei.value.provider == "yahoo"
    assert "MSFT" in str(ei.value)


def test_decoder_untrack_then_frame_unknown_symbol() -> None:
    dec = aapl()
    dec.untrack("AAPL")
    dec.untrack("AAPL")  # idempotent
    with pytest.raises(DecodeError, match="unknown_symbol"):
        dec.feed(encode_pricing(id="AAPL", price=1.5, time=T), RECV)


def test_decoder_empty_message_unknown_symbol() -> None:
    with pytest.raises(DecodeError) as ei:
        aapl().feed('{"type": "pricing", "message": ""}', RECV)
    assert ei.value.kind == "unknown_symbol"


@pytest.mark.parametrize("kind", sorted(MALFORMED_FRAMES))
def test_decoder_malformed_frames_typed_kind(kind: str) -> None:
    with pytest.raises(DecodeError) as ei:
        aapl().feed(MALFORMED_FRAMES[kind], RECV)
    assert ei.value.kind == kind
    assert ei.value.ticks == ()
    assert len(ei.value.excerpt) <= 64


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        ("", "bad_json"),
        ("[]", "bad_envelope"),
        ('{"message": "QQ=="}', "bad_envelope"),
        ('{"type": "heartbeat", "message": "QQ=="}', "bad_envelope"),
        ('{"type": "pricing", "message": 5}', "bad_envelope"),
        ('{"type": "pricing", "message": null}', "bad_envelope"),
        ('{"type": "pricing", "message": "QQ"}', "bad_base64"),  # no padding
        ('{"type": "pricing", "message": "QQ==\\n"}', "bad_base64"),  # trailing data
        ('{"type": "pricing", "message": "é"}', "bad_base64"),
        (encode_envelope(b"\xff"), "bad_protobuf"),  # bad tag
        (encode_envelope(b"\x15\x00\x00"), "bad_protobuf"),  # truncated float
        (encode_envelope(b"\x0a\x02\xff\xfe"), "bad_protobuf"),  # id not UTF-8
        (encode_pricing(id="AAPL", price=float("nan"), time=T), "bad_price"),
        (encode_pricing(id="AAPL", price=float("inf"), time=T), "bad_price"),
    ],
)
def test_decoder_bad_frame_decode_error_kind(frame: str | bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as ei:
        aapl().feed(frame, RECV)
    assert ei.value.kind == kind


def test_decoder_unknown_fields_skipped() -> None:
    # Fields 34.. (components, indices, cmcRank, ...) are not in the schema.
    payload = PricingData(id="AAPL", price=1.5, time=T).SerializeToString()
    payload += b"\x92\x02\x03abc" + b"\xa0\x02\x07"  # 34: string "abc", 36: varint 7
    assert aapl().feed(encode_envelope(payload), RECV)[0].price == 1.5


def test_decoder_extra_envelope_keys_ignored() -> None:
    b64 = base64.b64encode(PricingData(id="AAPL", price=1.5, time=T).SerializeToString())
    frame = json.dumps({"type": "pricing", "message": b64.decode(), "extra": [1]})
    assert aapl().feed(frame, RECV)[0].price == 1.5


def test_decoder_recovers_after_bad_frame() -> None:
    dec = aapl()
    with pytest.raises(DecodeError):
        dec.feed(MALFORMED_FRAMES["bad_protobuf"], RECV)
    assert one(dec, price=227.55, time=T).price == 227.55


def test_decoder_tracked_lists_codes() -> None:
    assert decoder(AAPL="NASDAQ:AAPL", IBM="NYSE:IBM").tracked == {
        "AAPL": "NASDAQ:AAPL",
        "IBM": "NYSE:IBM",
    }
