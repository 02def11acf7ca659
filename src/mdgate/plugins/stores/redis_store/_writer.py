"""
The write side of the Redis store: the buffer, bar building and the batch writer.

:meth:`BatchWriter.write` only appends to an in-order bounded buffer and builds one-minute
bars; :meth:`BatchWriter.run` sends the buffer in batches of up to ``batch_max`` ticks, each
batch one ``EVALSHA`` of :data:`~mdgate.plugins.stores.redis_store._lua.WRITE_BATCH` (up to
:data:`PIPELINE_DEPTH` in flight), packed with hiredis. When Redis is unreachable the batches
in flight are kept (with their stream IDs) and re-sent unchanged after a reconnect with
capped, fully jittered backoff; the script skips IDs already stored, so a retry never
duplicates. Buffer overflow drops the oldest ticks, counted and logged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from mdgate._backoff import Backoff
from mdgate._config import RedisSettings, RuntimeSettings
from mdgate._histogram import SECONDS_BOUNDS, Histogram
from mdgate._latest import LatestTicks
from mdgate._model import Bar, Tick, now_ms
from mdgate.plugins.stores.bars import MINUTE_MS, BarBuilder
from mdgate.plugins.stores.redis_store._codec import FEED_KEY, BatchPacker, gaps_key, ticks_key
from mdgate.plugins.stores.redis_store._lua import LAST_IDS, LAST_IDS_SHA, WRITE_BATCH, WRITE_BATCH_FENCED
from mdgate.plugins.stores.redis_store._mode import Mode
from mdgate.plugins.stores.redis_store._url import RedisUrl

if TYPE_CHECKING:
    from mdgate.plugins.stores.redis_store._cluster import ClusterBatch, ClusterIO

__all__ = ["BAR_GRACE_MS", "IO_TIMEOUT", "PIPELINE_DEPTH", "BatchWriter"]

log = structlog.get_logger("mdgate.plugins.stores.redis_store")

#: Seconds allowed for one batch round trip before the connection counts as dead.
IO_TIMEOUT: Final = 10.0
#: Batches sent before the reply of the first is read.
PIPELINE_DEPTH: Final = 2
#: Gaps held while Redis is down (the oldest are dropped past it), and entries kept per ``:gaps`` stream.
GAPS_BUFFER: Final = 10_000
GAPS_MAXLEN: Final = 10_000
#: Seconds without work after which the writer PINGs (keeps ``state`` honest).
IDLE_PING: Final = 1.0
#: Seconds between two ``redis_buffer_overflow`` log lines.
DROP_LOG_INTERVAL: Final = 10.0
#: Why the packer left a tick out (logged with ``redis_ticks_rejected``).
REJECT_REASON: Final = 'instrument or provider holds one of ,"[]\\ or a control char'
#: Grace after a minute's end before the wall clock closes its bar.
BAR_GRACE_MS: Final = 2_000


@dataclass(slots=True)
class _Batch:
    """A packed batch: re-sent unchanged until Redis acknowledges it."""

    data: bytes
    ticks: int
    bars: int
    #: Monotonic seconds when the batch was first sent.
    sent_at: float


class BatchWriter:
    """
    Buffers ticks and bars and writes them to Redis in batches, exactly once.

    Args:
        url: the store's Redis URL.
        settings: the ``[redis]`` settings (batching, buffer, retention, bars).
        runtime: backoff and shutdown timings.
        latest: the table of this process's latest tick per instrument,
            updated by :meth:`write` (the reads merge it).
        io_timeout: seconds a write or reply may take before the connection
            counts as dead (a hung server), is dropped and the batch retried.
        mode: single Redis or Redis Cluster, shared with the reader (asked on the first connect).
    """

    def __init__(
        self,
        url: RedisUrl,
        settings: RedisSettings,
        runtime: RuntimeSettings,
        latest: LatestTicks,
        *,
        io_timeout: float = IO_TIMEOUT,
        mode: Mode | None = None,
    ) -> None:
        self._url = url
        self._settings = s = settings
        self._runtime = runtime
        self._io_timeout = io_timeout
        self._buf: deque[Tick] = deque(maxlen=s.buffer_max)
        self._bars: deque[Bar] = deque(maxlen=max(s.buffer_max // 10, 10_000))
        #: Gaps waiting to be written to their instrument's ``:gaps`` stream (the oldest go first).
        self._gaps: deque[tuple[str, tuple[str, ...]]] = deque(maxlen=GAPS_BUFFER)
        self.gaps_written = 0  #: Gap entries written.
        #: Instrument -> [first, last] ``ts`` of ticks pushed out of the full buffer (lost to history).
        self._lost: dict[str, list[int]] = {}
        self._latest = latest
        #: Builds one-minute bars (``None`` when ``[redis] bars`` is off).
        self.builder: BarBuilder | None = BarBuilder() if s.bars else None
        #: Packs batches; owns the per-instrument ID counters.
        self.packer = BatchPacker(s.stream_maxlen, s.feed_maxlen, s.bars_maxlen)
        self._inflight: deque[_Batch] = deque()
        self._wake = anyio.Event()
        self._lock = anyio.Lock(fast_acquire=True)
        self._wpool = ConnectionPool.from_url(
            url.url,
            socket_timeout=None,
            socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._conn: AbstractConnection | None = None
        #: ``ok`` once Redis answered, ``down`` after a failure (and at start).
        self.state = "down"
        #: The last failure, with credentials masked.
        self.last_error: str | None = None
        self._drop_logged = 0.0
        #: Set by :meth:`aclose`: the background loops stop.
        self.closed = False
        self._rejected_logged = 0
        #: Ticks acknowledged as stored by Redis.
        self.written = 0
        self.dropped = 0  #: Ticks dropped because the buffer was full.
        #: Ticks skipped by Redis because their ID was already stored (retries).
        self.duplicates = 0
        #: Closed bars stored / dropped because the bar buffer was full.
        self.bars_written = 0
        self.bars_dropped = 0
        #: Batches acknowledged by Redis.
        self.batches = 0
        #: Seconds from a batch's first send to Redis's acknowledgement (retries included).
        self.write_seconds = Histogram(SECONDS_BOUNDS)
        #: Failed batch attempts (each followed by a backoff and a retry).
        self.failures = 0
        #: Ticks handed to :meth:`write`, and of those the ones settled (acknowledged or dropped).
        self.accepted = 0
        self.settled_ticks = 0
        self._progress = anyio.Event()
        self.mode = mode or Mode()
        #: The cluster connections (once the server said it is a Redis Cluster).
        self.cluster: ClusterIO | None = None
        #: Ticks refused by a fence (a writer with a newer token wrote the instrument).
        self.fenced = 0
        self._fence_logged = 0.0
        #: 1 once the first queued gap is in its ``:gaps`` stream (its feed entry may still be due).
        self.gap_stage = 0
        # the parts the cluster path (_cluster.ClusterIO) works on
        self.buf, self.bars, self.gaps, self.settings = self._buf, self._bars, self._gaps, s
        self.gaps_maxlen = GAPS_MAXLEN

    # ------------------------------------------------------------------ write path

    def write(self, ticks: Sequence[Tick]) -> None:
        """Buffer ticks in order and build bars; never blocks, never raises."""
        try:
            self.accepted += len(ticks)
            buf = self._buf
            before = len(buf)
            over = before + len(ticks) - self._settings.buffer_max
            if over > 0:  # the oldest are pushed out: remember what history loses
                pushed = [buf[i] for i in range(min(over, before))]
                self._note_lost(pushed + list(ticks[:max(0, over - before)]))
            buf.extend(ticks)
            lost = before + len(ticks) - len(buf)
            if lost:
                self._on_drop(lost)
            latest = self._latest
            builder = self.builder
            if builder is not None:
                add, bars, seen = builder.add, self._bars, latest.table
                for t in ticks:
                    if t.instrument not in seen:  # rare: once per instrument and process
                        self._first_seen(t)
                        latest.advance((t,))
                    bar = add(t)
                    if bar is not None:
                        self._add_bar(bar, bars)
            latest.advance(ticks)
            if before == 0 or len(buf) >= self._settings.batch_max:
                self._wake.set()
        except Exception as exc:  # the feed must never break because of the store
            log.error("redis_store_write_failed", error=repr(exc))

    def _first_seen(self, t: Tick) -> None:
        # The first bar(s) of an instrument in this process may cover a minute
        # a predecessor (a restarted gateway) already stored ticks of: the
        # script rebuilds those from every stored tick of the minute.
        minute = max(t.ts - t.ts % MINUTE_MS, t.recv_ts - t.recv_ts % MINUTE_MS)
        self.packer.rebuild_until[t.instrument] = minute

    def _add_bar(self, bar: Bar, bars: deque[Bar]) -> None:
        if len(bars) == bars.maxlen:
            self.bars_dropped += 1
        bars.append(bar)

    def _note_lost(self, ticks: Sequence[Tick]) -> None:
        """Widen each instrument's range of ticks lost to history (a ``store`` gap once Redis is back)."""
        lost = self._lost
        for t in ticks:
            span = lost.get(t.instrument)
            if span is None:
                lost[t.instrument] = [t.ts, t.ts]
            else:
                span[0], span[1] = min(span[0], t.ts), max(span[1], t.ts)

    def _on_drop(self, n: int) -> None:
        self.dropped += n
        self._settle(n)
        now = time.monotonic()
        if now - self._drop_logged >= DROP_LOG_INTERVAL:
            self._drop_logged = now
            log.warning(
                "redis_buffer_overflow",
                dropped_total=self.dropped,
                buffer_max=self._settings.buffer_max,
                state=self.state,
            )

    def _settle(self, n: int) -> None:
        self.settled_ticks += n
        self._progress.set()
        self._progress = anyio.Event()

    async def settled(self, timeout: float) -> bool:
        """
        Wait (at most ``timeout`` seconds) until every tick handed to :meth:`write`
        before this call is acknowledged by Redis or dropped; return whether it is.
        """
        mark = self.accepted
        with anyio.move_on_after(timeout):
            while self.settled_ticks < mark:
                await self._progress.wait()
        return self.settled_ticks >= mark

    @property
    def buffer_max(self) -> int:
        """Ticks the buffer holds before the oldest are dropped (``[redis] buffer_max``)."""
        return self._settings.buffer_max

    def buffered(self) -> int:
        """Return the ticks not yet acknowledged: buffered plus in flight."""
        n = len(self._buf) + sum(b.ticks for b in self._inflight)
        return n + self.cluster.buffered() if self.cluster is not None else n

    # ------------------------------------------------------------------ background

    async def run(self) -> None:
        """Connect, flush batches and reconnect with backoff until cancelled or closed."""
        async with anyio.create_task_group() as tg:
            if self.builder is not None:
                tg.start_soon(self._bar_clock)
            await self._loop()

    async def _bar_clock(self) -> None:
        builder = self.builder
        assert builder is not None
        while not self.closed:
            await anyio.sleep(1.0)
            closed = builder.flush(now_ms(), BAR_GRACE_MS)
            if closed:
                for bar in closed:
                    self._add_bar(bar, self._bars)
                self._wake.set()

    def has_work(self) -> bool:
        """Return whether ticks or bars wait to be written (buffered or in flight)."""
        return bool(self._buf or self._bars or self._inflight or self._gaps or (
            self.cluster is not None and self.cluster.pending))

    def add_gap(self, instrument: str, fields: Mapping[str, object]) -> None:
        """Queue a gap for ``instrument``'s ``:gaps`` stream (written with the next batch)."""
        flat = tuple(str(x) for kv in fields.items() for x in kv)
        self._gaps.append((instrument, flat))
        self._wake.set()

    async def _wait(self, delay: float, *, fill: bool = False) -> None:
        # fill: a partial batch waits the whole delay, also when its first tick came during the
        # last round trip (else a steady trickle travels a tick or two per round trip)
        if fill and self._wake.is_set():
            self._wake = anyio.Event()
        with anyio.move_on_after(delay):
            await self._wake.wait()
        if self._wake.is_set():
            self._wake = anyio.Event()

    async def _loop(self) -> None:
        rt = self._runtime
        backoff = Backoff(rt.backoff_initial, rt.backoff_max)
        while not self.closed:
            try:
                if not self.has_work():
                    if self.state == "ok":
                        await self._wait(IDLE_PING)
                    if not self.has_work():
                        await self._ping()
                        backoff.reset()
                        continue
                if not self._inflight and len(self._buf) < self._settings.batch_max:
                    await self._wait(self._settings.batch_interval, fill=True)
                await self.flush()
                backoff.reset()
            except Exception as exc:
                # Redis errors, OS errors and timeouts are expected; anything
                # else is a bug, but the store keeps its buffer and retries
                # rather than dying and taking the feed's storage down.
                if not isinstance(exc, RedisError | OSError | TimeoutError):
                    log.exception("redis_store_error")
                self.failed(exc)
                # Full jitter, capped: the first retry comes within backoff_initial.
                await anyio.sleep(backoff.next())

    def failed(self, exc: BaseException) -> None:
        """Count a failed attempt, mark the store down and log it (once per new error)."""
        self.failures += 1
        timeout = f"no answer within {self._io_timeout:g} s" if isinstance(exc, TimeoutError) else ""
        text = str(exc) or timeout
        err = self._url.clean(f"{type(exc).__name__}: {text}")
        if self.state != "down" or err != self.last_error:
            log.warning("redis_store_down", url=self._url.masked, error=err, buffered=self.buffered())
        self.state = "down"
        self.last_error = err

    def _ok(self) -> None:
        if self.state != "ok":
            log.info("redis_store_up", url=self._url.masked, buffered=self.buffered())
        self.state = "ok"
        if self._lost:  # what the outage cost the history: one gap per instrument
            for instrument, (first, last) in self._lost.items():
                self.add_gap(instrument, {"from_ts": first, "to_ts": last, "reason": "store"})
            self._lost.clear()

    # ------------------------------------------------------------------ connection

    async def _connection(self) -> AbstractConnection:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._wpool.make_connection()  # type: ignore[no-untyped-call]
        if not conn.is_connected:
            try:
                # The handshake (AUTH, SELECT...) reads replies without a
                # socket timeout: bound it, a hung server must not hang us.
                with anyio.fail_after(self._io_timeout):
                    await conn.connect()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.disconnect(nowait=True)
                raise
            if self.mode.cluster is None:  # once: a single Redis or a Redis Cluster?
                info = await self._roundtrip(conn, ("INFO", "cluster"), packed=False)
                if self.mode.learn(info):  # the cluster client takes over
                    await conn.disconnect(nowait=True)
                    return conn
            fenced = (WRITE_BATCH_FENCED,) if self.packer.tokens else ()
            for script in (WRITE_BATCH, LAST_IDS, *fenced):
                await self._roundtrip(conn, ("SCRIPT", "LOAD", script), packed=False)
        return conn

    def _cluster_io(self) -> ClusterIO:
        if self.cluster is None:
            from mdgate.plugins.stores.redis_store._cluster import ClusterIO

            s = self._settings
            self.cluster = ClusterIO(self._url, s.feed_partitions, s.feed_maxlen, self._io_timeout)
        return self.cluster

    async def _roundtrip(
        self,
        conn: AbstractConnection,
        cmd: bytes | tuple[Any, ...],
        *,
        packed: bool = True,
    ) -> Any:
        data = cmd if packed else conn.pack_command(*cmd)
        try:
            with anyio.fail_after(self._io_timeout):
                await conn.send_packed_command(data, check_health=False)
                return await conn.read_response()
        except BaseException as exc:
            if not isinstance(exc, RedisError) or _is_connection_error(exc):
                with anyio.CancelScope(shield=True):
                    await conn.disconnect(nowait=True)
            raise

    async def _ping(self) -> None:
        async with self._lock:
            conn = None if self.mode.cluster else await self._connection()
            if conn is None or self.mode.cluster:
                await self._cluster_io().ping()
            else:
                await self._roundtrip(conn, ("PING",), packed=False)
            self._ok()

    # ------------------------------------------------------------------ batches

    async def flush(self) -> None:
        """
        Send everything buffered, keeping up to :data:`PIPELINE_DEPTH` batches
        in flight (the next batch is packed while Redis runs the previous
        one). A batch leaves ``_inflight`` only once Redis acknowledged it;
        after any error the connection is dropped and every batch still in
        flight is re-sent, in order, on the next attempt (retries are
        idempotent: the script skips IDs already stored).
        """
        for attempt in range(2):
            try:
                async with self._lock:
                    if self.mode.cluster is None:
                        await self._connection()
                    if self.mode.cluster:
                        await self._cluster_io().flush(self)
                        return
                    await self._pump()
                    if self._gaps:
                        await self._write_gaps()
                return
            except NoScriptError:
                # Scripts flushed (SCRIPT FLUSH, or a new server behind the
                # address): the dropped connection reloads them on connect.
                if attempt:
                    raise

    async def _write_gaps(self) -> None:
        """Write the queued gaps, oldest first; one that fails stays queued (retried with the next flush)."""
        conn = await self._connection()
        fmax = self._settings.feed_maxlen
        while self._gaps:
            instrument, flat = self._gaps[0]
            if not self.gap_stage:
                cmd = ("XADD", gaps_key(instrument), "MAXLEN", "~", str(GAPS_MAXLEN), "*", *flat)
                await self._roundtrip(conn, cmd, packed=False)
                self.gap_stage = 1
            if fmax > 0:  # and into the feed, for its followers (follow_feed_events)
                cmd = ("XADD", FEED_KEY, "MAXLEN", "~", str(fmax), "*", "type", "gap",
                       "instrument", instrument, *flat)
                await self._roundtrip(conn, cmd, packed=False)
            self.gap_written()

    def gap_written(self) -> None:
        """The first queued gap is written (its ``:gaps`` entry and, feed on, its feed entry)."""
        self._gaps.popleft()
        self.gap_stage = 0
        self.gaps_written += 1

    async def _pump(self) -> None:
        conn = await self._connection()
        pending = self._inflight
        io = self._io_timeout  # one scope, its deadline moved before each send and read (cheaper)
        scope = anyio.CancelScope()
        try:
            with scope:
                for batch in pending:  # kept from a failed attempt: re-send first
                    scope.deadline = anyio.current_time() + io
                    await self._send(conn, batch.data)
                # One partial batch per call (the caller waited batch_interval for
                # it); beyond that only full ones, so that a slow trickle of ticks
                # still travels in batches rather than one round trip per tick.
                partial = True
                full = self._settings.batch_max
                while True:
                    while len(pending) < PIPELINE_DEPTH and (
                        len(self._buf) >= full or (partial and (self._buf or self._bars))
                    ):
                        partial = False
                        if self._next_ticks():  # instruments to seed first
                            if pending:
                                break  # read the replies first: seeding is a round trip
                            await self._seed(conn)
                        batch = self._take_batch()
                        pending.append(batch)
                        scope.deadline = anyio.current_time() + io
                        await self._send(conn, batch.data)
                    if not pending:
                        return
                    scope.deadline = anyio.current_time() + io
                    reply = await conn.read_response()
                    self._acknowledged(pending.popleft(), reply)
            if scope.cancelled_caught:
                raise TimeoutError
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
            raise

    async def _send(self, conn: AbstractConnection, data: bytes) -> None:
        await conn.send_packed_command(data, check_health=False)

    def _acknowledged(self, batch: _Batch, reply: Any) -> None:
        self.count_reply(reply)
        self._batch_done(batch.ticks, batch.sent_at)

    def acknowledged_cluster(self, batch: ClusterBatch) -> None:
        """A cluster batch is stored and replicated (its replies were counted as they came)."""
        self._batch_done(batch.ticks, batch.sent_at)

    def count_reply(self, reply: Any) -> None:
        """Count a ``WRITE_BATCH`` reply (``added, skipped, bars, bars skipped[, fenced, refused]``)."""
        self.written += int(reply[0])
        self.duplicates += int(reply[1])
        self.bars_written += int(reply[2])
        if len(reply) > 4 and int(reply[4]):
            self.fenced += int(reply[4])
            now = time.monotonic()
            if now - self._fence_logged >= DROP_LOG_INTERVAL:
                self._fence_logged = now
                log.warning("redis_ticks_fenced", fenced_total=self.fenced,
                            reason="a writer with a newer fencing token owns the instrument")

    def _batch_done(self, ticks: int, sent_at: float) -> None:
        self.write_seconds.observe(time.monotonic() - sent_at)
        self.batches += 1
        self._settle(ticks)
        if self.packer.rejected != self._rejected_logged:
            self._rejected_logged = self.packer.rejected
            log.error(
                "redis_ticks_rejected",
                rejected_total=self.packer.rejected,
                reason=REJECT_REASON,
            )
        self._ok()

    def _next_ticks(self) -> list[str]:
        n = min(len(self._buf), self._settings.batch_max)
        return self.packer.unknown(t.instrument for t in islice(self._buf, n))

    async def _seed(self, conn: AbstractConnection) -> None:
        # Seed the ID counters of instruments new to this process from Redis
        # before any of their ticks leave the buffer: a restarted gateway
        # continues above its predecessor's IDs.
        while new := self._next_ticks():
            keys = [ticks_key(i) for i in new]
            cmd = ("EVALSHA", LAST_IDS_SHA, len(keys), *keys)
            try:
                ids = await self._roundtrip(conn, cmd, packed=False)
            except NoScriptError:
                await self._roundtrip(conn, ("SCRIPT", "LOAD", LAST_IDS), packed=False)
                ids = await self._roundtrip(conn, cmd, packed=False)
            for inst, last in zip(new, ids, strict=True):
                self.packer.seed(inst, last)

    def _take_batch(self) -> _Batch:
        # No await between the seeding check and here: the ticks taken are
        # exactly the ones checked.
        buf = self._buf
        ticks = [buf.popleft() for _ in range(min(len(buf), self._settings.batch_max))]
        bars = list(self._bars)
        self._bars.clear()
        return _Batch(self.packer.pack(ticks, bars), len(ticks), len(bars), time.monotonic())

    # ------------------------------------------------------------------ shutdown

    async def aclose(self) -> None:
        """Flush what is buffered (bounded by the shutdown timeout) and close the connection."""
        if self.closed:
            return
        self.closed = True
        deadline = max(0.5, self._runtime.shutdown_timeout - 1.0)
        try:
            with anyio.move_on_after(deadline):
                while self.has_work():
                    try:
                        await self.flush()
                    except Exception as exc:
                        self.failed(exc)
                        await anyio.sleep(0.1)
        finally:
            # Also when the caller's own shutdown deadline cancels us.
            left = self.buffered()
            if left:
                log.warning("redis_store_closed_with_buffer", lost=left, url=self._url.masked)
            with anyio.CancelScope(shield=True):
                if self._conn is not None:
                    await self._conn.disconnect(nowait=True)
                await self._wpool.aclose()
                if self.cluster is not None:
                    await self.cluster.aclose()


def _is_connection_error(exc: RedisError) -> bool:
    from redis.exceptions import ConnectionError, TimeoutError

    return isinstance(exc, ConnectionError | TimeoutError)
