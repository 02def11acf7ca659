"""
What clients with the same subscription set share: one set object, one
snapshot frame while it is current; and what a client holds per instrument
between requests: nothing but that set.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import anyio
import pytest

from mdgate._config import ServerSettings
from mdgate._model import Tick
from mdgate._serve.backends import Backends
from mdgate._serve.fanout import ClientOutbox, Fanout, Shared, text_header
from mdgate._serve.resume import ResumeSource, resume
from mdgate._serve.server import ClientServer
from mdgate._serve.snapshots import SnapshotFrames
from mdgate.plugins.stores.memory_store import MemoryStore


def _tick(inst: str, i: int) -> Tick:
    return Tick(inst, 1.0 + i, i, i, "EX", seq=i)


def _payload(frame: bytes) -> bytes:
    """The payload of one unmasked WebSocket frame, its header checked."""
    n = frame[1] & 0x7F
    head = 2 if n < 126 else 4 if n == 126 else 10
    assert frame[0] == 0x81 and frame[:head] == text_header(len(frame) - head)
    return frame[head:]


def test_clients_with_equal_sets_hold_one_set_object():
    f = Fanout(framed=True)
    a, b, c = (ClientOutbox(100, 1000, framed=True) for _ in range(3))
    f.set_instruments(a, frozenset({"X:A", "X:B"}))
    f.set_instruments(b, frozenset(["X:B", "X:A"]))  # equal, another object
    f.set_instruments(c, frozenset({"X:A"}))
    assert b.instruments is a.instruments and c.instruments is not a.instruments
    f.set_instruments(a, frozenset())  # the first one leaves: the group lives on with its set
    f.publish([_tick("X:B", 1)])
    assert len(b.queue) == 1 and not a.queue and not c.queue
    d = ClientOutbox(100, 1000, framed=True)
    f.set_instruments(d, frozenset({"X:A", "X:B"}))
    assert d.instruments is b.instruments


class _Reads:
    """A latest-tick table whose reads are counted (and may be held up)."""

    def __init__(self) -> None:
        self.table = {"X:A": _tick("X:A", 1), "X:B": _tick("X:B", 2)}
        self.calls = 0
        self.gate: anyio.Event | None = None

    async def __call__(self, names: Sequence[str]) -> list[Tick]:
        self.calls += 1
        found = [self.table[n] for n in names if n in self.table]
        if self.gate is not None:
            await self.gate.wait()
        return found


@pytest.mark.anyio
async def test_a_snapshot_frame_is_built_once_per_list_while_nothing_is_published():
    f = Fanout(framed=True)
    reads = _Reads()
    frames = SnapshotFrames(f, reads)
    one = await frames.frame(["X:A", "X:B"])
    assert await frames.frame(["X:A", "X:B"]) is one and reads.calls == 1 and frames.reused == 1
    payload = json.loads(_payload(one.data))  # framed once, ready for the socket
    assert payload == {"type": "snapshot", "ticks": [
        {"instrument": "X:A", "price": 2.0, "ts": 1, "recv_ts": 1, "provider": "EX", "seq": 1},
        {"instrument": "X:B", "price": 3.0, "ts": 2, "recv_ts": 2, "provider": "EX", "seq": 2}]}
    other = await frames.frame(["X:B", "X:A"])  # another order is another frame
    assert other is not one and reads.calls == 2
    # the pipeline advances the table, then publishes: a frame read before is not handed out after
    reads.table["X:A"] = _tick("X:A", 7)
    f.publish([reads.table["X:A"]])
    fresh = await frames.frame(["X:A", "X:B"])
    assert fresh is not one and reads.calls == 3 and b'"seq":7' in fresh.data


@pytest.mark.anyio
async def test_a_read_that_waited_across_a_publish_is_used_once_and_not_kept():
    f = Fanout(framed=False)
    reads = _Reads()
    frames = SnapshotFrames(f, reads)
    reads.gate = gate = anyio.Event()
    got: list[Shared] = []
    async with anyio.create_task_group() as tg:
        async def ask() -> None:
            got.append(await frames.frame(["X:A"]))
        tg.start_soon(ask)
        await anyio.sleep(0.01)
        reads.table["X:A"] = _tick("X:A", 9)
        f.publish([reads.table["X:A"]])  # while the store is being read
        reads.gate = None
        other = await frames.frame(["X:B"])  # read and kept after the publish
        gate.set()
    assert got[0].data.startswith(b'{"type":"snapshot"')  # not framed: this fan-out does not frame
    assert b'"seq":1' in got[0].data  # what the read found before the publish: for its own client only
    again = await frames.frame(["X:A"])
    assert again is not got[0] and b'"seq":9' in again.data and reads.calls == 3
    assert await frames.frame(["X:B"]) is other


@pytest.mark.anyio
async def test_snapshot_frames_kept_are_bounded_in_bytes():
    f = Fanout(framed=True)
    reads = _Reads()
    frames = SnapshotFrames(f, reads, max_bytes=200)
    a = await frames.frame(["X:A"])
    b = await frames.frame(["X:B"])
    assert len(a.data) + len(b.data) > 200  # both cannot be kept: the oldest goes
    assert await frames.frame(["X:B"]) is b
    assert await frames.frame(["X:A"]) is not a and reads.calls == 3


@pytest.mark.anyio
async def test_clients_subscribing_alike_are_sent_the_same_snapshot_bytes():
    f = Fanout(framed=True)
    reads = _Reads()
    frames = SnapshotFrames(f, reads)
    source = ResumeSource(lambda _: None, None)
    outs = [ClientOutbox(100, 1000, framed=True) for _ in range(3)]
    for o in outs:
        await resume(source, f, o, frozenset({"X:A", "X:B"}), ["X:A", "X:B"], {}, None, frames.frame, 100)
    sent = [o.take() for o in outs]
    assert all(s[1] is sent[0][1] for s in sent) and reads.calls == 1  # one object, written as it is
    assert [json.loads(_payload(s[0]))["type"] for s in sent] == ["subscribed"] * 3
    assert outs[1].instruments is outs[0].instruments


class _Interest:
    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []
        self.who = ""

    def acquire(self, instrument: str) -> bool:
        self.count[instrument] += 1
        self.log.append((self.who, instrument))
        return True

    def release(self, instrument: str) -> None:
        self.count[instrument] -= 1


def _server(interest: _Interest) -> ClientServer:
    async def snapshot(names: Sequence[str]) -> list[Tick]:
        return []

    fanout = Fanout(framed=True)
    settings = ServerSettings()
    return ClientServer(settings, Backends(fanout, interest, snapshot, MemoryStore(), lambda **_: {}))


def _req(op: str, names: list[str]) -> str:
    return json.dumps({"op": op, "instruments": names})


@pytest.mark.anyio
async def test_between_requests_a_client_holds_only_its_shared_set():
    interest = _Interest()
    server = _server(interest)
    a, b = ClientOutbox(100, 1000, framed=True), ClientOutbox(100, 1000, framed=True)
    held: set[str] = set()
    await server._on_message(a, held, _req("subscribe", ["X:A", "X:B"]))
    await server._on_message(a, held, _req("subscribe", ["x:b", "X:C"]))  # B again: acquired once
    await server._on_message(b, set(), _req("subscribe", ["X:C", "X:B", "X:A"]))
    assert not held and a.instruments == {"X:A", "X:B", "X:C"} and b.instruments is a.instruments
    assert interest.count == {"X:A": 2, "X:B": 2, "X:C": 2}
    await server._on_message(a, held, _req("unsubscribe", ["X:A", "X:Z"]))
    assert a.instruments == {"X:B", "X:C"} and interest.count["X:A"] == 1 and interest.count["X:Z"] == 0
    server.backends.fanout.publish([_tick("X:A", 5)])
    assert b'"seq":5' in b.take()[-1] and all(b'"seq":5' not in x for x in a.take())


@pytest.mark.anyio
async def test_requests_are_acquired_one_at_a_time():
    interest = _Interest()
    server = _server(interest)
    now = [0.0]
    server.clock = lambda: now[0]
    names = [f"X:I{i}" for i in range(100)]  # yields to the loop every 16 names (1.6 ms)

    async def client(who: str) -> None:
        outbox = ClientOutbox(100, 1000, framed=True)
        await server._on_message(outbox, set(), _req("subscribe", names))

    real = interest.acquire

    def acquire(instrument: str) -> bool:
        interest.who = anyio.get_current_task().name or ""
        now[0] += 0.0001
        return real(instrument)

    interest.acquire = acquire  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(client, "one", name="one")
        tg.start_soon(client, "two", name="two")
    order = [who for who, _ in interest.log]
    assert order == ["one"] * 100 + ["two"] * 100 or order == ["two"] * 100 + ["one"] * 100


class _Ws:
    """A connection that sends ``messages`` and then goes away."""

    def __init__(self, messages: list[str]) -> None:
        from types import SimpleNamespace

        from websockets.protocol import State

        self.messages = messages
        self.transport = SimpleNamespace(writelines=lambda frames: None, get_write_buffer_size=lambda: 0,
                                         is_closing=lambda: False)
        self.protocol = SimpleNamespace(state=State.OPEN)
        self.remote_address = ("127.0.0.1", 5555)

    def __aiter__(self) -> _Ws:
        return self

    async def __anext__(self) -> str:
        await anyio.sleep(0.01)
        if not self.messages:
            raise StopAsyncIteration
        return self.messages.pop(0)


@pytest.mark.anyio
async def test_a_client_going_away_releases_every_name_registered_or_held():
    interest = _Interest()
    server = _server(interest)

    def last_seq(name: str) -> int | None:
        raise RuntimeError("numbering is down")  # the second request fails before registering

    server.backends = Backends(server.backends.fanout, interest, server.backends.snapshot, MemoryStore(),
                               lambda **_: {}, resume=ResumeSource(last_seq, None))
    ws = _Ws([_req("subscribe", ["X:A", "X:B"]),
              json.dumps({"op": "subscribe", "instruments": ["X:C", "X:D"], "since": {"X:C": 1}}),
              _req("unsubscribe", ["X:D"])])
    with anyio.fail_after(2):
        await server._handle(ws)  # type: ignore[arg-type]
    assert server.stats.internal_errors == 1  # the failed request was answered, the connection went on
    assert interest.count == {"X:A": 0, "X:B": 0, "X:C": 0, "X:D": 0}
    assert [n for _, n in interest.log] == ["X:A", "X:B", "X:C", "X:D"]


@pytest.mark.anyio
async def test_names_held_by_a_failed_request_are_released_by_unsubscribe():
    interest = _Interest()
    server = _server(interest)

    def last_seq(name: str) -> int | None:
        raise RuntimeError("numbering is down")

    server.backends = Backends(server.backends.fanout, interest, server.backends.snapshot, MemoryStore(),
                               lambda **_: {}, resume=ResumeSource(last_seq, None))
    outbox, held = ClientOutbox(100, 1000, framed=True), set[str]()
    with pytest.raises(RuntimeError):
        await server._on_message(outbox, held, json.dumps(
            {"op": "subscribe", "instruments": ["X:C", "X:D"], "since": {"X:C": 1}}))
    assert held == {"X:C", "X:D"} and not outbox.instruments
    await server._on_message(outbox, held, _req("unsubscribe", ["X:D"]))
    assert held == {"X:C"} and interest.count == {"X:C": 1, "X:D": 0}


@pytest.mark.anyio
async def test_a_subscribe_yields_to_the_feed_once_it_held_the_loop_half_a_millisecond():
    now = [0.0]
    interest = _Interest()
    server = _server(interest)
    server.clock = lambda: now[0]
    names = [f"X:I{i}" for i in range(160)]
    turns = [0]

    async def feed() -> None:
        while True:
            await anyio.lowlevel.checkpoint()
            turns[0] += 1

    async def request(cost: float) -> int:
        real = interest.acquire

        def acquire(instrument: str) -> bool:
            now[0] += cost  # what looking up a name takes
            return real(instrument)

        interest.acquire = acquire  # type: ignore[method-assign]
        outbox = ClientOutbox(100, 1000, framed=True)
        before = turns[0]
        await server._on_message(outbox, set(), _req("subscribe", names))
        interest.acquire = real  # type: ignore[method-assign]
        return turns[0] - before

    import anyio.lowlevel

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed)
        await anyio.lowlevel.checkpoint()
        slow = await request(0.0001)  # 16 names: 1.6 ms: the feed gets a turn every 16 names
        for name in names:
            interest.release(name)
        names[:] = [f"X:J{i}" for i in range(160)]
        quick = await request(0.000001)  # 160 names in 0.16 ms: no turn given in between
        tg.cancel_scope.cancel()
    assert slow >= 9 and quick <= 3
