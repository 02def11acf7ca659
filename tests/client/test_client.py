"""
mdgate.client, the official Python client: against a real gateway fed by the example
provider's fake feed (subscribe, snapshot and ticks as typed events, reconnect with
resubscription after the gateway drops the socket, tokens, cancellation), on a fake
clock for the backoff, and on frames for decoding and duplicate suppression.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection

from mdgate.client import (
    Client,
    ConnectError,
    ErrorEvent,
    Event,
    GapEvent,
    GapFilledEvent,
    HandshakeRefused,
    ProtocolError,
    ProviderEvent,
    Reconnected,
    Subscribed,
    TickEvent,
    Unsubscribed,
    _State,
    connect,
)
from mdgate.testing import running_gateway

pytestmark = pytest.mark.anyio

ACME = "EXAMPLE:ACME"


def tick(instrument: str = ACME, price: float = 1.5, seq: int | None = None, **extra: Any) -> dict[str, Any]:
    t = {"instrument": instrument, "price": price, "ts": 1_700_000_000_000, "recv_ts": 1_700_000_000_005,
         "provider": "EX", **extra}
    if seq is not None:
        t["seq"] = seq
    return t


def frame(kind: str, **body: Any) -> bytes:
    return json.dumps({"type": kind, **body}).encode()


async def next_of(events: Any, kind: type, timeout: float = 10.0) -> Any:
    """Read ``events`` until one of type ``kind``; return it."""
    with anyio.fail_after(timeout):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"events ended before a {kind.__name__}")


def drop_clients(gw: Any) -> int:
    """Abort every client socket from the gateway's side (TCP reset, no close frame)."""
    conns = list(gw.gateway.server.server.connections)
    for conn in conns:
        conn.transport.abort()
    return len(conns)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class FakeTime:
    """A clock and a sleep that advances it at once; ``on_sleep(n)`` runs at the n-th sleep (1-based)."""

    def __init__(self, on_sleep: Callable[[int], Any] | None = None) -> None:
        self.now = 1000.0
        self.delays: list[float] = []
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay
        if self.on_sleep is not None:
            await self.on_sleep(len(self.delays))
        await asyncio.sleep(0)


class Enough(Exception):
    """Raised by a fake sleep to end a retry loop."""


# -- against a real gateway ------------------------------------------------------------


async def test_subscribe_yields_snapshot_and_ticks_as_typed_events(feed, make_settings):
    settings = make_settings(feed.url, extra=f'[subscriptions]\nalways = ["{ACME}"]\n')
    async with running_gateway(settings) as gw:
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        await feed.send_tick("ACME", 101.25, v=5)
        await gw.wait_for(lambda s: s["providers"]["example"]["ticks"] >= 1)
        async with connect(gw.ws_url) as c:
            events = c.subscribe([ACME.lower()])
            assert await next_of(events, Subscribed) == Subscribed(instruments=(ACME,))
            snap = await next_of(events, TickEvent)
            assert (snap.instrument, snap.price, snap.provider, snap.volume, snap.snapshot) == (
                ACME, 101.25, "EX", 5, True)
            assert snap.bid is None and snap.seq == 1  # absent on the wire: None; numbered by the gateway
            await feed.send_tick("ACME", 101.5, v=6)
            live = await next_of(events, TickEvent)
            assert (live.price, live.volume, live.snapshot, live.seq) == (101.5, 6, False, 2)
            assert c.instruments == [ACME]
            await c.unsubscribe(ACME)
            assert await next_of(events, Unsubscribed) == Unsubscribed(instruments=(ACME,))
            assert c.instruments == []


