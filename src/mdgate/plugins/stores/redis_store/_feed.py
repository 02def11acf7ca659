"""
The feed consumer: follow the shared ``mdgate:feed`` stream with ``XREAD BLOCK``.

For other services (and tests) that want every gateway's ticks as they are
stored; see :meth:`mdgate.plugins.stores.redis_store.RedisStore.follow`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

import anyio
import msgspec
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mdgate._backoff import Backoff
from mdgate._config import RuntimeSettings
from mdgate._model import Tick
from mdgate.plugins.stores.redis_store._codec import FEED_KEY, decode_tick_fields
from mdgate.plugins.stores.redis_store._url import RedisUrl

__all__ = ["follow_feed"]

log = structlog.get_logger("mdgate.plugins.stores.redis_store")

_Reply = list[tuple[str, list[tuple[str, dict[str, str]]]]]


async def follow_feed(
    url: RedisUrl,
    runtime: RuntimeSettings,
    io_timeout: float,
    last_id: str = "$",
    *,
    count: int = 1000,
    block_ms: int = 1000,
) -> AsyncGenerator[tuple[str, list[Tick]], None]:
    """
    Yield ``(id, ticks)`` for each read of the feed after ``last_id``.

    Args:
        url: the store's Redis URL.
        runtime: the backoff timings used while Redis is unreachable.
        io_timeout: seconds allowed beyond ``block_ms`` for one read.
        last_id: ``"$"`` (from now), ``"0"`` (from the oldest kept) or the
            ID of the last tick already read.
        count: the most ticks one read returns.
        block_ms: how long one ``XREAD`` waits for new ticks.

    Uses its own connection, closed when the generator is closed; a failed
    read is logged (credentials masked) and retried from the last ID read
    after a capped, jittered backoff.
    """
    reader = Redis.from_url(
        url.url,
        decode_responses=True,
        socket_timeout=None,
        socket_connect_timeout=5.0,
        retry=Retry(NoBackoff(), 0),
    )
    backoff = Backoff(runtime.backoff_initial, runtime.backoff_max)
    try:
        while True:
            try:
                with anyio.fail_after(block_ms / 1000 + io_timeout):
                    rows = await reader.xread({FEED_KEY: last_id}, count=count, block=block_ms)
                resp = cast("_Reply", rows or [])
                backoff.reset()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis_follow_failed", error=url.clean(str(exc)))
                await anyio.sleep(backoff.next())
                continue
            for _key, entries in resp:
                ticks: list[Tick] = []
                for entry_id, fields in entries:
                    last_id = entry_id
                    if fields.get("type") == "gap":
                        continue  # a gap entry (follow_feed_events yields those): ticks only here
                    try:
                        ticks.append(decode_tick_fields(fields))
                    except msgspec.ValidationError as exc:
                        log.warning("redis_bad_feed_entry", id=entry_id, error=str(exc))
                yield last_id, ticks
    finally:
        with anyio.CancelScope(shield=True):
            await reader.aclose()
