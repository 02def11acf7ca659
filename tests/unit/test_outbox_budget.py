"""A client's outbox is bounded in bytes: conflation first, then over budget (the writer closes it)."""

from __future__ import annotations

import json

from mdgate._model import Tick
from mdgate._serve.fanout import ClientOutbox, Fanout, _frames


def _tick(inst: str, i: int) -> Tick:
    return Tick(inst, 1.0 + i, i, i, "EX", volume=i)


def _push(o: ClientOutbox, ticks: list[Tick]) -> int:
    frames = _frames(ticks, 1000, o.framed)
    size = sum(map(len, frames))
    o.push(frames, ticks, size)
    return size


def test_bytes_counted_per_chunk_and_released_by_take():
    o = ClientOutbox(10_000, 1000)
    a = _push(o, [_tick("X:A", 1)])
    o.control(b'{"type":"subscribed"}')
    b = _push(o, [_tick("X:B", 2), _tick("X:C", 3)])
    assert o.nbytes == a + b + len(b'{"type":"subscribed"}')
    first = o.take(max_bytes=1)  # at least one entry, and no more than needed
    assert len(first) == 1 and o.nbytes == b + len(b'{"type":"subscribed"}') and o.pending_ticks == 2
    rest = o.take()
    assert len(rest) == 2 and o.nbytes == 0 and o.pending_ticks == 0


def test_a_lone_batch_is_taken_as_its_shared_frames_and_everything_it_held_is_released():
    o = ClientOutbox(10_000, 1000)
    ticks = [_tick("X:A", 5), _tick("X:B", 6)]
    frames = _frames(ticks, 1000, o.framed)
    size = sum(map(len, frames))
    o.push(frames, ticks, size)
    assert o.take() == frames
    assert (o.nbytes, o.pending_ticks, o.sent, o.oldest, len(o.queue)) == (0, 0, size, 5, 0)
    _push(o, [_tick("X:A", 7)])  # and the next one after it
    assert [json.loads(f)["ticks"][0]["volume"] for f in o.take()] == [7] and o.oldest == 7


def test_a_lone_conflated_batch_is_taken_with_its_gap_first():
    o = ClientOutbox(2, 1000)  # a client that lags by more than 2 ticks is conflated
    for i in range(5):
        _push(o, [_tick("X:A", i)])
    assert len(o.queue) == 1 and o.conflated
    docs = [json.loads(f) for f in o.take()]
    assert docs[0]["type"] == "gap" and docs[-1]["ticks"][-1]["volume"] == 4


def test_lagging_client_over_byte_budget_is_conflated_before_tick_limit():
    # tick limit far away: only the byte budget can trigger conflation here
    o = ClientOutbox(1_000_000, 1000, budget=64 * 1024)
    instruments = [f"X:I{k}" for k in range(5)]
    for i in range(3000):
        _push(o, [_tick(instruments[i % 5], i)])
        assert o.nbytes + o.in_flight <= o.budget
    assert o.conflated > 0 and not o.over_budget
    delivered = [t for fr in o.take() for t in json.loads(fr).get("ticks", [])]
    latest = {t["instrument"]: t["volume"] for t in delivered}
    assert latest == {instruments[i % 5]: i for i in range(2995, 3000)}


def test_bytes_in_the_socket_count_against_the_budget():
    o = ClientOutbox(1_000_000, 1000, budget=64 * 1024)
    _push(o, [_tick("X:A", 0)])
    o.in_flight = 63 * 1024  # what the writer saw in the socket's buffer
    for i in range(1, 200):
        _push(o, [_tick("X:A", i)])
    assert o.conflated > 0 and o.nbytes + o.in_flight <= o.budget


def test_replies_alone_over_budget_mark_the_outbox_and_drop_everything():
    o = ClientOutbox(1000, 1000, budget=64 * 1024)
    _push(o, [_tick("X:A", 0)])
    reply = b'{"type":"error","code":"no_route"}' + b" " * 4000
    n = 0
    while not o.over_budget:
        o.control(reply)
        n += 1
        assert o.nbytes <= o.budget
    assert n == 64 * 1024 // len(reply) + 1
    assert o.queue == type(o.queue)() and o.nbytes == 0 and o.dropped == 1
    # nothing more is queued for it: its memory stays flat whatever comes
    o.control(reply)
    _push(o, [_tick("X:A", 1)])
    assert o.nbytes == 0 and not o.queue


def test_publish_measures_each_batch_once_and_shares_frames():
    f = Fanout(framed=True)
    a, b = ClientOutbox(100, 1000, framed=True), ClientOutbox(100, 1000, framed=True)
    for o in (a, b):
        f.set_instruments(o, frozenset({"X:A"}))
    f.publish([_tick("X:A", 1), _tick("X:A", 2)])
    assert a.queue[0].frames is b.queue[0].frames
    assert a.nbytes == b.nbytes == sum(map(len, a.queue[0].frames))
