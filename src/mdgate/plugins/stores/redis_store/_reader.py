"""
The read side of the Redis store: latest ticks, tick history and bars.

Reads use their own client (``decode_responses``, short socket timeouts),
separate from the writer's connection, so a slow read never holds up a
batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, cast

import msgspec
import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mdgate._errors import StoreUnavailable
from mdgate._latest import LatestTicks
from mdgate._model import Bar, Tick, now_ms
from mdgate.plugins.stores.bars import MINUTE_MS, aggregate_bars
from mdgate.plugins.stores.protocol import BAR_INTERVALS
from mdgate.plugins.stores.redis_store._codec import (
    bars_key,
    decode_bar_fields,
    decode_tick_fields,
    last_key,
    ticks_key,
)
from mdgate.plugins.stores.redis_store._mode import Mode
from mdgate.plugins.stores.redis_store._url import RedisUrl
from mdgate.plugins.stores.redis_store._writer import BAR_GRACE_MS

__all__ = ["StoreReader"]

log = structlog.get_logger("mdgate.plugins.stores.redis_store")

#: Seconds a read may take (connecting: :data:`CONNECT_TIMEOUT`).
READ_TIMEOUT: Final = 5.0
CONNECT_TIMEOUT: Final = 2.0

_Rows = list[tuple[str, dict[str, str]]]


class StoreReader:
    """
    Answers the store's reads from Redis.

    Args:
        url: the store's Redis URL.
        local: this process's latest tick per instrument (kept by the
            writer), merged into :meth:`latest`.
        mode: single Redis or Redis Cluster (shared with the writer; asked on the first read
            if the writer has not asked yet). On a cluster every read goes through a
            ``RedisCluster`` client (its slot map, redirections and failover).
    """

    def __init__(self, url: RedisUrl, local: LatestTicks, mode: Mode | None = None) -> None:
        self._url = url
        self._local = local
        self._mode = mode or Mode()
        self._cluster: RedisCluster | None = None
        self._redis = Redis.from_url(
            url.url,
            decode_responses=True,
            socket_timeout=READ_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )

    @property
    def redis(self) -> Redis:
        """The read client (``decode_responses``): shared with the reads by ``seq`` and the bar merge."""
        return self._redis

    async def client(self) -> Any:
        """
        The read client for the server's mode: ``Redis``, or ``RedisCluster`` on a cluster
        (both ``decode_responses``; typed ``Any``: redis-py's types do not know that).

        Raises:
            RedisError, OSError: when the mode is not known yet and the server cannot be asked.
        """
        if not await self._mode.ensure(lambda: self._redis.info("cluster")):
            return self._redis
        if self._cluster is None:
            self._cluster = RedisCluster.from_url(
                self._url.url,
                decode_responses=True,
                socket_timeout=READ_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
            )
        return self._cluster

    async def latest(self, instruments: Sequence[str], *, redis_up: bool) -> dict[str, Tick]:
        """
        Return the latest tick of each instrument that has one.

        Reads the ``:last`` hashes (one pipelined ``HGETALL`` each) when
        ``redis_up`` and merges what this process has seen but not yet
        flushed; otherwise answers from this process's own ticks only.
        """
        out: dict[str, Tick] = {}
        if redis_up and instruments:
            try:
                async with (await self.client()).pipeline(transaction=False) as pipe:
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
                log.warning("redis_latest_failed", error=self._url.clean(str(exc)))
        # this process's own latest wins over Redis's only where the one rule says so
        return {t.instrument: t for t in self._local.merged(instruments, out)}

    async def _xrevrange(self, key: str, hi: str, lo: str, count: int) -> _Rows:
        try:
            rows = await (await self.client()).xrevrange(key, hi, lo, count=count)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {self._url.clean(str(exc))}") from exc
        return cast("_Rows", rows or [])

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
        rows = await self._xrevrange(ticks_key(instrument), hi, lo, limit)
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
        rows = await self._xrevrange(bars_key(instrument), hi, lo, count)
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

    async def aclose(self) -> None:
        """Close the read client's connections."""
        await self._redis.aclose()
        if self._cluster is not None:
            await self._cluster.aclose()
