"""
The demo recording bundled with mdgate (``src/mdgate/_demo/recording``, replayed by ``mdgate demo``):
it decodes through the real plugins' decoders into ticks for all twenty instruments, with sane
prices, it is small, and ``scripts/make_demo_recording.py`` reproduces it byte for byte.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from mdgate import Tick
from mdgate._demo import DHAN_CODES, INSTRUMENT_CODES, INSTRUMENTS, RECORDING, YAHOO_CODES
from mdgate._recording.format import read_index, read_records
from mdgate_dhan import plugin as dhan_plugin
from mdgate_dhan.symbols import KNOWN_INSTRUMENTS
from mdgate_yahoo import plugin as yahoo_plugin
from mdgate_yahoo.symbols import yahoo_symbol

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_demo_recording.py"
PLACEHOLDERS = {"DHAN_CLIENT_ID": "demo", "DHAN_ACCESS_TOKEN": "demo"}

#: Roughly where these traded in mid-2025: a decoded price must be within 10 % of it.
LEVELS = {
    "NASDAQ:AAPL": 200, "NASDAQ:MSFT": 460, "NASDAQ:NVDA": 135, "NASDAQ:AMZN": 205,
    "NASDAQ:GOOGL": 170, "NASDAQ:META": 650, "NASDAQ:TSLA": 345, "NYSE:JPM": 265, "NYSE:V": 365,
    "NYSE:XOM": 102, "NSE:RELIANCE": 1425, "NSE:TCS": 3440, "NSE:HDFCBANK": 1940, "NSE:INFY": 1560,
    "NSE:ICICIBANK": 1450, "NSE:SBIN": 810, "NSE:BHARTIARTL": 1860, "NSE:ITC": 415, "NSE:LT": 3650,
    "NSE:KOTAKBANK": 2080,
}


def _decoders() -> dict[str, Any]:
    # the decoders the gateway gets from the plugins' mdgate_normalize hooks
    yahoo = yahoo_plugin.mdgate_normalize("yahoo", yahoo_plugin.SPEC.parse_config({}, {}))
    dhan = dhan_plugin.mdgate_normalize("dhan", dhan_plugin.SPEC.parse_config({}, PLACEHOLDERS))
    return {"yahoo": yahoo, "dhan": dhan}


def _decode_all() -> tuple[dict[str, list[Tick]], dict[str, int]]:
    decoders = _decoders()
    ticks: dict[str, list[Tick]] = defaultdict(list)
    frames: dict[str, int] = defaultdict(int)
    for record in read_records(RECORDING):
        decoder = decoders[record.provider]
        if record.kind == "track":
            decoder.track(record.data, record.extra)
        elif record.kind == "frame":
            frames[record.provider] += 1
            for tick in decoder.feed(record.data, record.t):
                ticks[tick.instrument].append(tick)
    return ticks, frames


def test_recording_decodes_into_sane_ticks_for_all_twenty_instruments() -> None:
    ticks, frames = _decode_all()  # a DecodeError would fail the test
    assert set(ticks) == set(INSTRUMENTS) == set(LEVELS)
    index = read_index(RECORDING)
    duration_s = (index["last_t"] - index["first_t"]) / 1000
    assert duration_s >= 120  # a few minutes
    for instrument, series in ticks.items():
        rate = len(series) / duration_s
        assert 0.5 <= rate <= 10, (instrument, rate)  # a few ticks a second
        level = LEVELS[instrument]
        for t in series:
            assert 0.9 * level <= t.price <= 1.1 * level, (instrument, t.price)
            assert t.low is not None and t.high is not None and t.low <= t.price <= t.high
            assert t.recv_ts >= t.ts >= index["first_t"] - 1000  # ts from the wire, not in the future
        volumes = [t.volume for t in series]
        assert all(v is not None for v in volumes)
        assert volumes == sorted(volumes) and volumes[-1] > volumes[0], instrument  # the day's volume grows
        assert len({t.price for t in series}) > 5, instrument  # it moves
    assert ticks["NSE:RELIANCE"][0].provider == "DHAN" and ticks["NASDAQ:AAPL"][0].provider == "YF"
    assert frames["yahoo"] > 1000 and frames["dhan"] > 1000


def test_recorded_codes_are_the_ones_the_routing_gives() -> None:
    tracked = {r.extra: (r.provider, r.data) for r in read_records(RECORDING) if r.kind == "track"}
    assert tracked == {**{i: ("yahoo", c) for i, c in YAHOO_CODES.items()},
                       **{i: ("dhan", c) for i, c in DHAN_CODES.items()}}
    for instrument, code in YAHOO_CODES.items():
        exchange, symbol = instrument.split(":")
        assert yahoo_symbol(exchange, symbol) == code
    for instrument, code in DHAN_CODES.items():
        # the plugin's own table, where it has the instrument, agrees; the demo's [instruments] names all
        assert KNOWN_INSTRUMENTS.get(instrument, code) == code
        assert INSTRUMENT_CODES[instrument] == {"dhan": code}


def test_recording_is_small() -> None:
    files = list(RECORDING.iterdir())
    assert {p.name for p in files} == {"index.json", "000001.mdrec"}
    assert sum(p.stat().st_size for p in files) <= 5 * 1024 * 1024


@pytest.mark.timeout(60)
def test_the_script_reproduces_the_recording_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True)
    shipped = {p.name: p.read_bytes() for p in RECORDING.iterdir()}
    made = {p.name: p.read_bytes() for p in out.iterdir()}
    assert made.keys() == shipped.keys()
    for name, data in shipped.items():
        assert made[name] == data, f"{name} differs: run scripts/make_demo_recording.py and commit"
