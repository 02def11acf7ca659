"""
The tick loop: queue -> latest -> store + fan-out, one batch at a time.

Each batch the queue hands over (everything queued in one event-loop
iteration, across connections: :meth:`TickQueue.set_consumer`)
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

import contextlib
from collections.abc import Callable, Sequence

import anyio
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
        self._every = EveryLog()
        #: Called at the start and at the end of every step, if set (the client flusher's
        #: hold and flush: a batch's clients are written in its step).
        self.before: Callable[[], None] | None = None
        self.after: Callable[[], None] | None = None

    async def run(self) -> None:
        """Take and hand on batches (once per event-loop iteration: :class:`TickQueue`) until cancelled."""
        self.queue.set_consumer(self.step)
        try:
            await anyio.sleep_forever()
        finally:
            self.queue.set_consumer(None)

    def step(self, batch: list[Tick]) -> None:
        """Hand on one batch: latest table, numbering, store, fan-out; never raises."""
        stats = self.stats
        try:
            before = self.before
            if before is not None:
                before()
            try:
                self.latest.advance(batch)
            except Exception as exc:  # a malformed tick that got past the reader's check
                batch, bad, _ = screen(batch, float("inf"))  # the reader dropped future ticks
                stats.errors += 1
                self._report("bad_tick", "pipeline_bad_tick", error=repr(exc)[:200],
                             dropped=bad[0] if bad else 0)
                self.latest.advance(batch)
            # numbered once screened (a tick that cannot be numbered is not numbered at all: no
            # number skipped); an instrument's first ticks may be held until its number is known
            batch = self.seqs.stamp(batch)
            if not batch:
                return
            try:
                self.write(batch)
            except Exception as exc:  # a store bug must not stop the feed (nor flood the log)
                stats.errors += 1
                self._report("store", "store_write_failed", error=repr(exc)[:200])
            try:
                self.publish(batch)
            except Exception as exc:  # neither may a fan-out bug
                stats.errors += 1
                self._report("fanout", "fanout_publish_failed", error=repr(exc)[:200])
            stats.latency.observe(batch)
            stats.ticks += len(batch)
            stats.batches += 1
        except Exception as exc:  # numbering, the stats or a log line: contained like the rest
            stats.errors += 1
            self._report("pipeline", "pipeline_step_failed", error=repr(exc)[:200])
        finally:  # whatever happened above, what was published is written and a hold ends
            after = self.after
            if after is not None:
                try:
                    after()
                except Exception as exc:
                    stats.errors += 1
                    self._report("fanout", "client_flush_failed", error=repr(exc)[:200])

    def _report(self, key: str, event: str, **fields: object) -> None:
        """Log a contained failure (once per 10 s per kind); a line that cannot be written is lost."""
        with contextlib.suppress(Exception):
            self._every.log(key, log.error, event, **fields)
