"""
Counters and the ``/status`` document.

Every counter the status document shows is kept in one of the small
classes here (:class:`PipelineStats`, :class:`ClientStats`) or read from the
part that owns it (a provider session's, the queue's, the fan-out's); the
document itself is put together by :func:`status_document`, from the parts
the composition root hands it. The periodic ``session_stats`` log line
(:func:`log_session_stats`) lives here too.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import structlog

from mdgate._histogram import MS_BOUNDS, Histogram

if TYPE_CHECKING:
    from mdgate._model import Tick
    from mdgate._providers.session import ProviderSession
    from mdgate._queue import TickQueue
    from mdgate._serve.fanout import ClientOutbox, Fanout
    from mdgate._serve.limits import ConnectionLimits

__all__ = ["ClientStats", "PipelineStats", "ProviderLatency", "StatusParts", "log_session_stats",
           "status_document"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class PipelineStats:
    """What the pipeline counted since start."""

    #: Ticks taken from the queue.
    ticks: int = 0
    #: Batches taken from the queue.
    batches: int = 0
    #: Malformed ticks, store-write and fan-out failures (each contained).
    errors: int = 0
    #: Provider latency (``ts`` -> ``recv_ts``) of every tick, per provider.
    latency: ProviderLatency = field(default_factory=lambda: ProviderLatency())
    #: The numbering's counters (:meth:`mdgate._seq.SeqBook.status`), set by the pipeline.
    numbering: Callable[[], dict[str, int]] = field(default=lambda: {})


class ProviderLatency:
    """``ts`` -> ``recv_ts`` of every tick, per provider code (counted once per batch by the pipeline)."""

    __slots__ = ("by_provider",)

    def __init__(self) -> None:
        self.by_provider: dict[str, Histogram] = {}

    def observe(self, batch: Sequence[Tick]) -> None:
        """Count the latency of every tick of ``batch``."""
        hists = self.by_provider
        last: str | None = None
        counts: list[int] = []
        bounds: tuple[float, ...] = MS_BOUNDS
        hist: Histogram | None = None
        total = 0
        for t in batch:
            if t.provider != last:
                if hist is not None:
                    hist.total += total
                    total = 0
                last = t.provider
                hist = hists.get(last)
                if hist is None:
                    hist = hists[last] = Histogram(MS_BOUNDS, scale=0.001)
                counts = hist.counts
            d = t.recv_ts - t.ts
            if d < 0:
                d = 0  # a provider clock ahead of ours (bounded by max_clock_skew)
            counts[bisect_left(bounds, d)] += 1
            total += d
        if hist is not None:
            hist.total += total


def _closed() -> dict[str, int]:
    return {"slow": 0, "over_budget": 0}


@dataclass(slots=True)
class ClientStats:
    """What the client server counted since start (the live outboxes add their own)."""

    #: WebSocket clients connected now.
    clients: int = 0
    #: Clients closed by the gateway, by why.
    closed: dict[str, int] = field(default_factory=_closed)
    #: Requests refused for a limit (instruments per request or per client).
    limit_errors: int = 0
    #: Requests that failed inside the gateway (answered with an ``internal`` error).
    internal_errors: int = 0
    #: ``accept()`` calls that failed (out of file descriptors).
    accept_errors: int = 0
    #: Conflated and dropped ticks, and bytes sent, of clients that are gone.
    conflated_gone: int = 0
    dropped_gone: int = 0
    sent_gone: int = 0
    gaps_gone: int = 0
    #: Age of the oldest tick of each write to a client socket (ms since its ``recv_ts``).
    age: Histogram = field(default_factory=lambda: Histogram(MS_BOUNDS, scale=0.001))

    def gone(self, outbox: ClientOutbox) -> None:
        """Keep the counts of a client that disconnected."""
        self.conflated_gone += outbox.conflated
        self.dropped_gone += outbox.dropped
        self.sent_gone += outbox.sent
        self.gaps_gone += outbox.gaps_sent

    def sent(self, outboxes: Iterable[ClientOutbox]) -> int:
        """Bytes handed to client sockets, since start."""
        return self.sent_gone + sum(o.sent for o in outboxes)

    def dropped(self, outboxes: Iterable[ClientOutbox]) -> int:
        """Ticks dropped for clients closed over budget or gone, since start."""
        return self.dropped_gone + sum(o.dropped for o in outboxes)

    def conflated(self, outboxes: Iterable[ClientOutbox]) -> int:
        """Ticks dropped by conflation for slow clients, since start."""
        return self.conflated_gone + sum(o.conflated for o in outboxes)

    def document(self, limits: ConnectionLimits, outboxes: Iterable[ClientOutbox]) -> dict[str, Any]:
        """The ``server`` part of ``/status``."""
        return {
            "clients": self.clients,
            "sockets": limits.sockets,
            "max_clients": limits.max_clients,
            "refused": dict(limits.refused),
            "closed": dict(self.closed),
            "limit_errors": self.limit_errors,
            "internal_errors": self.internal_errors,
            "accept_errors": self.accept_errors,
            "dropped_ticks": self.dropped(outboxes),
            "sent_bytes": self.sent(outboxes),
            "conflation_gaps": self.gaps_gone + sum(o.gaps_sent for o in outboxes),
        }


class ClientCounters(Protocol):
    """What the status document reads from the client server."""

    @property
    def clients(self) -> int:
        """Clients connected now."""

    @property
    def conflated(self) -> int:
        """Ticks conflated since start."""

    def status(self) -> dict[str, Any]:
        """The ``server`` part of ``/status``."""


@dataclass(frozen=True)
class StatusParts:
    """The parts ``/status`` is rendered from (handed over once by the composition root)."""

    sessions: Mapping[str, ProviderSession]
    pipeline: PipelineStats
    queue: TickQueue
    fanout: Fanout
    server: ClientCounters
    #: The store's status entry (faults contained by the caller).
    store: Callable[[], dict[str, Any]]
    #: Routing health plus the subscription manager's status.
    routing: Callable[[], dict[str, Any]]
    #: The plugin-fault ledger's status, and whether it makes the gateway degraded.
    plugins: Callable[[], dict[str, Any]]
    plugins_degraded: Callable[[], bool]
    started_at: float = field(default_factory=time.time)


def status_document(parts: StatusParts) -> dict[str, Any]:
    """The ``/status`` document (no secrets); its shape is described in docs/client-protocol.md."""
    sessions = parts.sessions
    providers = {name: s.status() for name, s in sessions.items()}
    store = parts.store()
    routing = parts.routing()
    degraded = store.get("state") != "ok" or any(s.state.bad for s in sessions.values())
    degraded = degraded or routing["state"] != "ok"
    # a plugin that failed (to load; its store or routes replaced) or faulted in the last minute
    degraded = degraded or parts.plugins_degraded()
    p, server = parts.pipeline, parts.server
    return {
        "status": "degraded" if degraded else "ok",
        "providers": providers,
        "store": store,
        "clients": server.clients,
        "server": server.status(),
        "routing": routing,
        "plugins": parts.plugins(),
        "pipeline": {"ticks": p.ticks, "batches": p.batches, "queued": len(parts.queue),
                     "backpressure_waits": parts.queue.waits,
                     "errors": p.errors, "fanout_ticks": parts.fanout.published,
                     "conflated": server.conflated, "seq": p.numbering()},
        "uptime_s": int(time.time() - parts.started_at),
    }


async def log_session_stats(sessions: Mapping[str, ProviderSession], interval: float) -> None:
    """Every ``interval`` seconds, one ``session_stats`` line per provider (counts since the last)."""
    last: dict[str, tuple[int, int]] = {}
    while True:
        await anyio.sleep(interval)
        for name, s in sessions.items():
            frames, ticks = last.get(name, (0, 0))
            log.info("session_stats", provider=name, state=s.state, subscriptions=s.subscriptions,
                     frames=s.frames - frames, ticks=s.ticks - ticks,
                     decode_errors=sum(s.decode_errors.values()), reconnects=s.reconnects,
                     interval_s=interval)
            last[name] = (s.frames, s.ticks)
