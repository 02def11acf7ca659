"""
What the client server needs from the rest of the gateway, narrowly.

The composition root (:mod:`mdgate._app`) hands the client server a
:class:`Backends`: the fan-out, the subscription manager's interest
counting, a snapshot function over the latest-tick table, the store's
history reader and a status callable, never the gateway itself. A server
built without one (unit tests of its writer or limits) gets
:func:`detached`: no routes, an empty memory store for history, an empty status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mdgate._config import ServerSettings
from mdgate._errors import NoRouteError
from mdgate._model import Tick
from mdgate._serve.fanout import Fanout
from mdgate._serve.resume import ResumeSource
from mdgate.plugins.stores.memory_store import MemoryStore
from mdgate.plugins.stores.protocol import HistoryReader

__all__ = ["Backends", "Interest", "detached"]


class Interest(Protocol):
    """Clients' interest in instruments (the subscription manager)."""

    def acquire(self, instrument: str) -> bool:
        """Add one client's interest; False when every provider of it is down."""
        ...

    def release(self, instrument: str) -> None:
        """Drop one client's interest."""
        ...


@dataclass(frozen=True)
class Backends:
    """The client server's collaborators."""

    #: Where the pipeline publishes; each client's outbox is registered here.
    fanout: Fanout
    #: Subscribe and release instruments on behalf of clients.
    interest: Interest
    #: The latest tick of each of some instruments (sent on subscribe).
    snapshot: Callable[[Sequence[str]], Awaitable[list[Tick]]]
    #: Answers ``/history``.
    history: HistoryReader
    #: The ``/status`` document; with ``instruments=True`` it lists every instrument served.
    status: Callable[..., dict[str, Any]]
    #: Readiness: (ready, reasons it is not) for ``/readyz``.
    ready: Callable[[], tuple[bool, list[str]]] = field(default=lambda: (True, []))
    #: The ``/metrics`` page (Prometheus text format) and its content type.
    metrics: Callable[[], tuple[bytes, str]] = field(default=lambda: (b"", "text/plain; charset=utf-8"))
    #: Where a subscribe with ``since`` replays from (None: no replay, answered ``recovered: false``).
    resume: ResumeSource | None = None


class _NoInterest:
    def acquire(self, instrument: str) -> bool:
        exchange = instrument.partition(":")[0]
        raise NoRouteError(instrument, exchange, f"{instrument}: this server is not attached to a gateway")

    def release(self, instrument: str) -> None:
        return None


async def _no_snapshot(instruments: Sequence[str]) -> list[Tick]:
    return []


def detached(settings: ServerSettings) -> Backends:
    """Backends for a server on its own: its own fan-out, no routes, an empty store, empty status."""
    return Backends(Fanout(settings.max_ticks_per_frame, framed=not settings.compression),
                    _NoInterest(), _no_snapshot, MemoryStore(), _no_status)


def _no_status(*, instruments: bool = False) -> dict[str, Any]:
    return {}
