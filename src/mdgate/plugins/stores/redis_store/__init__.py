"""
The Redis tick store (used when ``[redis] url`` / ``MDGATE_REDIS_URL`` is set).

Layout (see ``docs/storage.md``): per instrument a stream
``mdgate:{INSTR}:ticks``, a hash ``mdgate:{INSTR}:last`` and a stream
``mdgate:{INSTR}:bars:1m``, plus the shared stream ``mdgate:feed`` that
other services follow with ``XREAD``. On a Redis Cluster (detected with ``INFO
cluster`` on the first connect) the same per-instrument keys, and the feed split
into partitions ``mdgate:feed:{N}`` (``_cluster``, ``_events``, ``_mode``).

:class:`RedisStore` is the store the daemon sees; behind it:

* ``_writer``: the bounded write buffer, bar building and the batch writer
  (one ``EVALSHA`` per batch, exactly once across reconnects and restarts);
* ``_reader``: latest ticks, tick history and bars;
* ``_feed``: the consumer API over the shared feed (:meth:`RedisStore.follow`);
* ``_codec``: key names, batch packing and decoding (no I/O);
* ``_lua``: the server-side scripts (with the fenced variant and ``FEED_ADD``);
* ``_cluster``: the writer's Redis Cluster path (per-slot calls, ``WAIT``, partitioned feed);
* ``_events``: :meth:`RedisStore.follow_feed_events`, ticks and gaps for the fan-out tier.

Registered through the ``mdgate_store`` hook like any third party's store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdgate.hookspecs import hookimpl

if TYPE_CHECKING:
    from mdgate._config import Settings
    from mdgate.plugins.stores.redis_store._store import RedisStore

__all__ = ["RedisStore", "mdgate_store"]


def __getattr__(name: str) -> object:
    # the redis client is imported when a store is made, not when the plugin loads
    # (`mdgate --help` loads every plugin and must stay light)
    if name == "RedisStore":
        from mdgate.plugins.stores.redis_store._store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl(tryfirst=True)
def mdgate_store(settings: Settings) -> RedisStore | None:
    """Return a :class:`RedisStore` when ``[redis] url`` is set, else ``None``."""
    if settings.redis.url is None:
        return None
    from mdgate.plugins.stores.redis_store._store import RedisStore

    return RedisStore(settings.redis.url.reveal(), settings.redis, settings.runtime)
