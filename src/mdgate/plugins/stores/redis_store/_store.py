"""
:class:`RedisStore`: the one object the daemon sees, over the writer, reader and feed.

It builds each part from what that part needs and forwards to it:

* :class:`~mdgate.plugins.stores.redis_store._writer.BatchWriter`: the write
  buffer, bar building and the exactly-once batch writer with its
  reconnect loop (:meth:`RedisStore.write`, :meth:`RedisStore.run`);
* :class:`~mdgate.plugins.stores.redis_store._reader.StoreReader`: latest ticks,
  history and bars (:meth:`RedisStore.latest`, :meth:`RedisStore.history`,
  :meth:`RedisStore.bars`);
* :func:`~mdgate.plugins.stores.redis_store._feed.follow_feed`: the consumer API
  over the shared feed (:meth:`RedisStore.follow`).

The status document (:meth:`RedisStore.status`) is assembled here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from redis.exceptions import RedisError

from mdgate._config import RedisSettings, RuntimeSettings
from mdgate._errors import StoreUnavailable
from mdgate._histogram import Histogram
from mdgate._latest import LatestTicks
from mdgate._model import Bar, Tick
from mdgate.plugins.stores.redis_store._backfill import merge_bars
from mdgate.plugins.stores.redis_store._codec import fence_key
from mdgate.plugins.stores.redis_store._events import FeedEvents, follow_feed_events
from mdgate.plugins.stores.redis_store._feed import follow_feed
from mdgate.plugins.stores.redis_store._lua import RAISE_FENCE
from mdgate.plugins.stores.redis_store._mode import Mode
from mdgate.plugins.stores.redis_store._reader import StoreReader
from mdgate.plugins.stores.redis_store._seqread import last_seqs, ticks_after
from mdgate.plugins.stores.redis_store._url import RedisUrl
from mdgate.plugins.stores.redis_store._writer import IO_TIMEOUT, BatchWriter

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

__all__ = ["FeedEvents", "RedisStore"]


class RedisStore:
    """
    Stores ticks, latest ticks and one-minute bars in Redis, never blocking the feed.

    Args:
        url: the Redis URL (``redis://``, ``rediss://`` or ``unix://``).
        settings: the ``[redis]`` settings (batching, buffer, retention).
        runtime: backoff and shutdown timings.
        io_timeout: seconds a write or reply may take before the connection
            counts as dead (a hung server), is dropped and the batch retried.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        settings: RedisSettings | None = None,
        runtime: RuntimeSettings | None = None,
        *,
        io_timeout: float = IO_TIMEOUT,
    ) -> None:
        settings = settings or RedisSettings()
        self._url = RedisUrl(url)
        self._runtime = runtime or RuntimeSettings()
        self._io_timeout = io_timeout
        latest = LatestTicks()
        self._mode = Mode()
        self._writer = BatchWriter(
            self._url, settings, self._runtime, latest, io_timeout=io_timeout, mode=self._mode
        )
        self._reader = StoreReader(self._url, latest, self._mode)
        self._bars_on, self._bars_maxlen = settings.bars, settings.bars_maxlen
        self._partitions = settings.feed_partitions

    @property
    def cluster(self) -> bool | None:
        """Whether the server is a Redis Cluster (``None`` until the store first reached it)."""
        return self._mode.cluster

    def fence(self, tokens: Mapping[str, int]) -> None:
        """
        Set or update the fencing token of instruments (0: unfenced, as before any call).

        The batches packed from now on write a fenced instrument's ticks and bars through
        the fenced script, which keeps the highest token in ``mdgate:{I}:fence``: where a
        higher token is stored (another writer took the instrument over), they are refused,
        counted in :attr:`fenced`, settled and never retried (nor put into the feed).
        """
        tokens_now = self._writer.packer.tokens
        for inst, token in tokens.items():
            if token:
                tokens_now[inst] = int(token)
            else:
                tokens_now.pop(inst, None)

    async def _client(self) -> Any:
        try:
            return await self._reader.client()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {self._url.clean(str(exc))}") from exc

    # ------------------------------------------------------------------ write path

    def write(self, ticks: Sequence[Tick]) -> None:
        """Buffer ticks in order and build bars; never blocks, never raises."""
        self._writer.write(ticks)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, flush batches and reconnect with backoff until cancelled."""
        task_status.started()
        await self._writer.run()

    # ------------------------------------------------------------------ reads

    async def latest(self, instruments: Sequence[str]) -> dict[str, Tick]:
        """
        Return the latest tick of each instrument that has one.

        Reads the ``:last`` hashes (one pipelined ``HGETALL`` each) and
        merges what this process has seen but not yet flushed; while Redis
        is down, answers from this process's own ticks only.
        """
        return await self._reader.latest(instruments, redis_up=self._writer.state == "ok")

    async def history(
        self,
        instrument: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Tick]:
        """
        Return stored ticks of ``instrument`` by stream ID time, oldest first.

        See :meth:`~mdgate.plugins.stores.redis_store._reader.StoreReader.history`.

        Raises:
            StoreUnavailable: when Redis cannot be read.
        """
        return await self._reader.history(instrument, since_ms=since_ms, until_ms=until_ms, limit=limit)

    async def bars(
        self,
        instrument: str,
        interval: str = "1m",
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Bar]:
        """
        Return closed bars of ``interval`` (``1m``, ``5m``, ``15m``), oldest first.

        See :meth:`~mdgate.plugins.stores.redis_store._reader.StoreReader.bars`.

        Raises:
            ValueError: for an unknown interval.
            StoreUnavailable: when Redis cannot be read.
        """
        return await self._reader.bars(
            instrument, interval, since_ms=since_ms, until_ms=until_ms, limit=limit
        )

    async def merge_bars(self, instrument: str, bars: Sequence[Bar]) -> int:
        """
        Insert backfilled one-minute bars for minutes that have no bar yet; return how many were added.

        Stored (live) bars win; the stream stays ordered by minute, one entry
        per minute (one atomic script on a connection of its own, see
        :mod:`~mdgate.plugins.stores.redis_store._backfill`).

        Raises:
            StoreUnavailable: when Redis cannot be written, or the store keeps no bars.
        """
        if not self._bars_on:
            raise StoreUnavailable("redis: this store keeps no bars ([redis] bars = false)")
        return await merge_bars(await self._client(), self._url, self._bars_maxlen, instrument, bars)

    async def last_seqs(self, instruments: Sequence[str]) -> dict[str, int]:
        """
        Return the ``seq`` of each instrument's newest stored tick (absent: none stored):
        where a restarted gateway continues numbering.

        Raises:
            StoreUnavailable: when Redis cannot be read.
        """
        return await last_seqs(await self._client(), self._url, instruments)

    async def ticks_after(
        self, instrument: str, after: int, upto: int, limit: int,
    ) -> tuple[list[Tick], bool]:
        """
        Return the stored ticks of ``instrument`` with ``after < seq <= upto`` (the
        newest ``limit`` at most), oldest first, and whether they reach back to ``after + 1``.

        Raises:
            StoreUnavailable: when Redis cannot be read.
        """
        return await ticks_after(await self._client(), self._url, instrument, after, upto, limit)

    async def settled(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the ticks written so far are stored or dropped."""
        return await self._writer.settled(timeout)

    def follow(
        self, last_id: str = "$", *, count: int = 1000, block_ms: int = 1000
    ) -> AsyncGenerator[tuple[str, list[Tick]], None]:
        """
        Follow the shared ``mdgate:feed`` stream: every gateway's ticks.

        Yields ``(id, ticks)`` for each read: the ticks appended after
        ``last_id`` (``"$"``: from now; ``"0"``: from the oldest kept), in
        feed order, and the ID of the last one, from which a later call
        resumes without loss (within the feed's retention). Uses its own
        connection (``XREAD BLOCK``); while Redis is unreachable it retries
        with capped, jittered backoff and resumes from the last ID read.
        Runs until the caller stops iterating or the task is cancelled; close
        it with ``contextlib.aclosing`` to release its connection at once.
        """
        return follow_feed(
            self._url, self._runtime, self._io_timeout, last_id, count=count, block_ms=block_ms
        )

    def follow_feed_events(
        self, last_ids: Mapping[str, str] | None = None, *, count: int = 1000, block_ms: int = 1000
    ) -> AsyncGenerator[FeedEvents, None]:
        """
        Follow the feed for the fan-out tier: every gateway's ticks and gap entries.

        On a single Redis ``mdgate:feed``; on a Redis Cluster every partition
        ``mdgate:feed:{0}`` .. ``{N-1}`` (a task per partition, merged). ``last_ids``
        maps a feed stream to the ID to read after (absent: from now); each
        :class:`FeedEvents` carries in ``ids`` the last ID it read per stream. Reconnects
        with backoff and resumes from the last IDs read; close it with
        ``contextlib.aclosing`` (its connections close with it).
        """
        return follow_feed_events(
            self._url, self._runtime, self._io_timeout, self._mode, self._partitions, last_ids,
            count=count, block_ms=block_ms,
        )

    # ------------------------------------------------------------------ counters and status

    @property
    def written(self) -> int:
        """Ticks acknowledged as stored by Redis."""
        return self._writer.written

    @property
    def dropped(self) -> int:
        """Ticks dropped because the buffer was full."""
        return self._writer.dropped

    @property
    def duplicates(self) -> int:
        """Ticks skipped by Redis because their ID was already stored (retries)."""
        return self._writer.duplicates

    def forget(self, instruments: Iterable[str]) -> None:
        """
        Forget the stream ID counters of ``instruments``: the next batch holding one of them
        asks Redis for its stream's last ID first (another writer may have written it since:
        a slot that moved to this instance, or back). Call it with none of their ticks unstored.
        """
        ids = self._writer.packer.ids
        for inst in instruments:
            ids.pop(inst, None)

    async def raise_fence(self, tokens: Mapping[str, int]) -> None:
        """
        Fence instruments now: :meth:`fence` them and write each token to ``mdgate:{I}:fence``
        (never lowering a higher one), so that a writer with an older token is refused from
        this moment on, not only once this store has written the instrument.

        Raises:
            StoreUnavailable: when Redis cannot be written.
        """
        self.fence(tokens)
        live = {i: t for i, t in tokens.items() if t}
        if not live:
            return
        client = await self._client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for inst, token in live.items():
                    pipe.eval(RAISE_FENCE, 1, fence_key(inst), str(token))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {self._url.clean(str(exc))}") from exc

    @property
    def fenced(self) -> int:
        """Ticks refused by a fence: a writer with a newer token owns their instrument."""
        return self._writer.fenced

    @property
    def bars_written(self) -> int:
        """Closed bars stored."""
        return self._writer.bars_written

    @property
    def bars_dropped(self) -> int:
        """Closed bars dropped because the bar buffer was full."""
        return self._writer.bars_dropped

    @property
    def batches(self) -> int:
        """Batches acknowledged by Redis."""
        return self._writer.batches

    @property
    def failures(self) -> int:
        """Failed batch attempts (each followed by a backoff and a retry)."""
        return self._writer.failures

    def record_gap(self, instrument: str, gap: Mapping[str, object]) -> None:
        """Keep a possible hole of ``instrument`` in ``mdgate:{I}:gaps`` (written in the background)."""
        self._writer.add_gap(instrument, gap)

    @property
    def write_seconds(self) -> Histogram:
        """Seconds each batch took from its first send to Redis's acknowledgement (``/metrics``)."""
        return self._writer.write_seconds

    def status(self) -> dict[str, Any]:
        """Return the store's state for ``/status`` (no secrets)."""
        w = self._writer
        return {
            "kind": self.kind,
            "state": w.state,
            "buffered": w.buffered(),
            "buffer_max": w.buffer_max,
            "dropped": w.dropped,
            "written": w.written,
            "duplicates": w.duplicates,
            "fenced": w.fenced,
            "cluster": self._mode.cluster,
            "bars_written": w.bars_written,
            "gaps_written": w.gaps_written,
            "bars_dropped": w.bars_dropped,
            "late_ticks": w.builder.late if w.builder is not None else 0,
            "batches": w.batches,
            "failures": w.failures,
            "rejected": w.packer.rejected,
            "last_error": w.last_error,
            "url": self._url.masked,
        }

    async def aclose(self) -> None:
        """Flush what is buffered (bounded by the shutdown timeout) and close."""
        if self._writer.closed:
            return
        try:
            await self._writer.aclose()
        finally:
            # Also when the caller's own shutdown deadline cancels us.
            with anyio.CancelScope(shield=True):
                await self._reader.aclose()
