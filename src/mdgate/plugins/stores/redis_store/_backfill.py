"""
Backfilled one-minute bars into ``mdgate:{INSTR}:bars:1m`` (:func:`merge_bars`).

The merge runs as one :data:`~mdgate.plugins.stores.redis_store._lua.MERGE_BARS`
script on the store's read client, never on the writer's batch connection
(which pipelines batches): the script is atomic, so a batch of live bars is
written either before it (the live bar is kept, the backfilled one for that
minute is left out) or after it (the live bar's ``XADD`` finds its minute
taken and is skipped as a duplicate). :func:`merge_args` is the pure part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from mdgate._errors import StoreUnavailable
from mdgate._model import Bar
from mdgate.plugins.stores.bars import MINUTE_MS
from mdgate.plugins.stores.redis_store._codec import bars_key
from mdgate.plugins.stores.redis_store._lua import MERGE_BARS
from mdgate.plugins.stores.redis_store._url import RedisUrl

__all__ = ["merge_args", "merge_bars"]

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


async def merge_bars(redis: Any, url: RedisUrl, maxlen: int, instrument: str, bars: Sequence[Bar]) -> int:
    """
    Add the bars of minutes that have none yet to ``instrument``'s bar stream
    (at most ``maxlen`` entries kept); return how many were added.

    Raises:
        StoreUnavailable: when Redis cannot be written.
    """
    args = merge_args(bars)
    if not args:
        return 0
    script = redis.register_script(MERGE_BARS)  # EVALSHA, loaded again on NOSCRIPT
    try:
        added = await script(keys=[bars_key(instrument)], args=[maxlen, *args])
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {url.clean(str(exc))}") from exc
    return int(added)
