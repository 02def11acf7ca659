"""
The connection runtime contains what a plugin hands it: the reader's check
of each frame's decoded ticks (timestamp sanity, decoder output), and hooks
that raise or return the wrong thing, each recorded in the plugin-fault
ledger under the hook's name while the session goes on.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from mdgate._clock import ManualClock
from mdgate._errors import DecodeError, ProviderDisabled
from mdgate._model import Tick, now_ms
from tests.unit._scripted import Script, make_session, queued, running

pytestmark = pytest.mark.anyio

SKEW_MS = 300_000  # the default [runtime] max_clock_skew, 300 s


def tick(price: float, ts: Any, instrument: Any = "FAKE:AAA") -> Tick:
    return Tick(instrument, price, ts, now_ms(), "FK")


async def connected(script: Script, clock: ManualClock, **kw: Any):
    script.refuse = None
    session = make_session(script, clock, **kw)
    session.add("AAA", "FAKE:AAA")
    return session


# ---------------------------------------------------------------- timestamps


async def test_tick_dated_beyond_max_clock_skew_is_dropped_counted_and_logged():
    clock, script = ManualClock(), Script()
    session = await connected(script, clock)
    async with running(session, clock):
        outputs: list[Any] = []
        script.decode = lambda frame, recv_ts: outputs.pop(0)
        now = now_ms()
        outputs.append([tick(1.0, now - 5), tick(2.0, now + SKEW_MS - 60_000),
                        tick(3.0, now + SKEW_MS + 60_000), tick(4.0, 2**62)])
        with capture_logs() as logs:
            script.transport.push("f1")
            await clock.advance(0)
            # the same frame again (within the log interval): counted, the log line suppressed
            outputs.append([tick(5.0, 0xFFFFFFFF * 1000)])
            script.transport.push("f2")
            await clock.advance(0)
        assert [t.price for t in queued(session)] == [1.0, 2.0]
        st = session.status()
        assert st["decode_errors_by_kind"] == {"bad_ts": 3} and st["ticks"] == 2
        bad = [e for e in logs if e["event"] == "tick_bad_ts"]
        assert len(bad) == 1 and bad[0]["dropped"] == 2 and bad[0]["instrument"] == "FAKE:AAA"
        assert session.faults.count() == 0  # provider data, not a plugin fault
        assert session.state == "connected"


async def test_max_clock_skew_is_configurable():
    clock, script = ManualClock(), Script()
    session = await connected(script, clock, max_clock_skew=1.0)
    async with running(session, clock):
        now = now_ms()
        script.decode = lambda frame, recv_ts: [tick(1.0, now + 30_000), tick(2.0, now - 30_000)]
        script.transport.push("f")
        await clock.advance(0)
        assert [t.price for t in queued(session)] == [2.0]
        assert session.decode_errors == {"bad_ts": 1}


async def test_nan_ts_is_a_bad_ts():
    clock, script = ManualClock(), Script()
    session = await connected(script, clock)
    async with running(session, clock):
        script.decode = lambda frame, recv_ts: [tick(1.0, math.nan), tick(2.0, recv_ts)]
        script.transport.push("f")
        await clock.advance(0)
        assert [t.price for t in queued(session)] == [2.0]
        assert session.decode_errors == {"bad_ts": 1}


async def test_future_ticks_carried_by_a_decode_error_are_dropped_too():
    clock, script = ManualClock(), Script()
    session = await connected(script, clock)
    async with running(session, clock):
        def decode(frame: Any, recv_ts: int) -> Any:
            raise DecodeError("fake", "bad_message", "half a frame",
                              ticks=(tick(1.0, recv_ts), tick(2.0, recv_ts + 10 * SKEW_MS)))

        script.decode = decode
        script.transport.push("f")
        await clock.advance(0)
        assert [t.price for t in queued(session)] == [1.0]
        assert session.decode_errors == {"bad_message": 1, "bad_ts": 1}


# ---------------------------------------------------------------- decoder output


@pytest.mark.parametrize(
    ("output", "good", "bad", "why"),
    [
        ({"price": 1.0}, [], 1, "returned dict, not a list of Tick"),
        ("junk", [], 1, "returned str, not a list of Tick"),
        ("tick", [], 1, "returned Tick, not a list of Tick"),
        ("mixed", [7.0, 8.0], 3, "returned a dict, not a Tick (3 of 5 items)"),
        ("bad_fields", [9.0], 2, "a Tick whose ts is str (2 of 3 items)"),
        ("lookalike", [], 1, "returned a SimpleNamespace, not a Tick (1 of 1 items)"),
    ],
)
async def test_decoder_output_that_is_not_a_list_of_ticks_is_dropped_and_recorded(output, good, bad, why):
    clock, script = ManualClock(), Script()
    session = await connected(script, clock)
    async with running(session, clock):
        now = now_ms()
        value = {
            "tick": tick(1.0, now),
            "mixed": [{"p": 1}, tick(7.0, now), None, 42, tick(8.0, now)],
            "bad_fields": [tick(1.0, "soon"), tick(9.0, now), tick(1.0, now, instrument=["X"])],
            "lookalike": [SimpleNamespace(instrument="FAKE:AAA", price=1.0, ts=now, recv_ts=now,
                                          provider="FK")],
        }.get(output, output) if isinstance(output, str) else output
        script.decode = lambda frame, recv_ts: value
        script.transport.push("f")
        await clock.advance(0)
        assert [t.price for t in queued(session)] == good
        assert session.decode_errors == {"bad_tick": bad}
        ledger = session.faults.status()["scripted"]
        assert ledger["by_hook"] == {"decoder": 1} and why in ledger["last_error"]
        # the connection and the stream go on
        script.decode = None
        script.transport.push(json.dumps([{"s": "AAA", "p": 5.0}]))
        await clock.advance(0)
        assert [t.price for t in queued(session)] == [5.0]
        assert session.state == "connected" and script.opens == 1


async def test_decoder_returning_a_tuple_or_none_is_fine():
    clock, script = ManualClock(), Script()
    session = await connected(script, clock)
    async with running(session, clock):
        outputs: list[Any] = [(tick(1.0, now_ms()),), None, []]
        script.decode = lambda frame, recv_ts: outputs.pop(0)
        for _ in range(3):
            script.transport.push("f")
        await clock.advance(0)
        assert [t.price for t in queued(session)] == [1.0]
        assert session.decode_errors == {} and session.faults.count() == 0


@pytest.mark.parametrize("error", [RuntimeError("decoder bug"), SystemExit("decoder bug")])
async def test_decoder_raising_is_a_decode_error_and_a_plugin_fault(error):
    clock, script = ManualClock(), Script()
    session = await connected(script, clock)
    async with running(session, clock):
        def decode(frame: Any, recv_ts: int) -> Any:
            raise error

        script.decode = decode
        script.transport.push("f")
        script.transport.push("f")
        await clock.advance(0)
        assert session.decode_errors == {"decoder_error": 2}
        ledger = session.faults.status()["scripted"]
        assert ledger["by_hook"] == {"decoder": 2} and "decoder bug" in ledger["last_error"]
        assert session.state == "connected"


# ---------------------------------------------------------------- hooks


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    ("hook", "raises", "returns", "expect"),
    [
        ("mdgate_connect", Boom("no endpoint today"), None, "Boom: no endpoint today"),
        ("mdgate_connect", SystemExit("plugin calls exit"), None, "SystemExit: plugin calls exit"),
        ("mdgate_connect", None, "ws://not-an-endpoint", "returned str, not an Endpoint or a Connector"),
        ("mdgate_normalize", None, None, "returned None, not a decoder"),
        ("mdgate_normalize", Boom("no decoder"), None, "Boom: no decoder"),
        ("mdgate_subscribe", Boom("cannot encode"), None, "Boom: cannot encode"),
        ("mdgate_subscribe", SystemExit(3), None, "SystemExit: 3"),
        ("mdgate_subscribe", None, 12, "returned int, not a list of str/bytes frames"),
        ("mdgate_subscribe", None, "one frame", "returned str, not a list of str/bytes frames"),
        ("mdgate_subscribe", None, [b"ok", {"no": 1}], "returned a dict among its frames, not str/bytes"),
    ],
)
async def test_hook_fault_fails_the_connection_records_the_hook_and_retries(hook, raises, returns, expect):
    clock, script = ManualClock(), Script()
    if raises is not None:
        script.raises[hook] = raises
    else:
        script.returns[hook] = returns
    session = await connected(script, clock)
    async with running(session, clock):
        assert session.state == "failed"
        ledger = session.faults.status()["scripted"]
        assert ledger["by_hook"] == {hook: 1} and expect in ledger["last_error"]
        assert hook in session.last_error and expect in session.last_error
        # retried with backoff, not in a tight loop, and it recovers once the plugin does
        calls = script.calls.count(hook)
        await clock.advance(0.5)
        assert script.calls.count(hook) == calls
        script.raises.clear()
        script.returns.clear()
        await clock.advance(1.0)
        assert session.state == "connected"


async def test_any_iterable_of_frames_is_sent():
    clock, script = ManualClock(), Script()
    script.returns["mdgate_subscribe"] = (f for f in ["a", b"b"])
    session = await connected(script, clock)
    async with running(session, clock):
        assert session.state == "connected" and script.transport.sent == ["a", b"b"]


async def test_unsubscribe_and_heartbeat_faults_are_recorded():
    clock, script = ManualClock(), Script(heartbeat_interval=5.0)
    session = await connected(script, clock, backoff_initial=1.0)
    async with running(session, clock):
        script.raises["mdgate_heartbeat"] = Boom("no ping")
        await clock.advance(5.0)
        assert session.faults.status()["scripted"]["by_hook"] == {"mdgate_heartbeat": 1}
        script.raises.clear()
        await clock.advance(1.0)
        assert session.state == "connected"
        script.raises["mdgate_unsubscribe"] = Boom("no unsub")
        session.remove("AAA")
        await clock.advance(0)
        assert session.faults.status()["scripted"]["by_hook"]["mdgate_unsubscribe"] == 1
        assert session.state == "failed"


async def test_decoder_track_raising_is_a_decoder_fault():
    clock, script = ManualClock(), Script()
    script.returns["mdgate_normalize"] = type("NoTrack", (), {
        "track": lambda self, c, i: 1 / 0, "untrack": lambda self, c: None,
        "feed": lambda self, f, r: []})()
    session = await connected(script, clock)
    async with running(session, clock):
        assert session.state == "failed"
        assert session.faults.status()["scripted"]["by_hook"] == {"decoder": 1}


async def test_provider_error_from_a_hook_is_an_answer_not_a_fault():
    clock, script = ManualClock(), Script()
    script.raises["mdgate_connect"] = ProviderDisabled("fake", "no token configured")
    session = await connected(script, clock)
    async with running(session, clock):
        assert session.state == "disabled" and session.last_error == "no token configured"
        assert session.faults.count() == 0
