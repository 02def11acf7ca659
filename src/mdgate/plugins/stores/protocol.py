"""
The tick store interface.

The pipeline hands every batch of ticks to :meth:`Store.write`, which must
never block the feed: a store buffers and writes in the background (its
:meth:`Store.run` task), reconnecting on its own, and reports buffered and
dropped counts in :meth:`Store.status`. Stores are provided by plugins
through the ``mdgate_store`` hook; the built-ins are Redis
(``mdgate.plugins.stores.redis_store``) and memory (``mdgate.plugins.stores.memory_store``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from mdgate._model import Bar, Tick

__all__ = ["BAR_INTERVALS", "HistoryReader", "Store"]

#: Bar intervals the history API serves, in seconds (5m/15m aggregate 1m bars).
BAR_INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900}


class HistoryReader(Protocol):
    """The reading side of a store that ``GET /history`` needs."""

    async def history(
        self, instrument: str, *, since_ms: int | None = None, until_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Tick]:
        """Return stored ticks of ``instrument`` in time order (oldest first)."""
        ...

    async def bars(
        self, instrument: str, interval: str = "1m", *, since_ms: int | None = None,
        until_ms: int | None = None, limit: int = 1000,
    ) -> list[Bar]:
        """Return closed bars of ``interval`` (a key of :data:`BAR_INTERVALS`), oldest first."""
        ...


@runtime_checkable
class Store(HistoryReader, Protocol):
    """Where ticks are kept: latest tick, tick history and one-minute bars."""

    #: ``redis`` or ``memory`` (shown in ``/status``).
    kind: str

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """
        Run the store's background work (connecting, flushing batches) until
        cancelled. Call ``task_status.started()`` once writes are accepted
        (the store need not be connected yet: it buffers).
        """

    def write(self, ticks: Sequence[Tick]) -> None:
        """Accept a batch of ticks, in order, without blocking."""

    async def latest(self, instruments: Sequence[str]) -> dict[str, Tick]:
        """Return the latest known tick of each instrument that has one."""
        ...

    def status(self) -> dict[str, Any]:
        """
        Return ``{"kind", "state": "ok"|"down"|"buffering", "buffered", "dropped", ...}``.

        ``written`` (ticks stored since start), when present, is exported as
        ``mdgate_store_ticks_written_total``; a store that also has a
        ``write_seconds`` attribute (a :class:`mdgate._histogram.Histogram` of
        seconds per batch written) gets ``mdgate_store_write_seconds``.
        """
        ...

    async def aclose(self) -> None:
        """Flush what is buffered (bounded by the shutdown timeout) and close."""
