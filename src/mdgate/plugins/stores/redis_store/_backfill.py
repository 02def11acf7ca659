"""
Backfilled one-minute bars into ``mdgate:{INSTR}:bars:1m`` (:class:`BarMerger`).

The merge runs as one :data:`~mdgate.plugins.stores.redis_store._lua.MERGE_BARS`
script on a connection of its own, never on the writer's batch connection
(which pipelines batches): the script is atomic, so a batch of live bars is
written either before it (the live bar is kept, the backfilled one for that
minute is left out) or after it (the live bar's ``XADD`` finds its minute
taken and is skipped as a duplicate). :func:`merge_args` is the pure part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mdgate._errors import StoreUnavailable
from mdgate._model import Bar
from mdgate.plugins.stores.bars import MINUTE_MS
from mdgate.plugins.stores.redis_store._codec import bars_key
from mdgate.plugins.stores.redis_store._lua import MERGE_BARS
from mdgate.plugins.stores.redis_store._url import RedisUrl

__all__ = ["BarMerger", "merge_args"]

#: Seconds a merge may take (connecting: :data:`CONNECT_TIMEOUT`).
MERGE_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 2.0


def merge_args(bars: Sequence[Bar]) -> list[str]:
    """
    The script's bar arguments: one bar per minute (the last given wins), ordered by start.

    Bars whose start is not on a minute boundary, or negative, are left out
    (they cannot be a one-minute bar).
    """
    by_start: dict[int, Bar] = {}
    for b in bars:
        if b.start >= 0 and b.start % MINUTE_MS == 0:
            by_start[b.start] = b
    out: list[str] = []
    for start in sorted(by_start):
        b = by_start[start]
        out += (str(start), repr(float(b.open)), repr(float(b.high)), repr(float(b.low)),
                repr(float(b.close)), str(int(b.volume)), str(int(b.count)))
    return out


class BarMerger:
    """
    Inserts backfilled bars where a minute has no bar yet, on its own Redis connection.

    Args:
        url: the store's Redis URL.
        maxlen: entries kept per bar stream (``[redis] bars_maxlen``).
    """

    def __init__(self, url: RedisUrl, maxlen: int) -> None:
        self._url = url
        self._maxlen = maxlen
        self._redis: Redis | None = None

    def _client(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(
                self._url.url,
                decode_responses=True,
                socket_timeout=MERGE_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
                health_check_interval=0,
            )
        return self._redis

    async def merge(self, instrument: str, bars: Sequence[Bar]) -> int:
        """
        Add the bars of minutes that have none yet; return how many were added.

        Raises:
            StoreUnavailable: when Redis cannot be written.
        """
        args = merge_args(bars)
        if not args:
            return 0
        script = self._client().register_script(MERGE_BARS)  # EVALSHA, loaded again on NOSCRIPT
        try:
            added = await script(keys=[bars_key(instrument)], args=[self._maxlen, *args])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {self._url.clean(str(exc))}") from exc
        return int(added)

    async def aclose(self) -> None:
        """Close the connection, if one was opened."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
