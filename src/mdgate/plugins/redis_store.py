"""
The Redis tick store (used when ``[redis] url`` / ``MDGATE_REDIS_URL`` is set).

Layout (see ``docs/storage.md``): per instrument a stream
``mdgate:{INSTR}:ticks``, a hash ``mdgate:{INSTR}:last`` and a stream
``mdgate:{INSTR}:bars:1m``, plus the shared stream ``mdgate:feed`` that
other services follow with ``XREAD``.

:meth:`RedisStore.write` only appends to an in-order bounded buffer and
builds one-minute bars; the background task (:meth:`RedisStore.run`) sends
the buffer in batches of up to ``batch_max`` ticks, each batch one
``EVALSHA`` (up to two in flight), packed with hiredis. When Redis is
unreachable the batches in flight are kept (with their stream IDs) and
re-sent unchanged after a reconnect with capped, fully jittered backoff; the
script skips IDs already stored, so a retry never duplicates. Buffer overflow drops the oldest ticks,
counted in :meth:`RedisStore.status` and logged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import msgspec
import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from mdgate._backoff import Backoff
from mdgate._redis_codec import (
    FEED_KEY,
    BatchPacker,
    bars_key,
    decode_bar_fields,
    decode_tick_fields,
    last_key,
    ticks_key,
)
from mdgate._redis_lua import LAST_IDS, LAST_IDS_SHA, WRITE_BATCH
from mdgate.bars import MINUTE_MS, BarBuilder, aggregate_bars
from mdgate.config import RedisSettings, RuntimeSettings, mask_url
from mdgate.errors import StoreUnavailable
from mdgate.hookspecs import hookimpl
from mdgate.model import Bar, Tick, now_ms
from mdgate.store import BAR_INTERVALS

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from mdgate.config import Settings

__all__ = ["RedisStore", "mdgate_store"]

log = structlog.get_logger(__name__)

#: Seconds allowed for one batch round trip before the connection counts as dead.
IO_TIMEOUT: Final = 10.0
#: Batches sent before the reply of the first is read.
PIPELINE_DEPTH: Final = 2
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
        self._io_timeout = io_timeout
        self._settings = s = settings or RedisSettings()
        self._runtime = runtime or RuntimeSettings()
        self._url = url
        self._masked_url = mask_url(url)
        self._secret = _password(url)
        self._buf: deque[Tick] = deque(maxlen=s.buffer_max)
        self._bars: deque[Bar] = deque(maxlen=max(s.buffer_max // 10, 10_000))
        self._latest: dict[str, Tick] = {}
        self._builder: BarBuilder | None = BarBuilder() if s.bars else None
        self._packer = BatchPacker(s.stream_maxlen, s.feed_maxlen, s.bars_maxlen)
        self._inflight: deque[_Batch] = deque()
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._wpool = ConnectionPool.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._conn: AbstractConnection | None = None
        self._reader = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        self._state = "down"
        self._last_error: str | None = None
        self._drop_logged = 0.0
        self._closed = False
        self._rejected_logged = 0
        #: Ticks acknowledged as stored by Redis.
        self.written = 0
        #: Ticks dropped because the buffer was full.
        self.dropped = 0
        #: Ticks skipped by Redis because their ID was already stored (retries).
        self.duplicates = 0
        #: Closed bars stored / dropped because the bar buffer was full.
        self.bars_written = 0
        self.bars_dropped = 0
        #: Batches acknowledged by Redis.
        self.batches = 0
        #: Failed batch attempts (each followed by a backoff and a retry).
        self.failures = 0

    # ------------------------------------------------------------------ write path

    def write(self, ticks: Sequence[Tick]) -> None:
        """Buffer ticks in order and build bars; never blocks, never raises."""
        try:
            buf = self._buf
            before = len(buf)
            buf.extend(ticks)
            lost = before + len(ticks) - len(buf)
            if lost:
                self._on_drop(lost)
            latest = self._latest
            builder = self._builder
            if builder is None:
                for t in ticks:
                    prev = latest.get(t.instrument)
                    if prev is None or t.ts >= prev.ts:
                        latest[t.instrument] = t
            else:
                add, bars = builder.add, self._bars
                for t in ticks:
                    prev = latest.get(t.instrument)
                    if prev is None:
                        self._first_seen(t)
                    if prev is None or t.ts >= prev.ts:
                        latest[t.instrument] = t
                    bar = add(t)
                    if bar is not None:
                        self._add_bar(bar, bars)
            if before == 0 or len(buf) >= self._settings.batch_max:
                self._wake.set()
        except Exception as exc:  # the feed must never break because of the store
            log.error("redis_store_write_failed", error=repr(exc))

    def _first_seen(self, t: Tick) -> None:
        # The first bar(s) of an instrument in this process may cover a minute
        # a predecessor (a restarted gateway) already stored ticks of: the
        # script rebuilds those from every stored tick of the minute.
        minute = max(t.ts - t.ts % MINUTE_MS, t.recv_ts - t.recv_ts % MINUTE_MS)
        self._packer.rebuild_until[t.instrument] = minute

    def _add_bar(self, bar: Bar, bars: deque[Bar]) -> None:
        if len(bars) == bars.maxlen:
            self.bars_dropped += 1
        bars.append(bar)

    def _on_drop(self, n: int) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._drop_logged >= DROP_LOG_INTERVAL:
            self._drop_logged = now
            log.warning(
                "redis_buffer_overflow",
                dropped_total=self.dropped,
                buffer_max=self._settings.buffer_max,
                state=self._state,
            )

    # ------------------------------------------------------------------ background

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, flush batches and reconnect with backoff until cancelled."""
        task_status.started()
        async with anyio.create_task_group() as tg:
            if self._builder is not None:
                tg.start_soon(self._bar_clock)
            await self._writer()

    async def _bar_clock(self) -> None:
        builder = self._builder
        assert builder is not None
        while not self._closed:
            await anyio.sleep(1.0)
            closed = builder.flush(now_ms(), BAR_GRACE_MS)
            if closed:
                for bar in closed:
                    self._add_bar(bar, self._bars)
                self._wake.set()

    def _has_work(self) -> bool:
        return bool(self._buf or self._bars or self._inflight)

    async def _wait(self, delay: float) -> None:
        with anyio.move_on_after(delay):
            await self._wake.wait()
        if self._wake.is_set():
            self._wake = anyio.Event()

    async def _writer(self) -> None:
        rt = self._runtime
        backoff = Backoff(rt.backoff_initial, rt.backoff_max)
        while not self._closed:
            try:
                if not self._has_work():
                    if self._state == "ok":
                        await self._wait(IDLE_PING)
                    if not self._has_work():
                        await self._ping()
                        backoff.reset()
                        continue
                if not self._inflight and len(self._buf) < self._settings.batch_max:
                    await self._wait(self._settings.batch_interval)
                await self._flush()
                backoff.reset()
            except Exception as exc:
                # Redis errors, OS errors and timeouts are expected; anything
                # else is a bug, but the store keeps its buffer and retries
                # rather than dying and taking the feed's storage down.
                if not isinstance(exc, RedisError | OSError | TimeoutError):
                    log.exception("redis_store_error")
                self._failed(exc)
                # Full jitter, capped: the first retry comes within backoff_initial.
                await anyio.sleep(backoff.next())

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        text = str(exc) or (
            f"no answer within {self._io_timeout:g} s" if isinstance(exc, TimeoutError) else ""
        )
        err = self._clean(f"{type(exc).__name__}: {text}")
        if self._state != "down" or err != self._last_error:
            log.warning(
                "redis_store_down",
                url=self._masked_url,
                error=err,
                buffered=self._buffered(),
            )
        self._state = "down"
        self._last_error = err

    def _ok(self) -> None:
        if self._state != "ok":
            log.info("redis_store_up", url=self._masked_url, buffered=self._buffered())
        self._state = "ok"

    def _clean(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text.replace(self._url, self._masked_url)

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
            for script in (WRITE_BATCH, LAST_IDS):
                await self._roundtrip(conn, ("SCRIPT", "LOAD", script), packed=False)
        return conn

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
            conn = await self._connection()
            await self._roundtrip(conn, ("PING",), packed=False)
            self._ok()

    async def _flush(self) -> None:
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
                    await self._pump()
                return
            except NoScriptError:
                # Scripts flushed (SCRIPT FLUSH, or a new server behind the
                # address): the dropped connection reloads them on connect.
                if attempt:
                    raise

    async def _pump(self) -> None:
        conn = await self._connection()
        pending = self._inflight
        try:
            for batch in pending:  # kept from a failed attempt: re-send first
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
                    if self._needs_seed():
                        if pending:
                            break  # read the replies first: seeding is a round trip
                        await self._seed(conn)
                    batch = self._take_batch()
                    pending.append(batch)
                    await self._send(conn, batch.data)
                if not pending:
                    return
                with anyio.fail_after(self._io_timeout):
                    reply = await conn.read_response()
                self._acknowledged(pending.popleft(), reply)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
            raise

    async def _send(self, conn: AbstractConnection, data: bytes) -> None:
        with anyio.fail_after(self._io_timeout):
            await conn.send_packed_command(data, check_health=False)

    def _acknowledged(self, batch: _Batch, reply: Any) -> None:
        added, skipped, bars, _bars_skipped = (int(x) for x in reply)
        self.batches += 1
        self.written += added
        self.duplicates += skipped
        self.bars_written += bars
        if self._packer.rejected != self._rejected_logged:
            self._rejected_logged = self._packer.rejected
            log.error(
                "redis_ticks_rejected",
                rejected_total=self._packer.rejected,
                reason=REJECT_REASON,
            )
        self._ok()

    def _next_ticks(self) -> list[str]:
        n = min(len(self._buf), self._settings.batch_max)
        return self._packer.unknown(t.instrument for t in islice(self._buf, n))

    def _needs_seed(self) -> bool:
        return bool(self._next_ticks())

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
                self._packer.seed(inst, last)

    def _take_batch(self) -> _Batch:
        # No await between the seeding check and here: the ticks taken are
        # exactly the ones checked.
        buf = self._buf
        ticks = [buf.popleft() for _ in range(min(len(buf), self._settings.batch_max))]
        bars = list(self._bars)
        self._bars.clear()
        return _Batch(self._packer.pack(ticks, bars), len(ticks), len(bars))

    def _buffered(self) -> int:
        return len(self._buf) + sum(b.ticks for b in self._inflight)

    # ------------------------------------------------------------------ reads

    async def latest(self, instruments: Sequence[str]) -> dict[str, Tick]:
        """
        Return the latest tick of each instrument that has one.

        Reads the ``:last`` hashes (one pipelined ``HGETALL`` each) and
        merges what this process has seen but not yet flushed; while Redis
        is down, answers from this process's own ticks only.
        """
        out: dict[str, Tick] = {}
        if self._state == "ok" and instruments:
            try:
                async with self._reader.pipeline(transaction=False) as pipe:
                    for inst in instruments:
                        pipe.hgetall(last_key(inst))
                    rows = await pipe.execute()
                for inst, fields in zip(instruments, rows, strict=True):
                    if fields:
                        try:
                            out[inst] = decode_tick_fields(fields)
                        except msgspec.ValidationError as exc:
                            log.warning("redis_bad_last_hash", instrument=inst, error=str(exc))
            except (RedisError, OSError) as exc:
                log.warning("redis_latest_failed", error=self._clean(str(exc)))
        local = self._latest
        for inst in instruments:
            t = local.get(inst)
            if t is not None:
                cur = out.get(inst)
                if cur is None or t.ts >= cur.ts:
                    out[inst] = t
        return out

    async def _xrevrange(self, key: str, hi: str, lo: str, count: int) -> list[tuple[str, dict[str, str]]]:
        rows = await self._reader.xrevrange(key, hi, lo, count=count)
        return cast("list[tuple[str, dict[str, str]]]", rows or [])

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

        The last ``limit`` ticks with ``since_ms <= ID time <= until_ms``
        (the ID time is the tick's ``ts``, except for a tick older than its
        predecessor, which is filed at its predecessor's time).

        Raises:
            StoreUnavailable: when Redis cannot be read.
        """
        if limit <= 0 or (until_ms is not None and until_ms < 0):
            return []
        if since_ms is not None and since_ms < 0:
            since_ms = None
        hi = "+" if until_ms is None else str(until_ms)
        lo = "-" if since_ms is None else str(since_ms)
        try:
            rows = await self._xrevrange(ticks_key(instrument), hi, lo, limit)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {self._clean(str(exc))}") from exc
        out: list[Tick] = []
        for _id, fields in reversed(rows):
            try:
                out.append(decode_tick_fields(fields))
            except msgspec.ValidationError as exc:
                log.warning(
                    "redis_bad_tick_entry",
                    instrument=instrument,
                    id=_id,
                    error=str(exc),
                )
        return out

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

        5m and 15m bars aggregate the stored one-minute bars; a bar is
        returned when its start is within ``[since_ms, until_ms]`` and its
        interval has closed (a later bar exists, or the wall clock is past
        its end plus the grace period).

        Raises:
            ValueError: for an unknown interval.
            StoreUnavailable: when Redis cannot be read.
        """
        if interval not in BAR_INTERVALS:
            raise ValueError(f"unknown interval {interval!r} (known: {', '.join(BAR_INTERVALS)})")
        if limit <= 0 or (until_ms is not None and until_ms < 0):
            return []
        if since_ms is not None and since_ms < 0:
            since_ms = None
        size = BAR_INTERVALS[interval] * 1000
        per = size // MINUTE_MS
        lo_ms = since_ms
        if lo_ms is not None and per > 1:
            lo_ms = -(-lo_ms // size) * size  # whole intervals only
        hi_ms = until_ms
        if hi_ms is not None and per > 1:
            hi_ms = hi_ms - hi_ms % size + size - 1
        hi = "+" if hi_ms is None else str(hi_ms)
        lo = "-" if lo_ms is None else str(lo_ms)
        count = limit * per + per
        try:
            rows = await self._xrevrange(bars_key(instrument), hi, lo, count)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {self._clean(str(exc))}") from exc
        minute: list[Bar] = []
        for _id, fields in reversed(rows):
            try:
                minute.append(decode_bar_fields(instrument, fields))
            except (KeyError, ValueError) as exc:
                log.warning("redis_bad_bar_entry", instrument=instrument, id=_id, error=str(exc))
        if per == 1:
            return minute[-limit:]
        out = aggregate_bars(minute, size)
        if out and len(rows) == count:
            out.pop(0)  # cut by COUNT: some of its minutes may not have been read
        if out:
            last = out[-1]
            if minute[-1].start < last.start + size - MINUTE_MS and (
                now_ms() < last.start + size + BAR_GRACE_MS
            ):
                out.pop()  # its interval is still open
        return out[-limit:]

    async def follow(
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
        rt = self._runtime
        reader = Redis.from_url(
            self._url,
            decode_responses=True,
            socket_timeout=None,
            socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
        )
        backoff = Backoff(rt.backoff_initial, rt.backoff_max)
        try:
            while True:
                try:
                    with anyio.fail_after(block_ms / 1000 + self._io_timeout):
                        rows = await reader.xread({FEED_KEY: last_id}, count=count, block=block_ms)
                    resp = cast("list[tuple[str, list[tuple[str, dict[str, str]]]]]", rows or [])
                    backoff.reset()
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("redis_follow_failed", error=self._clean(str(exc)))
                    await anyio.sleep(backoff.next())
                    continue
                for _key, entries in resp:
                    ticks: list[Tick] = []
                    for entry_id, fields in entries:
                        last_id = entry_id
                        try:
                            ticks.append(decode_tick_fields(fields))
                        except msgspec.ValidationError as exc:
                            log.warning("redis_bad_feed_entry", id=entry_id, error=str(exc))
                    yield last_id, ticks
        finally:
            with anyio.CancelScope(shield=True):
                await reader.aclose()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Return the store's state for ``/status`` (no secrets)."""
        return {
            "kind": self.kind,
            "state": self._state,
            "buffered": self._buffered(),
            "dropped": self.dropped,
            "written": self.written,
            "duplicates": self.duplicates,
            "bars_written": self.bars_written,
            "bars_dropped": self.bars_dropped,
            "late_ticks": self._builder.late if self._builder is not None else 0,
            "batches": self.batches,
            "failures": self.failures,
            "rejected": self._packer.rejected,
            "last_error": self._last_error,
            "url": self._masked_url,
        }

    async def aclose(self) -> None:
        """Flush what is buffered (bounded by the shutdown timeout) and close."""
        if self._closed:
            return
        self._closed = True
        deadline = max(0.5, self._runtime.shutdown_timeout - 1.0)
        try:
            with anyio.move_on_after(deadline):
                while self._has_work():
                    try:
                        await self._flush()
                    except Exception as exc:
                        self._failed(exc)
                        await anyio.sleep(0.1)
        finally:
            # Also when the caller's own shutdown deadline cancels us.
            left = self._buffered()
            if left:
                log.warning("redis_store_closed_with_buffer", lost=left, url=self._masked_url)
            with anyio.CancelScope(shield=True):
                if self._conn is not None:
                    await self._conn.disconnect(nowait=True)
                await self._wpool.aclose()
                await self._reader.aclose()


def _is_connection_error(exc: RedisError) -> bool:
    from redis.exceptions import ConnectionError, TimeoutError

    return isinstance(exc, ConnectionError | TimeoutError)


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


@hookimpl(tryfirst=True)
def mdgate_store(settings: Settings) -> RedisStore | None:
    """Return a :class:`RedisStore` when ``[redis] url`` is set, else ``None``."""
    if settings.redis.url is None:
        return None
    return RedisStore(settings.redis.url.reveal(), settings.redis, settings.runtime)
