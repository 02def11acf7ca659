"""Pure pieces: instrument names, routing table, bars, fan-out outbox, tick queue."""

from __future__ import annotations

import json

import pytest

from mdgate._config import Settings
from mdgate._errors import InstrumentError, NoRouteError
from mdgate._model import Tick, decode_tick, encode_ticks, parse_instrument
from mdgate._provider import ProviderSpec
from mdgate._routing.table import ExchangeRoute, RouteTable, default_table
from mdgate._serve.fanout import ClientOutbox, Fanout
from mdgate.plugins.stores.bars import BarBuilder, aggregate_bars
from tests.unit._specs import SPECS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("nse:reliance", "NSE:RELIANCE"),
        (" NASDAQ:AAPL ", "NASDAQ:AAPL"),
        ("NSE:M&M", "NSE:M&M"),
        ("NYSE:BRK.B", "NYSE:BRK.B"),
        ("NSE:BAJAJ-AUTO", "NSE:BAJAJ-AUTO"),
        ("NSE:^NSEI", "NSE:^NSEI"),
    ],
)
def test_parse_instrument_valid_upper_cased(raw, expected):
    assert parse_instrument(raw)[0] == expected


@pytest.mark.parametrize("raw", ["RELIANCE", "NSE:", ":AAPL", "NSE:REL IANCE", "NSE:A:B", 5, None, "1X:A"])
def test_parse_instrument_invalid_raises(raw):
    with pytest.raises(InstrumentError):
        parse_instrument(raw)


def test_tick_optional_fields_absent_on_wire():
    t = Tick("NSE:RELIANCE", 2456.75, 1, 2, "DHAN", volume=10)
    data = json.loads(encode_ticks([t]))
    assert data == [
        {
            "instrument": "NSE:RELIANCE",
            "price": 2456.75,
            "ts": 1,
            "recv_ts": 2,
            "provider": "DHAN",
            "volume": 10,
        }
    ]
    assert decode_tick(json.dumps(data[0])) == t


def derive(provider, exchange, symbol):
    if provider == "yahoo":
        return {"NSE": f"{symbol}.NS", "BSE": f"{symbol}.BO"}.get(exchange, symbol)
    return None


def test_default_routes_explicit_first_then_derived():
    s = Settings(instruments={"NSE:RELIANCE": {"dhan": "NSE_EQ:2885"}})
    table = default_table(s, SPECS)
    routes = table.resolve("nse:reliance", derive)
    assert [(r.provider, r.code) for r in routes] == [("dhan", "NSE_EQ:2885"), ("yahoo", "RELIANCE.NS")]
    assert routes[0].primary and "explicit" in routes[0].reason
    assert "derived" in routes[1].reason and not routes[1].primary
    assert [r.provider for r in table.resolve("NASDAQ:AAPL", derive)] == ["yahoo"]


def test_no_code_anywhere_skips_provider_no_guessing():
    table = default_table(Settings(), SPECS)
    routes = table.resolve("NSE:TCS", derive)
    assert [r.provider for r in routes] == ["yahoo"]  # dhan has no mapping: skipped, not guessed


def test_unknown_exchange_no_route_names_exchange():
    with pytest.raises(NoRouteError) as info:
        default_table(Settings(), SPECS).resolve("LSE:VOD", derive)
    assert info.value.exchange == "LSE" and "LSE" in str(info.value)


def test_inactive_and_uninstalled_providers_skipped():
    table = RouteTable.build(
        [ExchangeRoute("NSE", "dhan", 0, True, active=False), ExchangeRoute("NSE", "yahoo", 1)], {}, "t"
    )
    assert [r.provider for r in table.resolve("NSE:TCS", derive)] == ["yahoo"]
    with pytest.raises(NoRouteError, match="not installed"):
        table.resolve("NSE:TCS", derive, providers=frozenset({"dhan"}))


def test_declared_exchanges_routed_in_load_order():
    alpha, beta = ProviderSpec("alpha", "A", ("X", "NSE")), ProviderSpec("beta", "B", ("X",))
    table = default_table(Settings(), [*SPECS, alpha, beta])
    routes = table.resolve("X:FOO", lambda p, e, s: s)
    assert [(r.provider, r.priority, r.primary) for r in routes] == [
        ("alpha", 0, True),
        ("beta", 10, False),
    ]
    # NSE: the providers declaring it primary in load order (dhan, then alpha), then the backup
    assert [r.provider for r in table.resolve("NSE:FOO", lambda p, e, s: s)] == ["dhan", "alpha", "yahoo"]


def tk(ts, price, volume=None, size=None, name="X:A"):
    return Tick(name, price, ts, ts, "T", volume=volume, size=size)


def test_bars_volume_from_cumulative_and_close_on_next_minute():
    b = BarBuilder()
    assert b.add(tk(60_000, 10.0, volume=100)) is None
    assert b.add(tk(61_000, 12.0, volume=150)) is None
    assert b.add(tk(62_000, 9.0, volume=160)) is None
    bar = b.add(tk(120_000, 11.0, volume=200))
    assert bar is not None
    assert (bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.count) == (
        60_000,
        10.0,
        12.0,
        9.0,
        9.0,
        60,
        3,
    )
    assert b.add(tk(119_000, 1.0, volume=210)) is None and b.late == 1
    # the late tick changes nothing; the next in-order tick's delta includes its volume
    assert b.add(tk(121_000, 11.5, volume=230)) is None
    assert b.flush(180_000 + 2_000)[0].volume == 70  # 160 -> 230


