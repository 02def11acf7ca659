"""A resume's barrier in a client's outbox: its frames first, what queued behind it after release."""

from __future__ import annotations

import json

import anyio
import pytest

from mdgate._model import Tick
from mdgate._serve.fanout import ClientOutbox, _frames


def _tick(inst: str, i: int) -> Tick:
    return Tick(inst, 1.0 + i, i, i, "EX", seq=i)


def _push(o: ClientOutbox, ticks: list[Tick]) -> None:
    frames = _frames(ticks, 1000, o.framed)
    o.push(frames, ticks, sum(map(len, frames)))


def seqs(frames: list[bytes]) -> list[int]:
    out = []
    for f in frames:
        doc = json.loads(f)
        out += [t["seq"] for t in doc.get("ticks", [])] if doc["type"] == "ticks" else [-1]
    return out


def test_what_queues_behind_a_barrier_waits_for_its_frames_and_its_release():
    o = ClientOutbox(10_000, 1000)
    barrier = o.hold()
    _push(o, [_tick("X:A", 5)])  # live, numbered after the replay
    assert o.take() == []  # nothing can pass the barrier yet
    o.pass_through(barrier, [b'{"type":"subscribed"}'])
    assert seqs(o.take()) == [-1]  # the answer goes, the live tick still waits
    o.pass_through(barrier, [b'{"type":"ticks","ticks":[{"seq":3}]}',
                             b'{"type":"ticks","ticks":[{"seq":4}]}'])
    o.release(barrier)
    assert seqs(o.take()) == [3, 4, 5] and o.nbytes == 0 and o.pending_ticks == 0 and not o.queue


def test_conflation_behind_a_barrier_keeps_the_replay_first():
    o = ClientOutbox(3, 1000)
    barrier = o.hold()
    for i in range(10, 20):
        _push(o, [_tick("X:A", i)])  # lagging past the tick limit: conflated
    assert o.conflated > 0
    o.pass_through(barrier, [b'{"type":"ticks","ticks":[{"seq":9}]}'])
    o.release(barrier)
    out = o.take()
    assert seqs(out)[0] == 9 and seqs(out)[-1] == 19  # replay, then the conflation gap, then the latest


@pytest.mark.anyio
async def test_the_writer_sleeps_at_an_empty_barrier_and_wakes_on_its_frames():
    o = ClientOutbox(10_000, 1000)
    barrier = o.hold()
    _push(o, [_tick("X:A", 5)])
    woke = anyio.Event()

    async def writer() -> None:
        await o.wait()
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.sleep(0.01)
        assert not woke.is_set()  # nothing it could take
        o.release(barrier)
        with anyio.fail_after(1):
            await woke.wait()


@pytest.mark.anyio
async def test_a_replay_is_paced_by_what_is_in_front_not_by_the_live_ticks_waiting_behind():
    from mdgate._serve.resume import _send

    o = ClientOutbox(1_000_000, 1000, budget=64 * 1024)
    barrier = o.hold()
    for i in range(300):  # ~40 KB of live ticks behind the barrier: over half the budget, not conflated
        _push(o, [_tick("X:A", 10_000 + i)])
    assert o.nbytes > o.budget // 2 and not o.conflated
    replay = [[_tick("X:A", i) for i in range(1, 2001)]]
    taken: list[bytes] = []

    async def writer() -> None:  # the client's writer: sends what is in front of the barrier
        while True:
            await o.wait()
            taken.extend(o.take())

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        with anyio.fail_after(5):
            await _send(o, barrier, replay)
        o.release(barrier)
        with anyio.fail_after(5):
            while o.queue:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    got = [n for n in seqs(taken) if n != -1]  # -1: the gap frame if the live ticks were conflated
    assert got[:2000] == list(range(1, 2001)) and got[-1] == 10_299 and got == sorted(got)
