"""yfinance's own decode path reads our fixture frames the same way we do."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from mdgate_yahoo.protocol import YahooDecoder

DATA = Path(__file__).parent / "data"
ALL_VARIANTS = [
    (f.name, v) for f in sorted(DATA.glob("ws_pricing_*.json")) for v in json.loads(f.read_text())["variants"]
]


@pytest.fixture(scope="module")
def yf_decode() -> Any:
    live = importlib.import_module("yfinance.live")  # dev dependency; ~1 s to import
    ws = live.BaseWebSocket("ws://127.0.0.1:9/unused", verbose=False)
    return ws._decode_message


def test_fixture_set_covers_every_file() -> None:
    assert {f for f, _ in ALL_VARIANTS} == {
        "ws_pricing_crypto.json",
        "ws_pricing_equity.json",
        "ws_pricing_india.json",
        "ws_pricing_zero.json",
    }
    assert len(ALL_VARIANTS) >= 12


@pytest.mark.parametrize(("file", "variant"), ALL_VARIANTS, ids=[f"{f}:{v['name']}" for f, v in ALL_VARIANTS])
def test_yfinance_decode_same_symbol_price_time_volume(
    file: str, variant: dict[str, Any], yf_decode: Any
) -> None:
    frame = variant["frame"]
    # What yfinance's listen() does per frame: json.loads, then _decode_message.
    theirs = yf_decode(json.loads(frame).get("message", ""))
    assert "error" not in theirs
    dec = YahooDecoder()
    for code, instrument in variant["track"].items():
        dec.track(code, instrument)
    ours = dec.feed(frame, variant["recv_ts"])

    assert theirs["id"] in variant["track"]
    if "price" not in theirs:  # MessageToDict omits zero values; so do we (no tick)
        assert ours == []
        return
    (tick,) = ours
    assert tick.instrument == variant["track"][theirs["id"]]
    hint = int(theirs.get("price_hint", 2 if abs(theirs["price"]) >= 1 else 4))
    assert tick.price == round(theirs["price"], hint)
    # 64-bit fields come back from MessageToDict as strings.
    assert tick.ts == (int(theirs["time"]) if "time" in theirs else variant["recv_ts"])
    assert tick.volume == (int(theirs["day_volume"]) if "day_volume" in theirs else None)