async def test_refused_instrument_is_an_error_event_and_the_others_flow(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, connect(gw.ws_url) as c:
        events = c.subscribe(["LSE:VOD", ACME])
        assert await next_of(events, Subscribed) == Subscribed(instruments=(ACME,))
        error = await next_of(events, ErrorEvent)
        assert (error.code, error.instrument) == ("no_route", "LSE:VOD") and "LSE" in error.message


async def test_dropped_socket_reconnects_resubscribes_with_since(feed, make_settings, monkeypatch):
    sent: list[dict[str, Any]] = []
    real_send = ClientConnection.send

    async def recording_send(self: ClientConnection, message: Any, *args: Any) -> None:
        if isinstance(message, str) and message.startswith('{"op"'):  # ours, not the gateway's provider's
            sent.append(json.loads(message))
        await real_send(self, message, *args)

    monkeypatch.setattr(ClientConnection, "send", recording_send)
    async with running_gateway(make_settings(feed.url)) as gw:
        async with connect(gw.ws_url, backoff_initial=0.05, backoff_max=0.1) as c:
            events = c.subscribe([ACME, "EXAMPLE:BOLT"])
            await next_of(events, Subscribed)
            await feed.wait_until(lambda f: {"ACME", "BOLT"} <= f.subscribed)
            await feed.send_tick("ACME", 7.0)
            assert (await next_of(events, TickEvent)).seq == 1
            assert drop_clients(gw) == 1
            back = await next_of(events, Reconnected)
            assert back.attempts == 1 and back.error == "connection lost" and back.down_for >= 0
            assert back.recovered == {ACME: True}  # nothing was missed: seq 1 is the last one
            assert await next_of(events, Subscribed) == Subscribed(instruments=(ACME, "EXAMPLE:BOLT"),
                                                                   recovered={ACME: True})
            assert sent[-1] == {"op": "subscribe", "instruments": [ACME, "EXAMPLE:BOLT"], "since": {ACME: 1}}
            await gw.wait_for(lambda s: s["clients"] == 1)
            await feed.send_tick("BOLT", 8.0)
            after = await next_of(events, TickEvent)
            while after.snapshot:  # the snapshot of the resubscription first
                after = await next_of(events, TickEvent)
            assert (after.instrument, after.price) == ("EXAMPLE:BOLT", 8.0)


async def test_dropped_while_ticks_flow_the_client_yields_every_seq_once_in_order(feed, make_settings):
    settings = make_settings(feed.url, extra=f'[subscriptions]\nalways = ["{ACME}"]\n')
    async with running_gateway(settings) as gw, connect(gw.ws_url, backoff_initial=0.01,
                                                         backoff_max=0.05) as c:
        events = c.subscribe([ACME])
        await next_of(events, Subscribed)
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        got: list[int] = []
        recovered: list[Any] = []

        async def ticking() -> None:
            for i in range(1, 301):
                await feed.send_tick("ACME", float(i), ts=1_700_000_000_000 + i)
                if i in (60, 170):
                    assert drop_clients(gw) == 1  # mid-stream, twice
                await anyio.sleep(0.0005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticking)
            with anyio.fail_after(20):
                async for event in events:
                    if isinstance(event, TickEvent) and not event.snapshot:
                        got.append(event.seq)
                    elif isinstance(event, Reconnected):
                        recovered.append(event.recovered)
                    if got and got[-1] == 300:
                        break
        assert got == list(range(1, 301)) and recovered == [{ACME: True}, {ACME: True}]


def test_a_restarted_numbering_is_followed_from_where_the_gateway_says():
    s = _State()
    s.wanted[ACME] = None
    s.feed(frame("ticks", ticks=[tick(ACME, 1.0, seq=500)]))
    s.feed(frame("subscribed", instruments=[ACME], recovered={ACME: False}, from_seq={ACME: 1}))
    assert [e.seq for e in s.feed(frame("ticks", ticks=[tick(ACME, 2.0, seq=1), tick(ACME, 3.0, seq=2)]))
            ] == [1, 2]
    assert s.since() == {ACME: 2}


async def test_a_provider_drop_reaches_the_client_as_a_gap_event_before_the_next_tick(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, connect(gw.ws_url) as c:
        events = c.subscribe([ACME])
        await next_of(events, Subscribed)
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        await feed.send_tick("ACME", 5.0, ts=1_700_000_000_000)
        assert (await next_of(events, TickEvent)).price == 5.0
        feed.subscribed.clear()
        feed.drop()
        await feed.wait_until(lambda f: f.accepted == 2 and "ACME" in f.subscribed)
        await feed.send_tick("ACME", 6.0, ts=1_700_000_001_000)
        with anyio.fail_after(10):
            gap, after = await events.__anext__(), await events.__anext__()
        assert isinstance(gap, GapEvent) and (gap.instrument, gap.reason, gap.from_ts) == (
            ACME, "reconnect", 1_700_000_000_000)
        assert isinstance(after, TickEvent) and after.price == 6.0


async def test_backoff_resets_after_a_connection_that_delivered(feed, make_settings):
    """503s (max_clients taken by a blocker) grow the delay; a delivering connection resets it."""
    settings = make_settings(feed.url, extra="[server]\nmax_clients = 1\n")
    async with running_gateway(settings) as gw, anyio.create_task_group() as tg:
        blocker_open, blocker_close = anyio.Event(), anyio.Event()

        async def blocker() -> None:
            from websockets.asyncio.client import connect as ws_connect

            async with ws_connect(gw.ws_url):
                blocker_open.set()
                await blocker_close.wait()

        async def on_sleep(n: int) -> None:
            if n == 1:  # the client was dropped: take its slot
                await gw.wait_for(lambda s: s["server"]["sockets"] == 0)
                tg.start_soon(blocker)
                await blocker_open.wait()
            elif n == 3:  # two refusals later, free the slot
                blocker_close.set()
                await gw.wait_for(lambda s: s["server"]["sockets"] == 0)

        fake = FakeTime(on_sleep)
        async with connect(gw.ws_url, backoff_initial=0.5, backoff_max=30, sleep=fake.sleep,
                           clock=fake.clock, random=lambda: 0.5) as c:
            events = c.subscribe([ACME])
            await next_of(events, Subscribed)
            drop_clients(gw)
            back = await next_of(events, Reconnected)
            assert (back.attempts, back.down_for) == (3, 0.25 + 0.5 + 1.0)
            assert "503" in back.error
            await next_of(events, Subscribed)
            drop_clients(gw)
            await next_of(events, Reconnected)
        assert fake.delays == [0.25, 0.5, 1.0, 0.25]  # 0.5 * ceilings 0.5, 1, 2; then 0.5 again


async def test_token_sent_as_bearer_and_a_wrong_one_is_not_retried(feed, make_settings):
    settings = make_settings(feed.url, extra='[server]\ntokens = ["s3cret-token"]\n')
    async with running_gateway(settings) as gw:
        async with connect(gw.ws_url, token="s3cret-token") as c:
            assert await next_of(c.subscribe([ACME]), Subscribed) == Subscribed(instruments=(ACME,))
        async def give_up(n: int) -> None:
            raise Enough  # a retry would end here, failing the test rather than looping

        fake = FakeTime(give_up)
        for token in ("wrong", None):
            with pytest.raises(HandshakeRefused, match="HTTP 401") as info:
                async with connect(gw.ws_url, token=token, retry_first=True, sleep=fake.sleep):
                    pass
            assert info.value.status == 401 and "wrong" not in str(info.value)
        assert fake.delays == []  # one attempt each, never retried


async def test_leaving_the_block_closes_the_socket_even_when_cancelled(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw:
        subscribed = anyio.Event()

        async def consume() -> None:
            async with connect(gw.ws_url) as c:
                async for event in c.subscribe([ACME]):
                    if isinstance(event, Subscribed):
                        subscribed.set()

        task = asyncio.get_running_loop().create_task(consume())
        await subscribed.wait()
        assert gw.status()["clients"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await gw.wait_for(lambda s: s["clients"] == 0 and s["server"]["sockets"] == 0)


async def test_unreachable_gateway_raises_connect_error_without_retry_first():
    fake = FakeTime()
    with pytest.raises(ConnectError, match="cannot reach"):
        async with connect(f"ws://127.0.0.1:{closed_port()}/ws", sleep=fake.sleep):
            pass
    assert fake.delays == []


# -- backoff on a fake clock -----------------------------------------------------------


async def _delays(randoms: Iterator[float], attempts: int, **kwargs: Any) -> list[float]:
    """The delays before ``attempts`` failed attempts to reach a closed port."""

    async def stop(n: int) -> None:
        if n == attempts:
            raise Enough

    fake = FakeTime(stop)
    with pytest.raises(Enough):
        async with connect(f"ws://127.0.0.1:{closed_port()}/ws", retry_first=True, sleep=fake.sleep,
                           clock=fake.clock, random=lambda: next(randoms), **kwargs):
            pass
    return fake.delays


async def test_backoff_grows_exponentially_up_to_the_cap():
    ones = iter([1.0] * 10)  # the jitter at its top: the ceilings themselves
    assert await _delays(ones, 8, backoff_initial=0.5, backoff_max=10.0) == [
        0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


async def test_backoff_is_fully_jittered():
    randoms = iter([0.0, 0.5, 0.25, 0.75])
    assert await _delays(randoms, 4, backoff_initial=1.0, backoff_max=30.0) == [0.0, 1.0, 1.0, 6.0]


# -- frames: decoding and duplicates ---------------------------------------------------


def test_every_frame_type_decodes_to_its_event():
    s = _State()
    assert s.feed(frame("subscribed", instruments=[ACME])) == [Subscribed(instruments=(ACME,))]
    assert s.feed(frame("unsubscribed", instruments=[ACME])) == [Unsubscribed(instruments=(ACME,))]
    full = tick(size=3, volume=10, bid=1.4, ask=1.6, bid_size=5, ask_size=6, open=1.0, high=2.0, low=0.5,
                prev_close=1.2, oi=7, seq=9)
    [t] = s.feed(frame("ticks", ticks=[full]))
    assert isinstance(t, TickEvent) and t.to_dict() == full and t.snapshot is False
    [snap] = s.feed(frame("snapshot", ticks=[tick("NSE:X")]))
    assert isinstance(snap, TickEvent) and snap.snapshot and snap.size is None and snap.seq is None
    assert s.feed(frame("snapshot", ticks=[])) == []
    for reason in ("reconnect", "stall", "failover", "store", "conflated"):
        assert s.feed(frame("gap", instrument=ACME, from_ts=1, to_ts=2, reason=reason)) == [
            GapEvent(instrument=ACME, from_ts=1, to_ts=2, reason=reason)]
    [gap] = s.feed(frame("gap", instrument=ACME, from_ts=1, to_ts=2, reason="failover", from_provider="dhan"))
    assert isinstance(gap, GapEvent) and gap.from_provider == "dhan"
    for filled in (True, False):
        assert s.feed(frame("gap_filled", instrument=ACME, from_ts=1, to_ts=2, filled=filled)) == [
            GapFilledEvent(instrument=ACME, from_ts=1, to_ts=2, filled=filled)]
    assert s.feed(frame("gap_filled", instrument=ACME, from_ts=1, to_ts=2, filled=True, provider="dhan",
                        bars=5)) == [GapFilledEvent(instrument=ACME, from_ts=1, to_ts=2, filled=True,
                                                    provider="dhan", bars=5)]
    [unfilled] = s.feed(frame("gap_filled", instrument=ACME, from_ts=1, to_ts=2, filled=False,
                              reason="rate_limited", error="HTTP 429"))
    assert isinstance(unfilled, GapFilledEvent)
    assert (unfilled.reason, unfilled.error) == ("rate_limited", "HTTP 429")
    assert s.feed(frame("provider", instrument=ACME, provider="yahoo")) == [
        ProviderEvent(instrument=ACME, provider="yahoo")]


def test_error_frames_give_one_event_per_refused_instrument_or_one_for_the_request():
    s = _State()
    items = [{"instrument": "LSE:VOD", "code": "no_route", "message": "no provider serves 'LSE'"},
             {"instrument": "X:Y", "code": "unavailable", "message": "down"}]
    assert s.feed(frame("error", code="no_route", message="2 refused", errors=items)) == [
        ErrorEvent(code="no_route", message="no provider serves 'LSE'", instrument="LSE:VOD"),
        ErrorEvent(code="unavailable", message="down", instrument="X:Y")]
    assert s.feed(frame("error", code="bad_request", message="unknown op")) == [
        ErrorEvent(code="bad_request", message="unknown op")]
    more = s.feed(frame("error", code="no_route", message="1000 refused ... and 999 more", errors=items[:1],
                        more=999))
    assert more[-1] == ErrorEvent(code="no_route", message="1000 refused ... and 999 more") and len(more) == 2


def test_recovered_answers_per_instrument_or_as_one_flag():
    s = _State()
    [sub] = s.feed(frame("subscribed", instruments=[ACME, "EXAMPLE:BOLT"],
                         recovered={ACME: True, "EXAMPLE:BOLT": {"recovered": False, "from_seq": 5}}))
    assert isinstance(sub, Subscribed) and sub.recovered == {ACME: True, "EXAMPLE:BOLT": False}
    s.reconnect = (2.5, 3, "connection lost", (ACME,))
    back, sub = s.feed(frame("subscribed", instruments=[ACME, "EXAMPLE:BOLT"], recovered=True))
    assert back == Reconnected(down_for=2.5, attempts=3, error="connection lost", recovered={ACME: True})
    assert sub == Subscribed(instruments=(ACME, "EXAMPLE:BOLT"), recovered={ACME: True, "EXAMPLE:BOLT": True})


def test_unknown_frames_are_skipped_and_malformed_known_ones_raise():
    s = _State()
    assert s.feed(frame("from_the_future", x=1)) == []
    with pytest.raises(ProtocolError, match="'gap'"):
        s.feed(frame("gap", instrument=ACME))
    with pytest.raises(ProtocolError, match="'ticks'"):
        s.feed(frame("ticks", ticks=[{"instrument": ACME}]))
    with pytest.raises(ProtocolError, match="unreadable"):
        s.feed(b"not json")


def test_a_tick_whose_seq_was_seen_is_not_yielded_again():
    s = _State()
    s.wanted = dict.fromkeys([ACME, "EXAMPLE:BOLT", "EXAMPLE:CRUX"])

    def seqs(events: list[Event]) -> list[tuple[str, int | None]]:
        return [(e.instrument, e.seq) for e in events if isinstance(e, TickEvent)]

    assert seqs(s.feed(frame("ticks", ticks=[tick(seq=1), tick(seq=2), tick("EXAMPLE:BOLT", seq=1)]))) == [
        (ACME, 1), (ACME, 2), ("EXAMPLE:BOLT", 1)]
    # a replay after a resume overlapping what was seen, and a snapshot of a seen tick
    replay = [tick(seq=2), tick(seq=3), tick("EXAMPLE:BOLT", seq=1), tick("EXAMPLE:BOLT", seq=2)]
    assert seqs(s.feed(frame("ticks", ticks=replay))) == [(ACME, 3), ("EXAMPLE:BOLT", 2)]
    assert seqs(s.feed(frame("snapshot", ticks=[tick(seq=3), tick("EXAMPLE:BOLT", seq=3)]))) == [
        ("EXAMPLE:BOLT", 3)]
    assert seqs(s.feed(frame("ticks", ticks=[tick(seq=1), tick(seq=None), tick(seq=None)]))) == [
        (ACME, None), (ACME, None)]  # unnumbered ticks always pass
    # a snapshot is the newest by time: the live tick it shows may still come, and is yielded
    assert s.since() == {ACME: 3, "EXAMPLE:BOLT": 2}  # what a reconnect resumes from (CRUX: nothing seen)
    assert seqs(s.feed(frame("ticks", ticks=[tick("EXAMPLE:BOLT", seq=3)]))) == [("EXAMPLE:BOLT", 3)]
    assert s.since() == {ACME: 3, "EXAMPLE:BOLT": 3}


async def test_unsubscribe_forgets_the_last_seq():
    c = Client("ws://127.0.0.1:1/ws")
    await c.subscribe([ACME, "example:bolt"])
    c._state.feed(frame("ticks", ticks=[tick(seq=4), tick("EXAMPLE:BOLT", seq=2)]))
    await c.unsubscribe([ACME])
    assert c.instruments == ["EXAMPLE:BOLT"] and c.last_seq == {"EXAMPLE:BOLT": 2}


# -- import weight -----------------------------------------------------------------------


def test_the_client_imports_no_server_part():
    code = "import sys, mdgate; before = set(sys.modules); import mdgate.client; " \
           "print(' '.join(sorted(sys.modules))); print(' '.join(sorted(set(sys.modules) - before)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    everything, added = (line.split() for line in out.splitlines())
    heavy = ("mdgate._app", "mdgate._serve", "mdgate._providers", "mdgate._cli.inspect", "redis", "psycopg",
             "prometheus_client", "anyio", "httpx", "structlog", "click", "mdgate._cli")
    assert [m for m in everything if m.split(".")[0] in heavy or m.startswith(heavy)] == []
    stdlib = set(sys.stdlib_module_names)
    # typing_extensions: msgspec's own dependency (``import mdgate`` no longer loads it beforehand);
    # python_socks: websockets' SOCKS proxy support, imported when installed (picows requires it)
    light = {"websockets", "msgspec", "typing_extensions", "python_socks"}
    extra = [m for m in added if m.split(".")[0] not in stdlib | light
             and m not in ("mdgate.client", "mdgate._events", "mdgate._backoff")]
    assert extra == []