def test_bars_sum_sizes_without_volume_and_day_reset():
    b = BarBuilder()
    b.add(tk(0, 1.0, size=5))
    b.add(tk(1, 1.0, size=7))
    assert b.flush(62_000)[0].volume == 12
    b2 = BarBuilder()
    b2.add(tk(0, 1.0, volume=1000))
    b2.add(tk(1, 1.0, volume=30))  # new day: cumulative restarted
    assert b2.open_bars()[0].volume == 30


def test_aggregate_bars_5m():
    b = BarBuilder()
    bars = []
    for m in range(10):
        out = b.add(tk(m * 60_000, float(m), size=1))
        if out:
            bars.append(out)
    agg = aggregate_bars(bars, 300_000)
    assert [(x.start, x.open, x.close, x.volume, x.count) for x in agg] == [
        (0, 0.0, 4.0, 5, 5),
        (300_000, 5.0, 8.0, 4, 4),
    ]


def test_fanout_encodes_once_shares_frame_between_same_subscriptions():
    f = Fanout()
    a, b, c = (ClientOutbox(100, 1000) for _ in range(3))
    f.set_instruments(a, frozenset({"X:A"}))
    f.set_instruments(b, frozenset({"X:A"}))
    f.set_instruments(c, frozenset({"X:A", "X:B"}))
    f.publish([tk(1, 1.0), tk(2, 2.0, name="X:B"), tk(3, 3.0, name="X:C")])
    fa, fb, fc = a.take(), b.take(), c.take()
    assert fa[0] is fb[0]  # the very same bytes object: encoded once for both
    assert [t["price"] for t in json.loads(fa[0])["ticks"]] == [1.0]
    assert [t["price"] for t in json.loads(fc[0])["ticks"]] == [1.0, 2.0]
    f.set_instruments(c, frozenset())
    f.publish([tk(4, 4.0, name="X:B")])
    assert c.take() == []


def test_outbox_conflates_lagging_client_to_latest_per_instrument():
    f = Fanout()
    o = ClientOutbox(limit=3, max_per_frame=1000)
    f.set_instruments(o, frozenset({"X:A", "X:B"}))
    f.publish([tk(1, 1.0), tk(2, 2.0, name="X:B")])
    o.control(b'{"type":"x"}')
    f.publish([tk(3, 3.0), tk(4, 4.0), tk(5, 5.0, name="X:B")])
    assert o.conflated == 3
    frames = o.take()
    assert frames[0] == b'{"type":"x"}'
    # what conflation dropped is said, per instrument, before the ticks that replaced it
    assert [json.loads(fr) for fr in frames[1:3]] == [
        {"type": "gap", "instrument": "X:A", "from_ts": 1, "to_ts": 3, "reason": "conflated"},
        {"type": "gap", "instrument": "X:B", "from_ts": 2, "to_ts": 2, "reason": "conflated"},
    ]
    assert [t["price"] for t in json.loads(frames[3])["ticks"]] == [4.0, 5.0]
    assert o.gaps_sent == 2 and len(frames) == 4


def test_framed_frames_carry_rfc6455_text_header():
    f = Fanout(framed=True)
    o = ClientOutbox(100, 1000, framed=True)
    f.set_instruments(o, frozenset({"X:A"}))
    f.publish([tk(i, float(i)) for i in range(300)])
    o.control(b'{"type":"x"}')
    wire = o.take()
    big, small = wire
    assert big[0] == 0x81 and big[1] == 126  # FIN + text, 16-bit length
    assert int.from_bytes(big[2:4], "big") == len(big) - 4
    assert len(json.loads(big[4:])["ticks"]) == 300
    assert small == bytes((0x81, 12)) + b'{"type":"x"}'


def test_outbox_big_batch_to_idle_client_not_conflated():
    f = Fanout(max_per_frame=2)
    o = ClientOutbox(limit=3, max_per_frame=2)
    f.set_instruments(o, frozenset({"X:A"}))
    f.publish([tk(i, float(i)) for i in range(5)])
    assert o.conflated == 0
    assert [len(json.loads(fr)["ticks"]) for fr in o.take()] == [2, 2, 1]


def test_conflation_gaps_cover_every_dropped_tick_across_repeated_conflation():
    f = Fanout(framed=True)
    o = ClientOutbox(limit=2, max_per_frame=1000, framed=True)
    f.set_instruments(o, frozenset({"X:A"}))
    for ts in range(1, 21):  # the client never reads: conflated again and again
        f.publish([tk(ts, float(ts))])
    payloads = [json.loads(fr[2:]) for fr in o.take()]  # short frames: a 2-byte header
    gaps = [p for p in payloads if p["type"] == "gap"]
    delivered = [t["ts"] for p in payloads if p["type"] == "ticks" for t in p["ticks"]]
    assert len(gaps) == 1 and gaps[0]["reason"] == "conflated"  # one range, however often it conflated
    dropped = sorted(set(range(1, 21)) - set(delivered))
    assert (gaps[0]["from_ts"], gaps[0]["to_ts"]) == (dropped[0], dropped[-1])
    assert len(dropped) == o.conflated and delivered[-1] == 20
    assert payloads.index(gaps[0]) < next(i for i, p in enumerate(payloads) if p["type"] == "ticks")
