"""
The tick loop: queue -> latest -> store + fan-out, one batch at a time.

Each batch the queue hands over (everything queued, across connections)
moves the latest-tick table on (:class:`~mdgate._latest.LatestTicks`), is
numbered (``seq`` per instrument, :class:`~mdgate._seq.SeqBook`: the first
ticks of an instrument new to the process come out of a later batch, once
the store said where its numbering goes on), is written to the store
(buffered; the store's own task does the I/O) and is published to the
clients (encoded once per subscription set). No hook is called per tick.
A failure in any step is contained: counted (:class:`~mdgate._stats.PipelineStats`),
logged at most once per 10 s per kind, and the feed goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from mdgate._latest import LatestTicks
from mdgate._model import Tick
from mdgate._providers.checks import screen
from mdgate._queue import TickQueue
from mdgate._ratelog import EveryLog
from mdgate._seq import SeqBook
from mdgate._stats import PipelineStats

__all__ = ["Pipeline"]

log = structlog.get_logger(__name__)


class Pipeline:
    """Moves batches from the queue to the latest table, the store and the fan-out."""

    def __init__(
        self, queue: TickQueue, latest: LatestTicks, write: Callable[[Sequence[Tick]], None],
        publish: Callable[[list[Tick]], None], stats: PipelineStats, seqs: SeqBook | None = None,
    ) -> None:
        """
        Args:
            queue: where the provider connections put their batches.
            latest: the latest-tick table the batches move on.
            write: the store's ``write``.
            publish: the fan-out's ``publish``.
            stats: where ticks, batches and contained errors are counted.
            seqs: numbers the ticks (default: a book that starts every instrument at 1).
        """
        self.queue = queue
        self.latest = latest
        self.write = write
        self.publish = publish
        self.stats = stats
        self.seqs = seqs or SeqBook()
        stats.numbering = self.seqs.status

    async def run(self) -> None:
        """Take and hand on batches until cancelled."""
        get = self.queue.get_batch
        advance = self.latest.advance
        store_write = self.write
        publish = self.publish
        stats = self.stats
        latency = stats.latency.observe
        every = EveryLog()
        stamp = self.seqs.stamp
        while True:
            batch = await get()
            try:
                advance(batch)
            except Exception as exc:  # a malformed tick that got past the reader's check
                batch, bad, _ = screen(batch, float("inf"))  # the reader dropped future ticks
                stats.errors += 1
                every.log("bad_tick", log.error, "pipeline_bad_tick", error=repr(exc)[:200],
                          dropped=bad[0] if bad else 0)
                advance(batch)
            # numbered once screened (a tick that cannot be numbered is not numbered at all: no
            # number skipped); an instrument's first ticks may be held until its number is known
            batch = stamp(batch)
            if not batch:
                continue
            try:
                store_write(batch)
            except Exception as exc:  # a store bug must not stop the feed (nor flood the log)
                stats.errors += 1
                every.log("store", log.error, "store_write_failed", error=repr(exc)[:200])
            try:
                publish(batch)
            except Exception as exc:  # neither may a fan-out bug
                stats.errors += 1
                every.log("fanout", log.error, "fanout_publish_failed", error=repr(exc)[:200])
            latency(batch)
            stats.ticks += len(batch)
            stats.batches += 1
