"""
The fan-out tier's feed reader: ticks and gap entries, from ``mdgate:feed`` or every cluster partition.

See :meth:`mdgate.plugins.stores.redis_store.RedisStore.follow_feed_events`. On a single Redis
one ``XREAD BLOCK`` loop over ``mdgate:feed``; on a Redis Cluster one task per partition
``mdgate:feed:{N}``, each with its own blocking ``XREAD``, merged through a bounded memory
object stream. Every loop reconnects with capped, jittered backoff and resumes from the last ID
it read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import msgspec
import structlog
from anyio.abc import ObjectSendStream
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mdgate._backoff import Backoff
from mdgate._config import RuntimeSettings
from mdgate._model import Tick
from mdgate.plugins.stores.redis_store._codec import FEED_KEY, decode_tick_fields, feed_key
from mdgate.plugins.stores.redis_store._mode import Mode
from mdgate.plugins.stores.redis_store._url import RedisUrl

__all__ = ["FeedEvents", "decode_feed_entries", "follow_feed_events"]

log = structlog.get_logger("mdgate.plugins.stores.redis_store")

_Entries = list[tuple[str, dict[str, str]]]
_Reply = list[tuple[str, _Entries]]


@dataclass(slots=True)
class FeedEvents:
    """What one read of a feed stream returned, in feed order per stream."""

    ticks: list[Tick]
    #: Gap entries: ``instrument``, ``from_ts`` (int), ``to_ts`` (int), ``reason``.
    gaps: list[dict[str, Any]]
    #: Stream key -> ID of the last entry read (pass as ``last_ids`` to resume there).
    ids: dict[str, str] = field(default_factory=dict)


def decode_feed_entries(key: str, entries: _Entries) -> FeedEvents:
    """Split a feed stream's entries into ticks and gaps (bad entries are logged and skipped)."""
    ev = FeedEvents([], [])
    for entry_id, fields in entries:
        ev.ids[key] = entry_id
        try:
            if fields.get("type") == "gap":
                gap: dict[str, Any] = dict(fields)
                del gap["type"]
                gap["from_ts"], gap["to_ts"] = int(fields["from_ts"]), int(fields["to_ts"])
                ev.gaps.append(gap)
            else:
                ev.ticks.append(decode_tick_fields(fields))
        except (msgspec.ValidationError, KeyError, ValueError) as exc:
            log.warning("redis_bad_feed_entry", id=entry_id, error=str(exc))
    return ev


async def _ensure_mode(url: RedisUrl, mode: Mode, backoff: Backoff) -> bool:
    probe = Redis.from_url(url.url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        while True:
            try:
                return await mode.ensure(lambda: probe.info("cluster"))
            except (RedisError, OSError) as exc:
                log.warning("redis_follow_failed", error=url.clean(str(exc)))
                await anyio.sleep(backoff.next())
    finally:
        with anyio.CancelScope(shield=True):
            await probe.aclose()


async def _read_loop(
    client: Any, url: RedisUrl, runtime: RuntimeSettings, io_timeout: float, key: str, last: str,
    count: int, block_ms: int, send: ObjectSendStream[FeedEvents],
) -> None:
    """Read ``key`` from ``last`` on; send each non-empty read to ``send``; retry with backoff."""
    backoff = Backoff(runtime.backoff_initial, runtime.backoff_max)
    async with send:
        while True:
            try:
                with anyio.fail_after(block_ms / 1000 + io_timeout):
                    rows = cast("_Reply", await client.xread({key: last}, count=count, block=block_ms) or [])
                backoff.reset()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis_follow_failed", stream=key, error=url.clean(str(exc)))
                await anyio.sleep(backoff.next())
                continue
            for _key, entries in rows:
                if entries:
                    ev = decode_feed_entries(key, entries)
                    last = ev.ids[key]
                    await send.send(ev)


async def follow_feed_events(
    url: RedisUrl,
    runtime: RuntimeSettings,
    io_timeout: float,
    mode: Mode,
    partitions: int,
    last_ids: Mapping[str, str] | None = None,
    *,
    count: int = 1000,
    block_ms: int = 1000,
) -> AsyncGenerator[FeedEvents, None]:
    """
    Yield a :class:`FeedEvents` for each non-empty read of the feed (every partition on a cluster).

    ``last_ids`` maps a feed stream (``mdgate:feed``, or ``mdgate:feed:{N}``) to the ID to read
    after; absent: from now (``$``). Uses connections of its own, closed with the generator.
    """
    ids = dict(last_ids or {})
    backoff = Backoff(runtime.backoff_initial, runtime.backoff_max)
    cluster = await _ensure_mode(url, mode, backoff)
    client: Any
    if cluster:
        client = RedisCluster.from_url(url.url, decode_responses=True, socket_timeout=None,
                                       socket_connect_timeout=5.0)
        keys = [feed_key(p) for p in range(partitions)]
    else:
        client = Redis.from_url(url.url, decode_responses=True, socket_timeout=None,
                                socket_connect_timeout=5.0, retry=Retry(NoBackoff(), 0))
        keys = [FEED_KEY]
    send, recv = anyio.create_memory_object_stream[FeedEvents](max(16, len(keys)))
    try:
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(_read_loop, client, url, runtime, io_timeout, key, ids.get(key, "$"),
                              count, block_ms, send.clone())
            send.close()
            try:
                async with recv:
                    async for ev in recv:
                        yield ev
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the consumer closed the generator at a yield (inside the task group): done
        _closed, rest = group.split(GeneratorExit)
        if rest is not None:
            raise
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
