"""SeqBook: per-instrument numbering, continued from the store, held in order while it is asked."""

from __future__ import annotations

import anyio
import pytest

import mdgate._seq as seq_module
from mdgate._model import Tick
from mdgate._seq import SeqBook

pytestmark = pytest.mark.anyio

A, B = "NSE:A", "NSE:B"


def ticks(*spec: tuple[str, float]) -> list[Tick]:
    return [Tick(inst, price, 1_700_000_000_000 + i, 1_700_000_000_000 + i, "X") for i, (inst, price) in
            enumerate(spec)]


def numbers(out: list[Tick]) -> list[tuple[str, float, int | None]]:
    return [(t.instrument, t.price, t.seq) for t in out]


def test_without_a_store_every_instrument_counts_from_one_by_one() -> None:
    book = SeqBook()
    assert numbers(book.stamp(ticks((A, 1), (B, 1), (A, 2)))) == [(A, 1, 1), (B, 1, 1), (A, 2, 2)]
    assert numbers(book.stamp(ticks((A, 3)))) == [(A, 3, 3)]
    assert book.last == {A: 3, B: 1}


async def test_a_new_instrument_waits_for_the_store_and_continues_its_numbering_in_order() -> None:
    asked: list[list[str]] = []
    answer = anyio.Event()
    woken: list[bool] = []

    async def seeder(names: list[str]) -> dict[str, int]:
        asked.append(names)
        await answer.wait()
        return {A: 41}  # B: nothing stored yet

    book = SeqBook(seeder, lambda: woken.append(True))
    async with anyio.create_task_group() as tg:
        tg.start_soon(book.run)
        assert book.stamp(ticks((A, 1), (B, 1))) == []  # both held
        assert book.stamp(ticks((A, 2))) == []  # behind the held ones
        await anyio.sleep(0.01)
        assert asked == [[A, B]] and book.pending() == [A, B]
        answer.set()
        with anyio.fail_after(5):
            while not woken:
                await anyio.sleep(0.001)
        # released first, in arrival order, then the batch's own ticks
        assert numbers(book.stamp(ticks((A, 3), (B, 2)))) == [
            (A, 1, 42), (A, 2, 43), (B, 1, 1), (A, 3, 44), (B, 2, 2)]
        assert book.pending() == []
        tg.cancel_scope.cancel()


async def test_other_instruments_flow_while_one_is_held() -> None:
    async def never(names: list[str]) -> dict[str, int]:
        await anyio.sleep_forever()
        return {}

    book = SeqBook(never)
    book.last[B] = 7  # already numbered in this process
    async with anyio.create_task_group() as tg:
        tg.start_soon(book.run)
        assert numbers(book.stamp(ticks((A, 1), (B, 1)))) == [(B, 1, 8)]
        tg.cancel_scope.cancel()


async def test_an_unreachable_store_is_waited_for_then_numbering_starts_over() -> None:
    now = [0.0]
    calls = 0

    async def down(names: list[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        raise ConnectionError("redis down")

    woken: list[bool] = []
    book = SeqBook(down, lambda: woken.append(True), wait=5.0, clock=lambda: now[0])
    async with anyio.create_task_group() as tg:
        tg.start_soon(book.run)
        assert book.stamp(ticks((A, 1))) == []
        with anyio.fail_after(5):
            while calls < 3:
                await anyio.sleep(0.01)
        assert book.stamp([]) == [] and book.unseeded == 0  # still within the wait: held, retried
        now[0] = 5.0
        with anyio.fail_after(5):
            while not woken:
                await anyio.sleep(0.01)
        assert numbers(book.stamp(ticks((A, 2)))) == [(A, 1, 1), (A, 2, 2)]
        assert book.unseeded == 1
        tg.cancel_scope.cancel()


def test_held_ticks_are_bounded_the_oldest_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seq_module, "HELD_MAX", 3)

    async def unused(names: list[str]) -> dict[str, int]:
        return {}

    book = SeqBook(unused)
    assert book.stamp(ticks(*[(A, float(i)) for i in range(5)])) == []
    assert book.dropped == 2
    book._seeded({A: 10}, [A])
    assert numbers(book.stamp([])) == [(A, 2.0, 11), (A, 3.0, 12), (A, 4.0, 13)]


async def test_a_forgotten_instrument_asks_the_store_again() -> None:
    stored = {A: 10}
    woken: list[bool] = []

    async def seeder(names: list[str]) -> dict[str, int]:
        return {n: stored[n] for n in names if n in stored}

    book = SeqBook(seeder, lambda: woken.append(True))
    async with anyio.create_task_group() as tg:
        tg.start_soon(book.run)
        book.stamp(ticks((A, 1)))
        with anyio.fail_after(5):
            while not woken:
                await anyio.sleep(0.001)
        assert numbers(book.stamp(ticks((A, 2)))) == [(A, 1, 11), (A, 2, 12)]
        stored[A] = 30  # another instance numbered it meanwhile (its slot moved there and back)
        book.forget([A])
        woken.clear()
        assert book.stamp(ticks((A, 3))) == []
        with anyio.fail_after(5):
            while not woken:
                await anyio.sleep(0.001)
        assert numbers(book.stamp([])) == [(A, 3, 31)]
        tg.cancel_scope.cancel()
    plain = SeqBook()  # no store: forgetting would only restart at 1, so it keeps its numbers
    plain.stamp(ticks((A, 1)))
    plain.forget([A])
    assert numbers(plain.stamp(ticks((A, 2)))) == [(A, 2, 2)]
