"""
``GET /metrics``: the gateway's counters in the Prometheus text format.

Nothing here runs on the tick path. The counters already live with their
owners (a provider session's, the store's, the pipeline's and the client
server's: see :mod:`mdgate._stats`) and move once per batch; the
histograms are :class:`~mdgate._histogram.Histogram` objects that count
with a ``bisect``. At scrape time :class:`GatewayCollector` reads the
``/status`` document and those histograms and turns them into metric
families, so that ``/metrics`` and ``/status`` can never disagree.
``prometheus_client`` is imported on the first scrape only (it costs
~80 ms of start-up otherwise).

Every metric is listed, with its type, labels and meaning, in
docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mdgate._histogram import Histogram
from mdgate._providers.states import ProviderState

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

__all__ = ["GatewayCollector", "MetricsPage", "MetricsParts"]

#: The provider states, every one exported (0 or 1) so that a dashboard's series never vanish.
_STATES = tuple(s.value for s in ProviderState)
#: The store states a store may report.
_STORE_STATES = ("ok", "buffering", "down")


@dataclass
class MetricsParts:
    """What ``/metrics`` is read from (handed over once by the composition root)."""

    #: The ``/status`` document.
    status: Callable[[], dict[str, Any]]
    #: Readiness, as ``/readyz`` answers it.
    ready: Callable[[], tuple[bool, list[str]]]
    #: Provider latency (``ts`` -> ``recv_ts``) per provider.
    provider_latency: Mapping[str, Histogram]
    #: Age of the oldest tick of each write to a client socket.
    tick_age: Histogram
    #: The store's write latency, when it keeps one.
    store_write: Callable[[], Histogram | None]
    #: Configuration reloads by result (``ok``, ``failed``).
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    version: str = ""
    started_at: float = 0.0


class GatewayCollector:
    """A ``prometheus_client`` collector over :class:`MetricsParts` (registered once per gateway)."""

    def __init__(self, parts: MetricsParts) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        """Yield every ``mdgate_`` metric family (called by the registry at each scrape)."""
        from prometheus_client.core import GaugeMetricFamily

        p = self.parts
        doc = p.status()
        yield from _providers(doc.get("providers", {}), p.provider_latency)
        yield from _store(doc.get("store", {}), p.store_write())
        yield from _pipeline(doc.get("pipeline", {}))
        yield from _clients(doc, p.tick_age)
        yield from _routing(doc.get("routing", {}), p.reloads)
        ready = GaugeMetricFamily("mdgate_ready", "1 when /readyz answers 200 (ready), else 0")
        ready.add_metric([], 1 if p.ready()[0] else 0)
        yield ready
        info = GaugeMetricFamily("mdgate_info", "The gateway's version", labels=["version"])
        info.add_metric([p.version], 1)
        yield info
        start = GaugeMetricFamily("mdgate_start_time_seconds", "When the gateway started (Unix seconds)")
        start.add_metric([], p.started_at)
        yield start


def _counter(name: str, doc: str, labels: list[str] | None = None) -> Any:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, labels=labels)


def _histogram(name: str, doc: str, hists: Mapping[str, Histogram], label: str | None) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for value, h in sorted(hists.items()):
        family.add_metric([value] if label else [], h.buckets(), h.seconds_sum())
    return family


def _providers(providers: Mapping[str, Any], latency: Mapping[str, Histogram]) -> Iterator[Any]:
    lab = ["provider"]
    frames = _counter("mdgate_provider_frames", "Frames received from the provider", lab)
    ticks = _counter("mdgate_provider_ticks", "Ticks decoded from the provider's frames", lab)
    errors = _counter("mdgate_provider_decode_errors", "Frames or ticks the decoder rejected, by kind",
                      ["provider", "kind"])
    reconnects = _counter("mdgate_provider_reconnects", "Connections re-opened after a drop or stall", lab)
    up = _gauge("mdgate_provider_up", "1 when the provider is connected, else 0", lab)
    state = _gauge("mdgate_provider_state", "1 for the provider's current state", ["provider", "state"])
    conns = _gauge("mdgate_provider_connections", "Provider connections open now", lab)
    subs = _gauge("mdgate_provider_subscriptions", "Instruments subscribed at the provider", lab)
    age = _gauge("mdgate_provider_last_message_age_seconds",
                 "Seconds since the provider's connections last received anything", lab)
    for name, s in sorted(providers.items()):
        frames.add_metric([name], s.get("frames", 0))
        ticks.add_metric([name], s.get("ticks", 0))
        for kind, n in sorted(s.get("decode_errors_by_kind", {}).items()):
            errors.add_metric([name, kind], n)
        reconnects.add_metric([name], s.get("reconnects", 0))
        current = str(s.get("state", ""))
        up.add_metric([name], 1 if current == ProviderState.CONNECTED else 0)
        for st in _STATES:
            state.add_metric([name, st], 1 if st == current else 0)
        conns.add_metric([name], s.get("connections", 0))
        subs.add_metric([name], s.get("subscriptions", 0))
        if s.get("last_message_age_ms") is not None:
            age.add_metric([name], s["last_message_age_ms"] / 1000)
    yield from (frames, ticks, errors, reconnects, up, state, conns, subs, age)
    # ticks carry their provider's code: label the histograms with the provider's name
    names = {s.get("code"): name for name, s in providers.items()}
    by_name = {names.get(code, code): h for code, h in latency.items()}
    yield _histogram("mdgate_provider_latency_seconds",
                     "Seconds from a tick's exchange time (ts) to its receipt (recv_ts)", by_name, "provider")


def _store(store: Mapping[str, Any], write: Histogram | None) -> Iterator[Any]:
    kind = str(store.get("kind", "unknown"))
    lab = [kind]
    written = _counter("mdgate_store_ticks_written", "Ticks the store wrote", ["store"])
    if "written" in store:
        written.add_metric(lab, store["written"])
    dropped = _counter("mdgate_store_dropped_ticks", "Ticks the store dropped (buffer full)", ["store"])
    dropped.add_metric(lab, store.get("dropped", 0))
    buffered = _gauge("mdgate_store_buffered_ticks", "Ticks waiting to be written", ["store"])
    buffered.add_metric(lab, store.get("buffered", 0))
    current = str(store.get("state", ""))
    up = _gauge("mdgate_store_up", "1 when the store is writable, else 0", ["store"])
    up.add_metric(lab, 1 if current == "ok" else 0)
    state = _gauge("mdgate_store_state", "1 for the store's current state", ["store", "state"])
    for st in _STORE_STATES:
        state.add_metric([kind, st], 1 if st == current else 0)
    yield from (written, dropped, buffered, up, state)
    if write is not None:
        yield _histogram("mdgate_store_write_seconds",
                         "Seconds from sending a batch to the store's acknowledgement",
                         {kind: write}, "store")


def _pipeline(pipe: Mapping[str, Any]) -> Iterator[Any]:
    for key, name, doc in (
        ("ticks", "mdgate_pipeline_ticks", "Ticks taken from the queue"),
        ("batches", "mdgate_pipeline_batches", "Batches taken from the queue"),
        ("errors", "mdgate_pipeline_errors", "Contained pipeline failures (bad tick, store, fan-out)"),
        ("backpressure_waits", "mdgate_pipeline_backpressure_waits",
         "Times a provider connection waited for room in the full queue"),
    ):
        c = _counter(name, doc)
        c.add_metric([], pipe.get(key, 0))
        yield c
    depth = _gauge("mdgate_pipeline_queue_depth", "Ticks queued between the providers and the pipeline")
    depth.add_metric([], pipe.get("queued", 0))
    yield depth


def _clients(doc: Mapping[str, Any], age: Histogram) -> Iterator[Any]:
    server = doc.get("server", {})
    clients = _gauge("mdgate_clients", "WebSocket clients connected now")
    clients.add_metric([], doc.get("clients", 0))
    conflated = _counter("mdgate_client_conflated_ticks", "Ticks replaced by a newer one for a slow client")
    conflated.add_metric([], doc.get("pipeline", {}).get("conflated", 0))
    dropped = _counter("mdgate_client_dropped_ticks", "Ticks dropped for clients closed by the gateway")
    dropped.add_metric([], server.get("dropped_ticks", 0))
    sent = _counter("mdgate_client_sent_bytes", "Bytes handed to client sockets")
    sent.add_metric([], server.get("sent_bytes", 0))
    closed = _counter("mdgate_clients_closed", "Clients closed by the gateway, by reason", ["reason"])
    for reason, n in sorted(server.get("closed", {}).items()):
        closed.add_metric([reason], n)
    refused = _counter("mdgate_clients_refused", "Connections refused, by reason", ["reason"])
    for reason, n in sorted(server.get("refused", {}).items()):
        refused.add_metric([reason], n)
    yield from (clients, conflated, dropped, sent, closed, refused)
    yield _histogram("mdgate_tick_age_at_send_seconds",
                     "Seconds from a tick's receipt (recv_ts) to its write to a client socket "
                     "(one observation per write: its oldest tick)", {"": age}, None)


def _routing(routing: Mapping[str, Any], reloads: Mapping[str, int]) -> Iterator[Any]:
    switches = _counter("mdgate_failover_switches",
                        "Instruments moved to another provider (failover, fail-back)")
    switches.add_metric([], routing.get("switches_total", 0))
    by = _gauge("mdgate_route_instruments", "Instruments served, by provider", ["provider"])
    for provider, n in sorted(routing.get("by_provider", {}).items()):
        by.add_metric([provider], n)
    rl = _counter("mdgate_config_reloads", "Configuration reloads (SIGHUP), by result", ["result"])
    for result, n in sorted(reloads.items()):
        rl.add_metric([result], n)
    stale = _gauge("mdgate_instruments_stale", "Instruments silent past stale_after, their market open")
    stale.add_metric([], routing.get("stale", 0))
    gaps = _counter("mdgate_gaps", "Possible holes announced to clients (gap frames), by reason", ["reason"])
    for reason, n in sorted(routing.get("gaps", {}).items()):
        gaps.add_metric([reason], n)
    backfill = routing.get("backfill", {})
    filled = _counter("mdgate_backfill_gaps", "Gaps whose backfill ended, by outcome", ["outcome"])
    for outcome in ("filled", "unfilled"):
        filled.add_metric([outcome], backfill.get(outcome, 0))
    why = _counter("mdgate_backfill_unfilled", "Gaps left unfilled, by reason", ["reason"])
    for reason, n in sorted(backfill.get("unfilled_reasons", {}).items()):
        why.add_metric([reason], n)
    yield from (switches, by, rl, stale, gaps, filled, why)


class MetricsPage:
    """Renders ``/metrics``: the gateway's collector plus the process metrics, in one registry."""

    def __init__(self, parts: MetricsParts) -> None:
        self.parts = parts
        self._registry: CollectorRegistry | None = None

    def _build(self) -> CollectorRegistry:
        from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        registry.register(GatewayCollector(self.parts))
        return registry

    def render(self) -> tuple[bytes, str]:
        """The page and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self._registry is None:
            self._registry = self._build()
        return generate_latest(self._registry), CONTENT_TYPE_LATEST
