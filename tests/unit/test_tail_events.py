"""``mdgate tail --json`` prints each event as the frame it came in: absent fields stay absent."""

from __future__ import annotations

import json
from typing import Any

from mdgate._cli.inspect import _event_json
from mdgate.client import GapFilledEvent, Subscribed

INST = "NSE:RELIANCE"


def printed(event: Any) -> Any:
    return json.loads(json.dumps(_event_json(event)))  # as --json prints it


def test_gap_filled_prints_only_the_fields_it_came_with():
    filled = GapFilledEvent(instrument=INST, from_ts=1, to_ts=2, filled=True, provider="dhan", bars=5)
    assert _event_json(filled) == {"type": "gap_filled", "instrument": INST, "from_ts": 1, "to_ts": 2,
                                   "filled": True, "provider": "dhan", "bars": 5}
    unfilled = GapFilledEvent(instrument=INST, from_ts=1, to_ts=2, filled=False, reason="rate_limited")
    assert _event_json(unfilled) == {"type": "gap_filled", "instrument": INST, "from_ts": 1, "to_ts": 2,
                                     "filled": False, "reason": "rate_limited"}


def test_subscribed_shows_recovered_and_from_seq_when_there_are_any():
    assert printed(Subscribed(instruments=(INST,))) == {"type": "subscribed", "instruments": [INST]}
    resumed = Subscribed(instruments=(INST,), recovered={INST: False}, from_seq={INST: 7})
    assert printed(resumed) == {"type": "subscribed", "instruments": [INST], "recovered": {INST: False},
                                    "from_seq": {INST: 7}}
