"""Which slot an instrument belongs to: one stable rule for connection slots and feed partitions."""

from __future__ import annotations

import zlib

__all__ = ["shard_of"]


def shard_of(instrument: str, n: int) -> int:
    """
    Return ``instrument``'s shard among ``n`` (0..n-1): CRC-32 of its UTF-8 name, modulo ``n``.

    Every instance computes the same answer without talking to the others: the ingest tier
    uses it for connection slots (``[fleet] slots``), the Redis Cluster store for feed
    partitions (``[redis] feed_partitions``).
    """
    return zlib.crc32(instrument.encode()) % n
