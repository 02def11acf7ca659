"""
The gateway: wires routes -> provider sessions -> pipeline -> store + fan-out
-> client server, and owns start-up, reload and graceful shutdown.

Task tree (anyio)::

    Gateway.run
    ├── store.run                       (background writes, reconnects)
    ├── ProviderSession.run  x provider (one task per connection)
    ├── Pipeline.run                    (TickQueue -> LatestTicks, store.write, fanout.publish)
    ├── SubscriptionManager.run         (linger expiry, failover / fail-back)
    ├── route source watch              (PostgreSQL LISTEN/NOTIFY), if any
    ├── log_session_stats               (one session_stats line per provider)
    └── ClientServer.run                (WebSocket + HTTP)

This is the composition root: each part is built from its own slice of
:class:`~mdgate._config.Settings` and handed exactly the collaborators it
needs (the client server gets :class:`~mdgate._serve.backends.Backends`,
never the gateway). A reload (SIGHUP) loads new settings and each part
applies its own slice; provider configurations are held by the sessions
alone (the router reads them through :func:`~mdgate._routing.router.live_configs`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from mdgate._backfill import Backfiller
from mdgate._clock import MONOTONIC, Clock
from mdgate._config import Settings, load_settings
from mdgate._errors import ConfigError, MdgateError
from mdgate._gaps import GapDesk
from mdgate._histogram import Histogram
from mdgate._latest import LatestTicks
from mdgate._market import MarketHours
from mdgate._metrics import MetricsPage, MetricsParts
from mdgate._model import Tick
from mdgate._pipeline import Pipeline
from mdgate._providers.calls import backfill as call_backfill, select_route_source, select_store_and_plugin
from mdgate._providers.faults import PluginFaults
from mdgate._providers.registry import Registry, load_registry
from mdgate._providers.session import ProviderSession
from mdgate._queue import TickQueue
from mdgate._routing.router import Router, config_table, live_configs, parse_provider_configs
from mdgate._routing.subscriptions import SubscriptionManager
from mdgate._routing.table import RouteSource, RouteTable, empty_hint, routing_health
from mdgate._seq import SeqBook
from mdgate._serve.backends import Backends
from mdgate._serve.fanout import Fanout
from mdgate._serve.resume import ResumeSource
from mdgate._serve.server import ClientServer
from mdgate._stats import PipelineStats, StatusParts, log_session_stats, status_document
from mdgate.plugins.stores.protocol import Store

if TYPE_CHECKING:  # imported where used: a gateway of role `all` that neither records nor replays needs none
    from mdgate._fleet.roles import FleetRole
    from mdgate._recording.recorder import Recorder
    from mdgate._recording.replay import Replayer

__all__ = ["Gateway"]

log = structlog.get_logger(__name__)

#: Keys a reload cannot apply (``config_change_needs_restart``).
_RESTART_ONLY = ("server.host", "server.port", "redis.url", "database.url")

class GuardedStore:
    """
    The store plugin with its faults contained: a background task that
    raises, or a ``status()`` that raises or answers nonsense, is a plugin
    fault; the store shows ``down`` and live ticks keep flowing to clients.
    """

    def __init__(self, store: Store, plugin: str, faults: PluginFaults) -> None:
        self.store = store
        self.plugin = plugin
        self.faults = faults
        #: Why the store's task stopped (a lasting fault), or None.
        self.fault: str | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the store's background task; a fault is recorded and the daemon stays up."""
        try:
            await self.store.run(task_status=task_status)
        except Exception as exc:
            self.fault = self.faults.describe(exc)
            self.faults.record(self.plugin, "store.run", exc, lasting=True,
                               consequence="ticks are no longer stored until a restart")
            with contextlib.suppress(RuntimeError):  # it may have reported itself started already
                task_status.started()
            await anyio.sleep_forever()

    def status(self) -> dict[str, Any]:
        """The store's ``/status`` entry."""
        if self.fault is not None:
            return {"kind": self.store.kind, "state": "down", "error": self.fault}
        try:
            status = self.store.status()
            if not isinstance(status, dict):
                raise TypeError(f"status() returned {type(status).__name__}, not a dict")
            return status
        except Exception as exc:
            self.faults.record(self.plugin, "store.status", exc)
            return {"kind": self.store.kind, "state": "down", "error": self.faults.describe(exc)}

    async def close(self, rest: list[Tick]) -> None:
        """Write what is still queued and close the store (a plugin bug must not spoil the shutdown)."""
        try:
            if rest:
                self.store.write(rest)
            await self.store.aclose()
        except Exception as exc:
            self.faults.record(self.plugin, "store.aclose", exc)


