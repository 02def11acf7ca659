"""Unit tests of the Redis store's pure encoding (no server)."""

from __future__ import annotations

import msgspec
import pytest

from mdgate._model import TICK_FIELDS, Bar, Tick
from mdgate.plugins.stores.redis_store._codec import (
    BatchPacker,
    bars_key,
    decode_bar_fields,
    decode_tick_fields,
    last_key,
    parse_id,
    ticks_key,
)
from mdgate.plugins.stores.redis_store._lua import LAST_IDS_SHA, WRITE_BATCH, WRITE_BATCH_SHA

T0 = 1_700_000_000_000


def tick(ts: int, instrument: str = "NSE:RELIANCE", provider: str = "DHAN") -> Tick:
    return Tick(instrument, 1.5, ts, ts + 1, provider)


def argv(packed: bytes) -> list[bytes]:
    # parse RESP: *N then $len\r\narg\r\n ...
    out: list[bytes] = []
    head, rest = packed.split(b"\r\n", 1)
    for _ in range(int(head[1:])):
        n, rest = rest.split(b"\r\n", 1)
        out.append(rest[: int(n[1:])])
        rest = rest[int(n[1:]) + 2 :]
    return out


def test_keys_carry_instrument_hash_tag() -> None:
    assert ticks_key("NSE:RELIANCE") == "mdgate:{NSE:RELIANCE}:ticks"
    assert last_key("NSE:RELIANCE") == "mdgate:{NSE:RELIANCE}:last"
    assert bars_key("NSE:RELIANCE") == "mdgate:{NSE:RELIANCE}:bars:1m"


def test_parse_id_str_and_bytes_split_ms_and_seq() -> None:
    assert parse_id("17-3") == (17, 3)
    assert parse_id(b"0-0") == (0, 0)


def test_packer_ids_strictly_increase_when_ts_repeats_or_goes_back() -> None:
    p = BatchPacker(10, 10, 10)
    args = argv(p.pack([tick(T0), tick(T0), tick(T0 - 5), tick(T0 + 1)]))
    recs = msgspec.json.decode(args[-2])
    assert [r[1] for r in recs] == [f"{T0}-0", f"{T0}-1", f"{T0}-2", f"{T0 + 1}-0"]
    assert p.ids["NSE:RELIANCE"] == [T0 + 1, 0]


def test_packer_seed_continues_above_stored_id() -> None:
    p = BatchPacker(10, 10, 10)
    p.seed("NSE:RELIANCE", b"1700000000000-7")
    assert p.unknown(["NSE:RELIANCE", "NSE:TCS", "NSE:TCS"]) == ["NSE:TCS"]
    recs = msgspec.json.decode(argv(p.pack([tick(T0)]))[-2])
    assert recs[0][1] == f"{T0}-8"


def test_packer_layout_keys_args_and_records() -> None:
    p = BatchPacker(100, 200, 300)
    bar = Bar("NSE:TCS", T0, 1.0, 2.0, 0.5, 1.5, 10, 3)
    args = argv(p.pack([tick(T0), tick(T0 + 1, "NASDAQ:AAPL", "YF")], [bar]))
    assert args[:3] == [b"EVALSHA", WRITE_BATCH_SHA.encode(), b"10"]
    assert args[3:13] == [
        b"mdgate:feed",
        b"mdgate:{NSE:RELIANCE}:ticks",
        b"mdgate:{NSE:RELIANCE}:last",
        b"mdgate:{NSE:RELIANCE}:bars:1m",
        b"mdgate:{NASDAQ:AAPL}:ticks",
        b"mdgate:{NASDAQ:AAPL}:last",
        b"mdgate:{NASDAQ:AAPL}:bars:1m",
        b"mdgate:{NSE:TCS}:ticks",
        b"mdgate:{NSE:TCS}:last",
        b"mdgate:{NSE:TCS}:bars:1m",
    ]
    assert args[13:16] == [b"100", b"200", b"300"]
    recs = msgspec.json.decode(args[16])
    assert recs[1][:7] == [2, f"{T0 + 1}-0", "NASDAQ:AAPL", 1.5, T0 + 1, T0 + 2, "YF"]
    assert len(recs[0]) == 2 + len(TICK_FIELDS)
    # bar of an instrument without ticks in the batch gets its own key group
    assert args[17:] == [
        b"1",
        b"3",
        f"{T0}-0".encode(),
        str(T0).encode(),
        b"1.0",
        b"2.0",
        b"0.5",
        b"1.5",
        b"10",
        b"3",
        b"0",
    ]
    p.rebuild_until["NSE:TCS"] = T0
    assert argv(p.pack([], [bar]))[-1] == b"1"  # a minute this process started in


@pytest.mark.parametrize("provider", ["A,B", 'A"B', "A]", "A\\B", "A\nB"])
def test_packer_unsafe_provider_tick_left_out_and_counted(provider: str) -> None:
    p = BatchPacker(10, 10, 10)
    recs = msgspec.json.decode(argv(p.pack([tick(T0, provider=provider), tick(T0)]))[-2])
    assert len(recs) == 1
    assert p.rejected == 1


def test_decode_tick_fields_converts_text_values() -> None:
    t = decode_tick_fields(
        {
            "instrument": "NSE:TCS",
            "price": "3500.05",
            "ts": "17",
            "recv_ts": "18",
            "provider": "DHAN",
            "volume": "99",
        }
    )
    assert t == Tick("NSE:TCS", 3500.05, 17, 18, "DHAN", volume=99)
    with pytest.raises(msgspec.ValidationError):
        decode_tick_fields({"instrument": "NSE:TCS"})


def test_decode_bar_fields_converts_text_values() -> None:
    fields = {
        "start": "60000",
        "open": "1",
        "high": "2",
        "low": "0.5",
        "close": "1.5",
        "volume": "7",
        "count": "3",
    }
    assert decode_bar_fields("NSE:TCS", fields) == Bar("NSE:TCS", 60000, 1.0, 2.0, 0.5, 1.5, 7, 3)


def test_script_shas_are_distinct_sha1_hex() -> None:
    assert len(WRITE_BATCH_SHA) == len(LAST_IDS_SHA) == 40
    assert WRITE_BATCH_SHA != LAST_IDS_SHA
    assert "'instrument', 'price'" in WRITE_BATCH
