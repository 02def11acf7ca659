"""Pipeline.step: a batch to the latest table, numbering, store and fan-out; every failure contained."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from mdgate._latest import LatestTicks
from mdgate._model import Tick
from mdgate._pipeline import Pipeline
from mdgate._queue import TickQueue
from mdgate._stats import PipelineStats

pytestmark = pytest.mark.anyio


def tick(price: float, instrument: str = "FAKE:A") -> Tick:
    return Tick(instrument, price, 1, 1, "FK")


class Sinks:
    def __init__(self) -> None:
        self.stored: list[float] = []
        self.published: list[float] = []
        self.store_fails = False
        self.publish_fails = False

    def write(self, batch: Sequence[Tick]) -> None:
        if self.store_fails:
            raise RuntimeError("store bug")
        self.stored += [t.price for t in batch]

    def publish(self, batch: list[Tick]) -> None:
        if self.publish_fails:
            raise RuntimeError("fan-out bug")
        self.published += [t.price for t in batch]


def make() -> tuple[Pipeline, Sinks, PipelineStats]:
    sinks, stats = Sinks(), PipelineStats()
    return Pipeline(TickQueue(100), LatestTicks(), sinks.write, sinks.publish, stats), sinks, stats


def test_a_batch_reaches_store_and_fan_out_numbered_and_counted() -> None:
    p, sinks, stats = make()
    p.step([tick(1.0), tick(2.0)])
    assert sinks.stored == sinks.published == [1.0, 2.0]
    assert (stats.ticks, stats.batches, stats.errors) == (2, 1, 0)
    assert p.latest.table["FAKE:A"].price == 2.0


def test_a_store_failure_still_publishes_and_a_fan_out_failure_still_stores() -> None:
    p, sinks, stats = make()
    sinks.store_fails = True
    p.step([tick(1.0)])
    sinks.store_fails, sinks.publish_fails = False, True
    p.step([tick(2.0)])
    sinks.publish_fails = False
    p.step([tick(3.0)])
    assert sinks.published == [1.0, 3.0] and sinks.stored == [2.0, 3.0]
    assert stats.errors == 2 and stats.ticks == 3


def test_a_malformed_tick_is_dropped_and_the_rest_of_its_batch_goes_on() -> None:
    p, sinks, stats = make()
    bad = Tick("FAKE:A", 9.0, "not a number", 1, "FK")  # type: ignore[arg-type]
    p.step([tick(1.0), bad, tick(2.0)])
    assert sinks.published == [1.0, 2.0] and stats.errors == 1


def test_a_numbering_failure_is_contained_and_the_next_batch_flows() -> None:
    p, sinks, stats = make()
    real = p.seqs.stamp

    def broken(batch: list[Tick]) -> list[Tick]:
        raise RuntimeError("numbering bug")

    p.seqs.stamp = broken  # type: ignore[method-assign]
    p.step([tick(1.0)])  # must not raise into the event loop
    p.seqs.stamp = real  # type: ignore[method-assign]
    p.step([tick(2.0)])
    assert sinks.published == [2.0] and stats.errors == 1


async def test_run_hands_the_queue_to_step_once_per_loop_iteration() -> None:
    p, sinks, stats = make()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await anyio.sleep(0.01)
        p.queue.put_nowait([tick(1.0)])
        p.queue.put_nowait([tick(2.0)])
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert sinks.published == [1.0, 2.0] and stats.batches == 1


def test_a_log_line_that_cannot_be_written_does_not_escape_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import mdgate._pipeline as pipeline_module

    class Broken:
        def error(self, *a: object, **kw: object) -> None:
            raise ValueError("I/O operation on closed file.")

    monkeypatch.setattr(pipeline_module, "log", Broken())
    p, sinks, stats = make()
    sinks.store_fails = True
    p.step([tick(1.0)])  # the store fails, and so does the line that says so
    assert stats.errors >= 1


async def test_a_step_wired_to_the_flusher_writes_its_clients_before_it_returns_without_a_loop_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mdgate._config import ServerSettings
    from mdgate._serve.fanout import ClientOutbox, Fanout
    from mdgate._serve.server import ClientServer
    from tests.unit.test_flusher import Ws, _idle, _settle

    server, fanout = ClientServer(ServerSettings()), Fanout(framed=True)
    ws, outbox = Ws(), ClientOutbox(10_000, 1000, framed=True)
    p = Pipeline(TickQueue(100), LatestTicks(), lambda batch: None, fanout.publish, PipelineStats())
    p.before, p.after = server.flusher.hold, server.flusher.flush
    async with anyio.create_task_group() as tg:
        fanout.set_instruments(outbox, frozenset({"FAKE:A"}))
        await _idle(server, ws, outbox, tg)  # type: ignore[arg-type]
        loop, scheduled = asyncio.get_running_loop(), []
        real = loop.call_soon

        def call_soon(callback: Any, *args: Any, **kw: Any) -> Any:
            scheduled.append(callback)
            return real(callback, *args, **kw)

        monkeypatch.setattr(loop, "call_soon", call_soon)
        p.step([tick(1.0)])
        assert len(ws.transport.writes) == 1  # in the step itself: no event-loop iteration between
        assert server.flusher.flush not in scheduled  # nor a flush left for the loop to find empty
        monkeypatch.undo()
        await _settle()
        assert len(ws.transport.writes) == 1
        tg.cancel_scope.cancel()


def test_every_step_ends_what_it_began_when_numbering_fails_or_holds_the_whole_batch() -> None:
    class Seqs:
        def __init__(self, fails: bool) -> None:
            self.fails = fails

        def status(self) -> dict[str, Any]:
            return {}

        def stamp(self, batch: list[Tick]) -> list[Tick]:
            if self.fails:
                raise RuntimeError("numbering bug")
            return []  # every tick held until its instrument's number is known

    calls: list[str] = []
    for fails in (True, False):
        sinks, stats = Sinks(), PipelineStats()
        p = Pipeline(TickQueue(100), LatestTicks(), sinks.write, sinks.publish, stats, Seqs(fails))  # type: ignore[arg-type]
        p.before, p.after = (lambda: calls.append("hold")), (lambda: calls.append("flush"))
        p.step([tick(1.0)])
        assert sinks.published == [] and stats.errors == int(fails)
    assert calls == ["hold", "flush", "hold", "flush"]


def test_a_failing_flush_is_counted_and_the_step_does_not_raise() -> None:
    sinks, stats = Sinks(), PipelineStats()
    p = Pipeline(TickQueue(100), LatestTicks(), sinks.write, sinks.publish, stats)

    def flush() -> None:
        raise RuntimeError("flusher bug")

    p.after = flush
    p.step([tick(1.0)])
    assert sinks.published == [1.0] and stats.errors == 1


def test_the_gateway_wires_its_pipeline_to_the_client_flusher() -> None:
    from mdgate._app import Gateway
    from mdgate._config import Settings
    from mdgate._providers.registry import load_registry

    gw = Gateway(Settings(), load_registry({}, entry_points=False))
    assert (gw.pipeline.before, gw.pipeline.after) == (gw.server.flusher.hold, gw.server.flusher.flush)