class Gateway:
    """One mdgate daemon: the composition root."""

    def __init__(
        self, settings: Settings, registry: Registry | None = None, *, config_path: str | None = None,
        replayer: Replayer | None = None, clock: Clock = MONOTONIC, wall: Callable[[], float] = time.time,
        role: str = "all",
    ) -> None:
        """
        Args:
            settings: the configuration.
            registry: the loaded plugins (default: discovered from the environment).
            config_path: the file a reload (SIGHUP) reads.
            replayer: play this recording to the providers it holds (``mdgate replay``).
            clock: the provider sessions' and market hours' monotonic clock (a test's ``ManualClock``).
            wall: Unix seconds for the exchange calendars (a test fakes it with ``clock``).
            role: ``all`` (everything), ``ingest`` or ``fanout`` (see :mod:`mdgate._fleet`).
        """
        if role != "all":
            from mdgate._fleet.roles import check_role

            check_role(role, settings)
        self.role = role
        self.settings = settings
        self.config_path = config_path
        self.registry = registry or load_registry(settings.environ)
        faults = self.registry.faults
        configs = parse_provider_configs(self.registry, settings)
        # a faulty store or route-source plugin is contained: memory store / built-in routes, degraded
        store, store_plugin = select_store_and_plugin(self.registry, settings)
        self.store: Store = store
        self.store_guard = GuardedStore(store, store_plugin, faults)
        self.route_source: RouteSource | None
        self.route_source, self.route_source_plugin = select_route_source(self.registry, settings)
        self.queue = TickQueue(settings.runtime.queue_size)
        self.sessions = {
            name: ProviderSession(hooks, configs.configs.get(name), configs.disabled.get(name), self.queue,
                                  settings.runtime, faults=faults, clock=clock)
            for name, hooks in self.registry.providers.items() if role != "fanout"  # no upstream there
        }
        table = config_table(self.registry, settings, self.route_source)
        self.router = Router(self.registry, live_configs(self.sessions), table)
        self.subs = SubscriptionManager(self.router, self.sessions, settings.runtime,
                                        settings.subscriptions.linger)
        self.fanout = Fanout(settings.server.max_ticks_per_frame, framed=not settings.server.compression)
        self.latest = LatestTicks()
        self.hours = MarketHours(settings.calendars, settings.runtime, self.sessions, self.subs, self.latest,
                                 clock=clock, wall=wall)
        self.hours.follow(self.route_source)
        self.pipeline_stats = PipelineStats()
        seeder = getattr(store, "last_seqs", None)  # a store that keeps numbers across restarts
        self.seqs = SeqBook(seeder if callable(seeder) else None, self.queue.nudge)
        self.pipeline = Pipeline(self.queue, self.latest, store.write, self.fanout.publish,
                                 self.pipeline_stats, self.seqs)
        self.started_at = time.time()
        self.gaps = GapDesk(self.fanout, self.latest, store, faults, store_plugin)
        self.fleet = _fleet_role(self, role)
        fan = self.fleet if self.fleet is not None and self.fleet.role == "fanout" else None
        self.server = ClientServer(settings.server, Backends(
            fanout=self.fanout, interest=fan.interest if fan else self.subs, snapshot=self.snapshot,
            history=store, status=self.status, ready=self.ready, metrics=self.render_metrics,
            resume=ResumeSource(fan.last_seq if fan and fan.last_seq else self.seqs.last.get, store)))
        # clients written in the step, not a loop call later (docs/architecture.md)
        self.pipeline.before, self.pipeline.after = self.server.flusher.hold, self.server.flusher.flush
        self.metrics = self._metrics_parts()
        self._metrics_page = MetricsPage(self.metrics)
        self._status = StatusParts(
            sessions=self.sessions, pipeline=self.pipeline_stats, queue=self.queue, fanout=self.fanout,
            server=self.server, store=self.store_guard.status, routing=self._routing_status,
            plugins=faults.status, plugins_degraded=faults.degraded, started_at=self.started_at)
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self.recorder, self.replayer = _taps(settings, self.sessions, replayer)
        self.subs.on_switch = self.gaps.on_switch
        for session in self.sessions.values():
            session.on_resume = self.gaps.on_resume
        self.backfill = Backfiller(
            settings.backfill, routes=self.router.resolve, config=self._backfill_config,
            ask=functools.partial(call_backfill, self.registry), store=store, done=self.gaps.filled,
            faults=faults, store_plugin=store_plugin)
        self.gaps.listeners.append(self.backfill)
        for name, reason in configs.disabled.items():
            log.warning("provider_disabled", provider=name, reason=reason)

    # -- life cycle ----------------------------------------------------------

    def stop(self) -> None:
        """Ask the gateway to shut down gracefully."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`run` has finished shutting down."""
        await self._stopped.wait()

    async def _load_routes(self) -> None:
        src = self.route_source
        if src is None:
            return
        try:
            table: object = await src.load()  # checked: a plugin's object
        except ConfigError:
            raise
        except MdgateError as exc:
            log.error("routes_unavailable", source=src.description, error=str(exc),
                      using="built-in defaults until the database answers")
            return
        except Exception as exc:  # a route-source plugin bug: built-in defaults, the fault recorded
            self._route_source_fault("load", exc)
            return
        self._use_table(table, "load", "routes_loaded")

    def _route_source_fault(self, method: str, exc: BaseException | str) -> None:
        self.registry.faults.record(self.route_source_plugin or "route_source", f"route_source.{method}", exc,
                                    using="the routes in use")

    def _on_routes(self, table: object) -> None:
        if self._use_table(table, "watch", "route_table_reloaded"):
            self.subs.reroute()

    def _use_table(self, table: object, method: str, event: str) -> bool:
        """Route by what the route source's ``method`` gave, if it is a RouteTable (else a plugin fault)."""
        if not isinstance(table, RouteTable):
            self._route_source_fault(method, f"gave {type(table).__name__}, not a RouteTable")
            return False
        self.router.table = table
        log.info(event, source=table.source, exchanges=len(table.exchanges), instruments=len(table.codes))
        _warn_if_empty(table)
        return True

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop`; ``task_status.started(port)`` once serving."""
        scopes = {k: anyio.CancelScope() for k in ("store", "providers", "work", "server")}
        done = {k: anyio.Event() for k in scopes}
        try:
            await self._load_routes()
            async with anyio.create_task_group() as tg:

                async def scoped(key: str, fn: Callable[..., Awaitable[Any]], *,
                                 task_status: anyio.abc.TaskStatus[Any]) -> None:
                    try:
                        with scopes[key]:
                            await fn(task_status=task_status)
                    finally:
                        done[key].set()

                await tg.start(scoped, "store", self.store_guard.run)
                await tg.start(scoped, "providers", self._run_providers)
                await tg.start(scoped, "work", self._run_work)
                port: int = await tg.start(scoped, "server", self.server.run)
                if self.role == "all":  # a fleet's ingest tier subscribes by slot, its fan-out tier never
                    first = self.settings  # a reload meanwhile applies its own whole (the rest is moot)
                    for err in await self.subs.start(first.subscriptions, lambda: self.settings is first):
                        log.error("always_subscription_failed", error=err)
                log.info("gateway_started", port=port, role=self.role, providers=sorted(self.sessions),
                         store=self.store.kind, routes=self.router.table.source,
                         startup_ms=int((time.time() - self.started_at) * 1000))
                task_status.started(port)
                # start-up objects (plugins, protobuf, routing, redis-py, websockets) live for
                # ever: take them out of the collector's working set so full collections stay
                # short (a 20-50 ms pause is a p99 miss by itself). No collection first: start-up
                # leaves ~700 objects of cyclic garbage (class and module set-up), frozen with
                # the rest, and finding them would be a pause of its own (40 ms with 1,000
                # instruments, 115 ms with 25,000, right when the gateway starts to serve)
                gc.freeze()
                await self._stop.wait()
                await self._shutdown(scopes, done)
                tg.cancel_scope.cancel()
        finally:
            self._stopped.set()

    async def _shutdown(self, scopes: dict[str, anyio.CancelScope], done: dict[str, anyio.Event]) -> None:
        log.info("gateway_stopping")
        t0 = time.monotonic()
        with anyio.move_on_after(self.settings.runtime.shutdown_timeout, shield=True) as scope:
            await self.server.close()
            scopes["server"].cancel()
            for s in self.sessions.values():
                s.closing = True
            scopes["providers"].cancel()
            await done["providers"].wait()
            scopes["work"].cancel()
            await done["work"].wait()
            if self.recorder is not None:
                self.recorder.close()
            await self.store_guard.close(self.queue.drain())
            if self.fleet is not None and self.fleet.close is not None:
                await self.fleet.close()  # leases go once every tick of theirs is stored
            scopes["store"].cancel()
        log.info("gateway_stopped", seconds=round(time.monotonic() - t0, 3),
                 timed_out=scope.cancelled_caught)

    async def _run_providers(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            for s in self.sessions.values():
                await tg.start(s.run)
            task_status.started()

    async def _run_work(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            if self.fleet is not None:
                await tg.start(self.fleet.run)
                if self.fleet.role == "fanout":
                    task_status.started()
                    return
            tg.start_soon(self.pipeline.run)
            tg.start_soon(self.seqs.run)
            tg.start_soon(self.subs.run)
            tg.start_soon(self.hours.run)
            tg.start_soon(self.backfill.run)
            tg.start_soon(log_session_stats, self.sessions, self.settings.runtime.stats_interval)
            if self.recorder is not None:
                tg.start_soon(self.recorder.run)
            if self.route_source is not None:
                tg.start_soon(self._watch_routes, self.route_source)
            task_status.started()

    async def _watch_routes(self, src: RouteSource) -> None:
        while True:
            try:
                await src.watch(self._on_routes, task_status=anyio.TASK_STATUS_IGNORED)
            except MdgateError as exc:  # the source must not take the daemon down
                log.error("route_watch_failed", source=src.description, error=str(exc))
            except Exception as exc:  # nor may a bug in its plugin
                self._route_source_fault("watch", exc)
            await anyio.sleep(5)

    # -- queries -------------------------------------------------------------

    async def snapshot(self, instruments: Sequence[str]) -> list[Tick]:
        """Latest tick of each instrument: this process's own, else the store's (see ``LatestTicks``)."""
        stored = self.store.latest if self.store.kind != "memory" else None
        return await self.latest.snapshot(instruments, stored)

    def ready(self) -> tuple[bool, list[str]]:
        """
        Readiness (``/readyz``): the store writable, or buffering within its
        limit, and every exchange with subscribed instruments served by a
        connected provider. Returns (ready, the reasons it is not).
        """
        reasons = store_unready(self.store_guard.status())
        if self.role != "fanout":
            reasons += self.subs.unserved_exchanges()
        return not reasons, reasons

    def render_metrics(self) -> tuple[bytes, str]:
        """The ``/metrics`` page (Prometheus text format) and its content type."""
        return self._metrics_page.render()

    def _metrics_parts(self) -> MetricsParts:
        from mdgate import __version__

        store = self.store

        def store_write() -> Histogram | None:
            hist = getattr(store, "write_seconds", None)
            return hist if isinstance(hist, Histogram) else None

        return MetricsParts(
            status=self.status, ready=self.ready, provider_latency=self.pipeline_stats.latency.by_provider,
            tick_age=self.server.stats.age, store_write=store_write, version=__version__,
            started_at=self.started_at)

    def _routing_status(self) -> dict[str, Any]:
        return {**routing_health(self.router.table, self.route_source), **self.subs.status(),
                "gaps": dict(self.gaps.counts), **self.hours.status(), "backfill": self.backfill.status()}

    def _backfill_config(self, provider: str) -> object | None:
        """The configuration a provider's backfill is asked with (None: disabled or unknown)."""
        session = self.sessions.get(provider)
        return None if session is None or session.disabled_reason else session.config

    def status(self, *, instruments: bool = False) -> dict[str, Any]:
        """The ``/status`` document (no secrets); ``instruments``: list every instrument served."""
        doc = status_document(self._status)
        if self.fleet is not None:
            doc["fleet"] = self.fleet.status()
        if instruments:
            doc["instruments"] = self.hours.annotate(self.subs.instruments())
        return doc

    # -- reload ----------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the configuration (SIGHUP); keep clients. Returns success."""
        try:
            new = load_settings(self.config_path, os.environ)
            # the configurations in use (held by the sessions) are kept for a provider whose parse faults
            configs = parse_provider_configs(self.registry, new, self.router.configs)
        except ConfigError as exc:
            log.error("config_reload_failed", key=exc.key, error=exc.message)
            self.metrics.reloads["failed"] += 1
            return False
        old = self.settings
        for key in _RESTART_ONLY:
            section, field = key.split(".")
            if getattr(getattr(old, section), field) != getattr(getattr(new, section), field):
                log.warning("config_change_needs_restart", key=key)
        self.settings = new
        self.server.apply(new.server)
        self.hours.apply(new.calendars, new.runtime)
        self.backfill.settings = new.backfill
        for name, s in self.sessions.items():
            s.update_config(configs.configs.get(name), configs.disabled.get(name))
        if self.route_source is None:
            self.router.table = config_table(self.registry, new)
            self.subs.reroute()
        if self.role == "all":
            self._apply_subscriptions(new)
        elif self.fleet is not None and self.fleet.apply is not None:
            self.fleet.apply(new)
        log.info("config_reloaded", source=new.source)
        self.metrics.reloads["ok"] += 1
        return True

    def _apply_subscriptions(self, settings: Settings) -> None:
        for err in self.subs.apply(settings.subscriptions):
            log.error("always_subscription_failed", error=err)


def _taps(
    settings: Settings, sessions: dict[str, ProviderSession], replayer: Replayer | None,
) -> tuple[Recorder | None, Replayer | None]:
    """
    Put the recorder (``[record] dir``) or a replayer (``[providers.NAME]
    replay``, or the one given) between the sessions and their upstream.
    """
    recorder = None
    if settings.record.dir:
        from mdgate._recording.format import RecordingWriter
        from mdgate._recording.recorder import Recorder

        r = settings.record
        recorder = Recorder(RecordingWriter(Path(r.dir), max_bytes=r.max_bytes, max_seconds=r.max_seconds))
    replayers: dict[str, Replayer] = {}
    for name, session in sessions.items():
        path = settings.providers.get(name, {}).get("replay")
        if replayer is not None and name in replayer.providers:
            session.tap = replayer
        elif isinstance(path, str):
            if path not in replayers:
                from mdgate._recording.replay import Replayer

                replayers[path] = Replayer(path)
            session.tap = replayers[path]
        else:
            session.tap = recorder
    return recorder, replayer


def _fleet_role(gw: Gateway, role: str) -> FleetRole | None:
    """The parts ``role`` adds (None for ``all``); an ingest instance subscribes with no linger."""
    if role == "all":
        return None
    from mdgate._fleet.roles import fanout_role, ingest_role

    if role == "fanout":
        return fanout_role(gw.settings, gw.store, gw.latest, gw.fanout, gw.router.resolve)
    if role == "ingest":
        gw.subs.linger = 0.0  # the fan-out tier's demand lingers already
        return ingest_role(gw.settings, gw.sessions, gw.subs, gw.store, gw.gaps.gap, gw.queue, gw.seqs)
    return None


def store_unready(store: dict[str, Any]) -> list[str]:
    """Why the store makes the gateway unready (none: writable, or buffering within its limit)."""
    state = store.get("state")
    if state == "ok":
        return []
    kind, buffered, limit = store.get("kind", "store"), store.get("buffered", 0), store.get("buffer_max")
    if "error" not in store and isinstance(limit, int) and isinstance(buffered, int) and buffered < limit:
        return []  # down, but buffering within its limit: nothing is lost yet
    if "error" in store:
        return [f"store {kind} is down: {store['error']}"]
    if limit is None:
        return [f"store {kind} is {state}"]
    return [f"store {kind} is {state} and its buffer is full ({buffered} ticks waiting, buffer_max {limit}): "
            "new ticks push out the oldest"]


def _warn_if_empty(table: RouteTable) -> None:
    """An empty routing table refuses every instrument: say so loudly."""
    if not table.exchanges:
        log.error("route_table_empty", source=table.source, hint=empty_hint(table.source),
                  effect="every subscription is refused with no_route")
