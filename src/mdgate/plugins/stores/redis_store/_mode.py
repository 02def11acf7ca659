"""
Single Redis or Redis Cluster: asked once (``INFO cluster``), shared by the writer, reader and feed.

No setting says which: the first part of the store that reaches the server asks it
(``cluster_enabled:1``) and every part follows the answer from then on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["Mode", "cluster_enabled"]


def cluster_enabled(info: Any) -> bool:
    """Read ``cluster_enabled`` from an ``INFO cluster`` reply (raw text or redis-py's parsed dict)."""
    if isinstance(info, dict):
        return str(info.get("cluster_enabled", "0")) == "1"
    if isinstance(info, bytes):
        info = info.decode()
    return "cluster_enabled:1" in str(info)


class Mode:
    """Whether the store's server is a Redis Cluster (``None`` until known)."""

    def __init__(self) -> None:
        #: ``True``: Redis Cluster; ``False``: a single Redis; ``None``: not asked yet.
        self.cluster: bool | None = None
        self._lock = anyio.Lock()

    def learn(self, info: Any) -> bool:
        """Record the answer of an ``INFO cluster`` (the first answer wins); return the mode."""
        if self.cluster is None:
            self.cluster = cluster_enabled(info)
        return self.cluster

    async def ensure(self, ask: Callable[[], Awaitable[Any]]) -> bool:
        """Return the mode, asking the server with ``ask()`` (an ``INFO cluster``) if not known yet."""
        known = self.cluster
        if known is not None:
            return known
        async with self._lock:
            known = self.cluster  # another task may have asked meanwhile
            return known if known is not None else self.learn(await ask())
