"""
The gateway: wires routes -> provider sessions -> pipeline -> store + fan-out
-> client server, and owns start-up, reload and graceful shutdown.

Task tree (anyio)::

    Gateway.run
    ├── store.run                       (background writes, reconnects)
    ├── ProviderSession.run  x provider (one task per connection)
    ├── pipeline                        (TickQueue -> latest, store.write, fanout.publish)
    ├── SubscriptionManager.run         (linger expiry, failover / fail-back)
    ├── route source watch              (PostgreSQL LISTEN/NOTIFY), if any
    ├── stats                           (one session_stats line per provider)
    └── ClientServer.run                (WebSocket + HTTP)
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import structlog

from mdgate._config import Settings, load_settings
from mdgate._errors import ConfigError, MdgateError
from mdgate._model import Tick
from mdgate._providers.calls import select_route_source, select_store_and_plugin
from mdgate._providers.checks import screen
from mdgate._providers.registry import Registry, load_registry
from mdgate._providers.session import ProviderSession
from mdgate._queue import TickQueue
from mdgate._ratelog import EveryLog
from mdgate._routing.router import Router, config_table, parse_provider_configs
from mdgate._routing.subscriptions import SubscriptionManager
from mdgate._routing.table import RouteSource, RouteTable, empty_hint, routing_health
from mdgate._serve.fanout import Fanout
from mdgate._serve.server import ClientServer, merge_latest
from mdgate.plugins.stores.protocol import Store

__all__ = ["Gateway"]

log = structlog.get_logger(__name__)

class Gateway:
    """One mdgate daemon."""

    def __init__(
        self, settings: Settings, registry: Registry | None = None, *, config_path: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.registry = registry or load_registry(settings.environ)
        configs = parse_provider_configs(self.registry, settings)
        # a faulty store or route-source plugin is contained: memory store / built-in routes, degraded
        self.store: Store
        self.store, self._store_plugin = select_store_and_plugin(self.registry, settings)
        self._store_fault: str | None = None
        self.route_source: RouteSource | None
        self.route_source, self.route_source_plugin = select_route_source(self.registry, settings)
        self.router = Router(self.registry, configs, config_table(self.registry, settings, self.route_source))
        self.queue = TickQueue(settings.runtime.queue_size)
        self.sessions = {
            name: ProviderSession(
                hooks, configs.configs.get(name), configs.disabled.get(name), self.queue, settings.runtime,
                faults=self.registry.faults,
            )
            for name, hooks in self.registry.providers.items()
        }
        self.subs = SubscriptionManager(
            self.router, self.sessions, settings.runtime, settings.subscriptions.linger,
        )
        self.fanout = Fanout(settings.server.max_ticks_per_frame, framed=not settings.server.compression)
        self.server = ClientServer(self)
        self.latest: dict[str, Tick] = {}
        self.started_at = time.time()
        self.ticks_in = 0
        self.batches = 0
        self.pipeline_errors = 0
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
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
        if not isinstance(table, RouteTable):
            self._route_source_fault("load", f"returned {type(table).__name__}, not a RouteTable")
            return
        self.router.table = table
        log.info("routes_loaded", source=table.source, exchanges=len(table.exchanges),
                 instruments=len(table.codes))
        _warn_if_empty(table)

    def _route_source_fault(self, method: str, exc: BaseException | str) -> None:
        self.registry.faults.record(self.route_source_plugin or "route_source", f"route_source.{method}", exc,
                                    using="the routes in use")

    def _on_routes(self, table: object) -> None:
        if not isinstance(table, RouteTable):
            self._route_source_fault("watch", f"delivered {type(table).__name__}, not a RouteTable")
            return
        self.router.table = table
        log.info("route_table_reloaded", source=table.source, exchanges=len(table.exchanges),
                 instruments=len(table.codes))
        _warn_if_empty(table)
        self.subs.reroute()

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

                await tg.start(scoped, "store", self._run_store)
                await tg.start(scoped, "providers", self._run_providers)
                await tg.start(scoped, "work", self._run_work)
                port: int = await tg.start(scoped, "server", self.server.run)
                for err in self.subs.set_always(self.settings.subscriptions.always):
                    log.error("always_subscription_failed", error=err)
                log.info("gateway_started", port=port, providers=sorted(self.sessions),
                         store=self.store.kind, routes=self.router.table.source,
                         startup_ms=int((time.time() - self.started_at) * 1000))
                task_status.started(port)
                # start-up objects (plugins, protobuf, routing, redis-py, websockets) live for
                # ever: take them out of the collector's working set so full collections stay
                # short (a 20-50 ms pause is a p99 miss by itself)
                gc.collect()
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
            rest = self.queue.drain()
            try:
                if rest:
                    self.store.write(rest)
                await self.store.aclose()
            except Exception as exc:  # a store plugin's bug must not spoil the shutdown
                self.registry.faults.record(self._store_plugin, "store.aclose", exc)
            scopes["store"].cancel()
        log.info("gateway_stopped", seconds=round(time.monotonic() - t0, 3),
                 timed_out=scope.cancelled_caught)

    async def _run_store(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        # A store plugin whose background task raises is a plugin fault: recorded, the store shows
        # `down`, and live ticks keep flowing to clients; the daemon stays up.
        try:
            await self.store.run(task_status=task_status)
        except Exception as exc:
            self._store_fault = self.registry.faults.describe(exc)
            self.registry.faults.record(self._store_plugin, "store.run", exc, lasting=True,
                                        consequence="ticks are no longer stored until a restart")
            with contextlib.suppress(RuntimeError):  # it may have reported itself started already
                task_status.started()
            await anyio.sleep_forever()

    def _store_status(self) -> dict[str, Any]:
        if self._store_fault is not None:
            return {"kind": self.store.kind, "state": "down", "error": self._store_fault}
        try:
            status = self.store.status()
            if not isinstance(status, dict):
                raise TypeError(f"status() returned {type(status).__name__}, not a dict")
            return status
        except Exception as exc:
            self.registry.faults.record(self._store_plugin, "store.status", exc)
            return {"kind": self.store.kind, "state": "down", "error": self.registry.faults.describe(exc)}

    async def _run_providers(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            for s in self.sessions.values():
                await tg.start(s.run)
            task_status.started()

    async def _run_work(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pipeline)
            tg.start_soon(self.subs.run)
            tg.start_soon(self._stats)
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

    async def _pipeline(self) -> None:
        get = self.queue.get_batch
        latest = self.latest
        store_write = self.store.write
        publish = self.fanout.publish
        every = EveryLog()
        while True:
            batch = await get()
            try:
                _advance_latest(latest, batch)
            except Exception as exc:  # a malformed tick that got past the reader's check
                batch, bad, _ = screen(batch, float("inf"))  # the reader dropped future ticks
                self.pipeline_errors += 1
                every.log("bad_tick", log.error, "pipeline_bad_tick", error=repr(exc)[:200],
                          dropped=bad[0] if bad else 0)
                _advance_latest(latest, batch)
            try:
                store_write(batch)
            except Exception as exc:  # a store bug must not stop the feed (nor flood the log)
                self.pipeline_errors += 1
                every.log("store", log.error, "store_write_failed", error=repr(exc)[:200])
            try:
                publish(batch)
            except Exception as exc:  # neither may a fan-out bug
                self.pipeline_errors += 1
                every.log("fanout", log.error, "fanout_publish_failed", error=repr(exc)[:200])
            self.ticks_in += len(batch)
            self.batches += 1

    async def _stats(self) -> None:
        interval = self.settings.runtime.stats_interval
        last: dict[str, tuple[int, int]] = {}
        while True:
            await anyio.sleep(interval)
            for name, s in self.sessions.items():
                frames, ticks = last.get(name, (0, 0))
                log.info("session_stats", provider=name, state=s.state, subscriptions=s.subscriptions,
                         frames=s.frames - frames, ticks=s.ticks - ticks,
                         decode_errors=sum(s.decode_errors.values()), reconnects=s.reconnects,
                         interval_s=interval)
                last[name] = (s.frames, s.ticks)

    # -- queries -------------------------------------------------------------

    async def snapshot(self, instruments: list[str]) -> list[Tick]:
        """
        Latest tick of each instrument: this process's own, else the store's.

        Only instruments this process has seen no tick of are asked from the
        store (e.g. right after a restart). A newer tick that *another*
        gateway wrote to Redis for an instrument this one also ingests is not
        in the snapshot; the next tick brings it.
        """
        mem = {i: self.latest[i] for i in instruments if i in self.latest}
        missing = [i for i in instruments if i not in mem]
        stored: dict[str, Tick] = {}
        if missing and self.store.kind != "memory":
            try:
                with anyio.fail_after(1.0):
                    stored = await self.store.latest(missing)
            except Exception as exc:
                log.warning("snapshot_store_failed", error=str(exc))
        merged = merge_latest(stored, mem)
        return [merged[i] for i in instruments if i in merged]

    def status(self) -> dict[str, Any]:
        """The ``/status`` document (no secrets)."""
        providers = {name: s.status() for name, s in self.sessions.items()}
        store = self._store_status()
        routing = routing_health(self.router.table, self.route_source)
        degraded = store.get("state") != "ok" or any(s.state.bad for s in self.sessions.values())
        degraded = degraded or routing["state"] != "ok"
        # a plugin that failed (to load; its store or routes replaced) or faulted in the last minute
        degraded = degraded or self.registry.faults.degraded()
        return {
            "status": "degraded" if degraded else "ok",
            "providers": providers,
            "store": store,
            "clients": self.server.clients,
            "server": self.server.status(),
            "routing": {**routing, **self.subs.status()},
            "plugins": self.registry.faults.status(),
            "pipeline": {"ticks": self.ticks_in, "batches": self.batches, "queued": len(self.queue),
                         "backpressure_waits": self.queue.waits,
                         "errors": self.pipeline_errors, "fanout_ticks": self.fanout.published,
                         "conflated": self.server.conflated},
            "uptime_s": int(time.time() - self.started_at),
        }

    # -- reload ----------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the configuration (SIGHUP); keep clients. Returns success."""
        try:
            new = load_settings(self.config_path, os.environ)
            configs = parse_provider_configs(self.registry, new, self.router.configs)
        except ConfigError as exc:
            log.error("config_reload_failed", key=exc.key, error=exc.message)
            return False
        old = self.settings
        for key in ("server.host", "server.port", "redis.url", "database.url"):
            section, field = key.split(".")
            if getattr(getattr(old, section), field) != getattr(getattr(new, section), field):
                log.warning("config_change_needs_restart", key=key)
        self.settings = dataclasses.replace(
            new, server=dataclasses.replace(new.server, host=old.server.host, port=old.server.port),
        )
        self.router.configs = configs
        for name, s in self.sessions.items():
            s.update_config(configs.configs.get(name), configs.disabled.get(name))
        self.subs.linger = new.subscriptions.linger
        if self.route_source is None:
            self.router.table = config_table(self.registry, new)
            self.subs.reroute()
        for err in self.subs.set_always(new.subscriptions.always):
            log.error("always_subscription_failed", error=err)
        log.info("config_reloaded", source=new.source)
        return True


def _advance_latest(latest: dict[str, Tick], batch: list[Tick]) -> None:
    """Make each tick its instrument's latest, unless an older one (smaller ``ts``): latest only moves on."""
    for t in batch:
        prev = latest.get(t.instrument)
        if prev is None or t.ts >= prev.ts:
            latest[t.instrument] = t


def _warn_if_empty(table: RouteTable) -> None:
    """An empty routing table refuses every instrument: say so loudly."""
    if not table.exchanges:
        log.error("route_table_empty", source=table.source, hint=empty_hint(table.source),
                  effect="every subscription is refused with no_route")
