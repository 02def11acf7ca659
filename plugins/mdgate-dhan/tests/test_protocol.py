"""Byte-fixture tests of the Dhan v2 decoder and the request encoders."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mdgate._errors import (
    AuthenticationError,
    DecodeError,
    ProviderConnectionError,
    RateLimitedError,
    SubscriptionRejected,
)
from mdgate_dhan.protocol import (
    DhanDecoder,
    decode_request,
    disconnect_error,
    encode_disconnect,
    encode_disconnect_packet,
    encode_full,
    encode_market_status,
    encode_oi,
    encode_prev_close,
    encode_quote,
    encode_subscribe,
    encode_ticker,
    encode_unsubscribe,
    parse_code,
)

DATA = Path(__file__).parent / "data"
RECV = 1_760_000_001_234
# 2025-10-09T08:53:20Z: the true trade time of every fixture (LTT 1760019800 is IST-shifted).
TRUE_TS = 1_760_000_000_000


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def decoder() -> DhanDecoder:
    d = DhanDecoder()
    d.track("NSE_EQ:2885", "NSE:RELIANCE")
    d.track("NSE_EQ:1333", "NSE:HDFCBANK")
    d.track("NSE_FNO:52175", "NFO:NIFTY26JAN26000CE")
    d.track("NSE_CURRENCY:10093", "CDS:USDINR")
    return d


def test_feed_ticker_fixture_yields_price_and_utc_ts(decoder: DhanDecoder) -> None:
    (tick,) = decoder.feed(fixture("ws_ticker.bin"), RECV)
    assert tick.instrument == "NSE:RELIANCE"
    assert tick.price == 2885.05
    assert tick.ts == TRUE_TS
    assert tick.recv_ts == RECV
    assert tick.provider == "DHAN"
    assert tick.size is None
    assert tick.volume is None


def test_feed_quote_fixture_yields_all_quote_fields(decoder: DhanDecoder) -> None:
    (tick,) = decoder.feed(fixture("ws_quote.bin"), RECV)
    assert tick.to_dict() == {
        "instrument": "NSE:RELIANCE",
        "price": 2885.05,
        "ts": TRUE_TS,
        "recv_ts": RECV,
        "provider": "DHAN",
        "size": 25,
        "volume": 1_234_567,
        "open": 2850.0,
        "high": 2899.95,
        "low": 2841.1,
    }


def test_feed_full_fixture_yields_top_of_book(decoder: DhanDecoder) -> None:
    (tick,) = decoder.feed(fixture("ws_full.bin"), RECV)
    assert (tick.bid, tick.bid_size, tick.ask, tick.ask_size) == (2885.0, 120, 2885.1, 340)
    assert (tick.price, tick.size, tick.volume, tick.ts) == (2885.05, 25, 1_234_567, TRUE_TS)
    assert (tick.open, tick.high, tick.low) == (2850.0, 2899.95, 2841.1)
    assert tick.oi == 0


def test_feed_full_with_empty_levels_omits_bid_and_ask(decoder: DhanDecoder) -> None:
    (tick,) = decoder.feed(fixture("ws_full_fno_empty_book.bin"), RECV)
    assert tick.instrument == "NFO:NIFTY26JAN26000CE"
    assert tick.bid is None and tick.ask is None
    assert tick.bid_size is None and tick.ask_size is None
    assert tick.oi == 1_500_000
    assert "bid" not in tick.to_dict()


def test_feed_full_zero_qty_level_with_price_omits_side(decoder: DhanDecoder) -> None:
    frame = encode_full("NSE_EQ:2885", ltp=100.0, ltt=1, depth=[(0, 10, 0, 1, 99.95, 100.05)])
    (tick,) = decoder.feed(frame, RECV)
    assert tick.bid is None and tick.bid_size is None
    assert (tick.ask, tick.ask_size) == (100.05, 10)


def test_feed_prev_close_updates_state_not_ticks(decoder: DhanDecoder) -> None:
    assert decoder.feed(fixture("ws_prev_close.bin"), RECV) == []
    (tick,) = decoder.feed(fixture("ws_ticker.bin"), RECV)
    assert tick.prev_close == 2870.4


def test_feed_oi_updates_state_merged_into_later_ticks(decoder: DhanDecoder) -> None:
    assert decoder.feed(fixture("ws_oi.bin"), RECV) == []
    (tick,) = decoder.feed(encode_ticker("NSE_FNO:52175", 120.5, 1_760_019_800), RECV)
    assert tick.oi == 1_525_000


def test_feed_ticker_after_quote_carries_latest_day_statistics(decoder: DhanDecoder) -> None:
    decoder.feed(fixture("ws_prev_close.bin") + fixture("ws_quote.bin"), RECV)
    (tick,) = decoder.feed(encode_ticker("NSE_EQ:2885", 2886.0, 1_760_019_801), RECV)
    assert tick.size is None
    assert (tick.volume, tick.open, tick.high, tick.low, tick.prev_close) == (
        1_234_567,
        2850.0,
        2899.95,
        2841.1,
        2870.4,
    )


def test_feed_market_status_is_counted_without_ticks(decoder: DhanDecoder) -> None:
    assert decoder.feed(fixture("ws_market_status.bin"), RECV) == []
    assert decoder.market_status_packets == 1


def test_feed_stacked_frame_decodes_every_packet(decoder: DhanDecoder) -> None:
    ticks = decoder.feed(fixture("ws_stacked.bin"), RECV)
    assert [t.instrument for t in ticks] == ["NSE:RELIANCE", "NSE:HDFCBANK", "NSE:RELIANCE"]
    assert [t.ts for t in ticks] == [TRUE_TS, TRUE_TS + 1000, TRUE_TS]
    assert ticks[0].prev_close == 2870.4  # the prev close packet came first
    assert ticks[1].price == 1701.35
    assert ticks[2].bid == 2885.0


def test_feed_ltt_offset_zero_keeps_ltt_as_is() -> None:
    d = DhanDecoder(ltt_offset_seconds=0)
    d.track("NSE_EQ:2885", "NSE:RELIANCE")
    (tick,) = d.feed(fixture("ws_ticker.bin"), RECV)
    assert tick.ts == 1_760_019_800_000


def test_feed_ltt_ist_clock_time_becomes_true_utc() -> None:
    # 15:29:59 IST on 2026-01-05 is 09:59:59 UTC; Dhan encodes the IST clock as epoch.
    ist_clock_as_epoch = int(datetime(2026, 1, 5, 15, 29, 59, tzinfo=UTC).timestamp())
    d = DhanDecoder()
    d.track("NSE_EQ:2885", "NSE:RELIANCE")
    (tick,) = d.feed(encode_ticker("NSE_EQ:2885", 1.0, ist_clock_as_epoch), RECV)
    assert datetime.fromtimestamp(tick.ts / 1000, UTC) == datetime(2026, 1, 5, 9, 59, 59, tzinfo=UTC)


def test_feed_zero_ltt_falls_back_to_receive_time(decoder: DhanDecoder) -> None:
    (tick,) = decoder.feed(encode_ticker("NSE_EQ:2885", 10.0, 0), RECV)
    assert tick.ts == RECV


def test_feed_currency_segment_rounds_to_four_decimals(decoder: DhanDecoder) -> None:
    (tick,) = decoder.feed(fixture("ws_ticker_currency.bin"), RECV)
    assert tick.price == 83.1234
    assert struct.unpack("<f", struct.pack("<f", 83.1234))[0] != 83.1234  # float32 noise


def test_feed_equity_price_rounds_float32_noise_to_two_decimals(decoder: DhanDecoder) -> None:
    for price in (0.05, 1.1, 2885.05, 19999.95, 123456.7):
        (tick,) = decoder.feed(encode_ticker("NSE_EQ:2885", price, 1), RECV)
        assert tick.price == price
        assert repr(tick.price) == repr(price)


def test_feed_text_frame_is_bad_frame(decoder: DhanDecoder) -> None:
    with pytest.raises(DecodeError) as info:
        decoder.feed('{"hello": 1}', RECV)
    assert info.value.kind == "bad_frame"


def test_feed_unknown_code_is_reported_and_later_packets_kept(decoder: DhanDecoder) -> None:
    odd = struct.pack("<BHBI", 99, 12, 1, 2885) + b"\0" * 4
    with pytest.raises(DecodeError) as info:
        decoder.feed(odd + fixture("ws_ticker.bin"), RECV)
    assert info.value.kind == "unknown_code"
    assert [t.price for t in info.value.ticks] == [2885.05]


def test_feed_truncated_packet_is_short_packet_with_earlier_ticks(decoder: DhanDecoder) -> None:
    frame = fixture("ws_ticker.bin") + fixture("ws_quote.bin")[:30]
    with pytest.raises(DecodeError) as info:
        decoder.feed(frame, RECV)
    assert info.value.kind == "short_packet"
    assert len(info.value.ticks) == 1
    assert info.value.excerpt == frame[16:80]


def test_feed_length_below_layout_is_short_packet_and_skipped(decoder: DhanDecoder) -> None:
    bad = struct.pack("<BHBI", 4, 20, 1, 2885) + b"\0" * 12  # a Quote claiming 20 bytes
    with pytest.raises(DecodeError) as info:
        decoder.feed(bad + fixture("ws_ticker.bin"), RECV)
    assert info.value.kind == "short_packet"
    assert len(info.value.ticks) == 1


def test_feed_length_under_header_size_is_bad_length(decoder: DhanDecoder) -> None:
    with pytest.raises(DecodeError) as info:
        decoder.feed(struct.pack("<BHBI", 2, 3, 1, 2885) + b"\0" * 8, RECV)
    assert info.value.kind == "bad_length"


def test_feed_trailing_bytes_are_short_packet(decoder: DhanDecoder) -> None:
    with pytest.raises(DecodeError) as info:
        decoder.feed(fixture("ws_ticker.bin") + b"\x02\x10", RECV)
    assert info.value.kind == "short_packet"
    assert len(info.value.ticks) == 1


def test_feed_several_faults_report_the_first_and_count_the_rest(decoder: DhanDecoder) -> None:
    odd = struct.pack("<BHBI", 99, 8, 0, 0)
    with pytest.raises(DecodeError) as info:
        decoder.feed(odd + fixture("ws_ticker.bin") + odd, RECV)
    assert info.value.kind == "unknown_code"
    assert "+1 more" in info.value.message
    assert len(info.value.ticks) == 1


def test_feed_untracked_instrument_is_unknown_symbol(decoder: DhanDecoder) -> None:
    decoder.untrack("NSE_EQ:2885")
    with pytest.raises(DecodeError) as info:
        decoder.feed(fixture("ws_quote.bin"), RECV)
    assert info.value.kind == "unknown_symbol"
    assert "NSE_EQ:2885" in info.value.message


def test_feed_nan_price_is_bad_value(decoder: DhanDecoder) -> None:
    with pytest.raises(DecodeError) as info:
        decoder.feed(encode_ticker("NSE_EQ:2885", float("nan"), 1), RECV)
    assert info.value.kind == "bad_value"


def test_feed_zero_price_is_skipped_without_fault(decoder: DhanDecoder) -> None:
    assert decoder.feed(encode_quote("NSE_EQ:2885", ltp=0.0, volume=0), RECV) == []
    assert decoder.ignored_packets == 1


def test_feed_code_zero_is_ignored(decoder: DhanDecoder) -> None:
    frame = struct.pack("<BHBI", 0, 8, 0, 0) + fixture("ws_ticker.bin")
    assert len(decoder.feed(frame, RECV)) == 1
    assert decoder.ignored_packets == 1


def test_feed_disconnect_807_raises_authentication_error_with_hint(decoder: DhanDecoder) -> None:
    with pytest.raises(AuthenticationError) as info:
        decoder.feed(fixture("ws_ticker.bin") + fixture("ws_disconnect_807.bin"), RECV)
    assert info.value.code == 807
    assert "DHAN_ACCESS_TOKEN" in (info.value.hint or "")
    assert "SIGHUP" in (info.value.hint or "")
    assert len(info.value.ticks) == 1


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        (800, ProviderConnectionError),
        (804, SubscriptionRejected),
        (805, RateLimitedError),
        (806, AuthenticationError),
        (807, AuthenticationError),
        (808, AuthenticationError),
        (809, AuthenticationError),
        (810, AuthenticationError),
        (811, SubscriptionRejected),
        (812, SubscriptionRejected),
        (813, SubscriptionRejected),
        (814, SubscriptionRejected),
        (899, ProviderConnectionError),
    ],
)
def test_disconnect_reason_maps_to_typed_error(reason: int, error: type[Exception]) -> None:
    d = DhanDecoder()
    with pytest.raises(error) as info:
        d.feed(encode_disconnect_packet(reason), RECV)
    assert type(info.value) is error
    assert getattr(info.value, "code", None) == reason
    assert disconnect_error(reason).code == reason


def test_disconnect_805_is_retryable_and_808_is_not() -> None:
    assert disconnect_error(805).retryable is True
    assert disconnect_error(808).retryable is False


def test_track_invalid_code_is_ignored() -> None:
    d = DhanDecoder()
    d.track("NOPE:1", "NSE:X")
    d.track("NSE_EQ:abc", "NSE:X")
    assert d.tracked == {}


def test_track_then_untrack_round_trip() -> None:
    d = DhanDecoder()
    d.track("BSE_EQ:500325", "BSE:RELIANCE")
    assert d.tracked == {"BSE_EQ:500325": "BSE:RELIANCE"}
    d.untrack("BSE_EQ:500325")
    d.untrack("BSE_EQ:500325")
    assert d.tracked == {}


def test_encoders_reproduce_fixtures() -> None:
    assert encode_ticker("NSE_EQ:2885", 2885.05, 1_760_019_800) == fixture("ws_ticker.bin")
    assert encode_prev_close("NSE_EQ:2885", 2870.4) == fixture("ws_prev_close.bin")
    assert encode_oi("NSE_FNO:52175", 1_525_000) == fixture("ws_oi.bin")
    assert encode_market_status() == fixture("ws_market_status.bin")
    assert encode_disconnect_packet(807) == fixture("ws_disconnect_807.bin")
    assert encode_quote(
        "NSE_EQ:2885",
        ltp=2885.05,
        ltq=25,
        ltt=1_760_019_800,
        atp=2880.4,
        volume=1_234_567,
        total_sell_qty=40_000,
        total_buy_qty=50_000,
        open=2850.0,
        high=2899.95,
        low=2841.1,
    ) == fixture("ws_quote.bin")
    assert encode_full(
        "NSE_EQ:2885",
        ltp=2885.05,
        ltq=25,
        ltt=1_760_019_800,
        atp=2880.4,
        volume=1_234_567,
        total_sell_qty=40_000,
        total_buy_qty=50_000,
        open=2850.0,
        high=2899.95,
        low=2841.1,
        depth=[(120, 340, 3, 5, 2885.0, 2885.1), (500, 60, 7, 2, 2884.95, 2885.15)],
    ) == fixture("ws_full.bin")


def test_fixture_full_header_matches_recorded_capture() -> None:
    # DhanHQ-py #90 shows a live Full packet starting 08 a2 00 (code 8, length 162).
    assert fixture("ws_full.bin")[:3] == bytes.fromhex("08a200")


def test_encode_subscribe_batches_of_100_with_sdk_shape() -> None:
    codes = [f"NSE_EQ:{i}" for i in range(1, 251)]
    frames = encode_subscribe(codes, "quote")
    assert len(frames) == 3
    msgs = [json.loads(f) for f in frames]
    assert [m["InstrumentCount"] for m in msgs] == [100, 100, 50]
    assert all(m["RequestCode"] == 17 for m in msgs)
    assert msgs[0]["InstrumentList"][0] == {"ExchangeSegment": "NSE_EQ", "SecurityId": "1"}
    assert sum(len(m["InstrumentList"]) for m in msgs) == 250


@pytest.mark.parametrize(("mode", "sub", "unsub"), [("ticker", 15, 16), ("quote", 17, 18), ("full", 21, 22)])
def test_encode_request_codes_per_mode(mode: str, sub: int, unsub: int) -> None:
    (s,) = encode_subscribe(["IDX_I:13"], mode)
    (u,) = encode_unsubscribe(["IDX_I:13"], mode)
    assert decode_request(s) == (sub, ["IDX_I:13"])
    assert decode_request(u) == (unsub, ["IDX_I:13"])


def test_encode_subscribe_bad_code_or_mode_raises_value_error() -> None:
    with pytest.raises(ValueError, match="SEGMENT:SECURITYID"):
        encode_subscribe(["RELIANCE.NS"])
    with pytest.raises(ValueError, match="mode"):
        encode_subscribe(["NSE_EQ:2885"], "depth")


def test_encode_disconnect_is_request_code_12() -> None:
    assert json.loads(encode_disconnect()) == {"RequestCode": 12}


def test_parse_code_splits_segment_and_id() -> None:
    assert parse_code("NSE_EQ:2885") == ("NSE_EQ", 1, 2885)
    assert parse_code("BSE_CURRENCY:7") == ("BSE_CURRENCY", 7, 7)
    for bad in ("NSE_EQ", "NSE_EQ:", "NSE_EQ:-1", "NSE_EQ:99999999999", "X:1", "NSE_EQ:\u0661"):
        with pytest.raises(ValueError, match="bad Dhan code"):
            parse_code(bad)
