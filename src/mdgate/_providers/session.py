"""
The connection runtime: one :class:`ProviderSession` per provider, holding
one or more :class:`Connection` loops.

Each connection loop, written once for every provider:

1. asks the plugin where to connect (``mdgate_connect``, per attempt);
2. opens the WebSocket (or the plugin's own transport), sends the handshake;
3. builds a fresh decoder (``mdgate_normalize``), tracks every code, and
   subscribes them all in batches of ``max_per_message``;
4. reads frames, decodes them with no pluggy call in between, checks the
   decoder's output in the same pass (a list of :class:`~mdgate._model.Tick`,
   none dated more than ``max_clock_skew`` ahead of its receipt) and hands the
   ticks to the pipeline's :class:`~mdgate._queue.TickQueue`;
5. meanwhile sends subscription changes and heartbeats, and a watchdog
   reconnects a subscribed connection that received nothing for
   ``stall_timeout`` seconds while a market of its instruments is open (``watchdog.py``);
6. on failure, backs off (:class:`~mdgate._backoff.Backoff`: capped exponential, full
   jitter, reset once a connection was live) and goes to 1; an authentication failure
   waits ``auth_retry`` seconds, or until the configuration brings new credentials.

Whatever the plugin raises or returns wrongly (a hook, its decoder) is contained here and
recorded in the plugin-fault ledger (:class:`~mdgate._providers.faults.PluginFaults`) under
the hook's name. Every time rule reads and waits on the session's
:class:`~mdgate._clock.Clock`, which tests replace with a :class:`~mdgate._clock.ManualClock`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import structlog

from mdgate._clock import MONOTONIC, Clock
from mdgate._config import RuntimeSettings
from mdgate._errors import SubscriptionRejected
from mdgate._fleet.slots import SlotGate
from mdgate._model import Tick
from mdgate._providers import checks as _checks
from mdgate._providers.connection import Connection
from mdgate._providers.faults import PluginFaults
from mdgate._providers.registry import ProviderHooks
from mdgate._providers.states import ProviderState
from mdgate._providers.transport import Tap
from mdgate._providers.watchdog import MarketOpen, always_open
from mdgate._queue import TickQueue
from mdgate._ratelog import EveryLog

__all__ = ["Connection", "ProviderSession"]

log = structlog.get_logger(__name__)


class ProviderSession:
    """All connections of one provider, their subscriptions and status."""

    def __init__(
        self, hooks: ProviderHooks, config: object, disabled_reason: str | None,
        queue: TickQueue, runtime: RuntimeSettings, *, faults: PluginFaults | None = None,
        clock: Clock = MONOTONIC, random: Callable[[], float] = random.random,
    ) -> None:
        """``faults``: the registry's plugin-fault ledger; ``clock``, ``random``: for tests."""
        self.hooks = hooks
        self.faults = faults if faults is not None else PluginFaults()
        self.clock = clock
        self.random = random
        self.spec = hooks.spec
        self.name = hooks.spec.name
        self.plugin = hooks.plugin
        self.config = config
        self.disabled_reason = disabled_reason
        self.queue = queue
        self.runtime = runtime
        self.closing = False
        #: Told when a connection is live again after a drop: (code -> instrument, from_ms, why, to_ms).
        self.on_resume: Callable[[dict[str, str], int, str, int], None] | None = None
        #: Records or replays the connections (``mdgate record``, ``mdgate replay``); None: live.
        self.tap: Tap | None = None
        #: Whether the markets of some instruments are open, and since when (set by the gateway).
        self.market_open: MarketOpen = always_open
        self.conns: list[Connection] = [Connection(self, 0)]
        #: An ingest instance's slot gate (``mdgate run --role ingest``); None: every connection may run.
        self.gate: SlotGate | None = None
        self._where: dict[str, Connection] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._config_event = anyio.Event()
        self._log_every = EveryLog(clock=clock.now)
        # status
        self.last_error: str | None = disabled_reason
        self.hint: str | None = None
        self.decode_errors: dict[str, int] = {}
        self.state = ProviderState.DISABLED if disabled_reason else ProviderState.CONNECTING
        self.down_since: float | None = clock.now()
        self.healthy_since: float | None = None

    # -- configuration -----------------------------------------------------

    @property
    def stall_timeout(self) -> float | None:
        """Seconds of silence, while subscribed, that count as a stall."""
        default = self.spec.stall_timeout or self.runtime.stall_timeout
        return _checks.config_seconds(self.config, "stall_timeout", default)

    @property
    def heartbeat_interval(self) -> float | None:
        """Seconds between heartbeats, or None."""
        return _checks.config_seconds(self.config, "heartbeat_interval", self.spec.heartbeat_interval)

    async def config_changed(self) -> None:
        """Wait until :meth:`update_config` is called."""
        await self._config_event.wait()

    def update_config(self, config: object, disabled_reason: str | None) -> None:
        """Apply a reloaded configuration; wakes connections waiting on credentials."""
        changed = config != self.config or disabled_reason != self.disabled_reason
        self.config = config
        self.disabled_reason = disabled_reason
        if changed:
            log.info("provider_config_reloaded", provider=self.name)
            event, self._config_event = self._config_event, anyio.Event()
            event.set()

    # -- subscriptions -----------------------------------------------------

    @property
    def capacity(self) -> int:
        """Most instruments this provider can carry."""
        return self.spec.max_per_connection * self.spec.max_connections

    def add(self, code: str, instrument: str) -> None:
        """
        Subscribe ``code`` for ``instrument``, opening a further connection
        when the existing ones are full.

        Raises:
            SubscriptionRejected: every allowed connection is full.
        """
        conn = self._where.get(code)
        if conn is not None:
            conn.relabel(code, instrument)
            return
        per = self.spec.max_per_connection
        if self.gate is not None:  # an ingest instance: the instrument's slot is its connection
            conn = self._slot(self.gate.place(instrument))
            if len(conn.codes) >= per:
                raise SubscriptionRejected(self.name, f"connection slot {conn.index} is full ({per})")
        else:
            for conn in self.conns:
                if len(conn.codes) < per:
                    break
            else:
                if len(self.conns) >= self.spec.max_connections:
                    raise SubscriptionRejected(
                        self.name, f"limit reached: {per} instruments per connection x "
                        f"{self.spec.max_connections} connections = {self.capacity}")
                conn = self._slot(len(self.conns))
        conn.add(code, instrument)
        self._where[code] = conn

    def _slot(self, index: int) -> Connection:
        """Connection ``index``, with the ones before it, started if the session runs."""
        if index >= self.spec.max_connections:
            raise SubscriptionRejected(
                self.name, f"no connection slot {index}: at most {self.spec.max_connections} connections")
        while len(self.conns) <= index:
            conn = Connection(self, len(self.conns))
            self.conns.append(conn)
            if self._tg is not None:
                self._tg.start_soon(conn.run)
        return self.conns[index]

    def remove(self, code: str) -> None:
        """Unsubscribe ``code``."""
        conn = self._where.pop(code, None)
        if conn is not None:
            conn.remove(code)
            if not conn.codes:  # a further connection without codes no longer counts
                self.refresh_state()

    @property
    def subscriptions(self) -> int:
        """Number of codes carried."""
        return len(self._where)

    # -- running -----------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every connection until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for conn in self.conns:
                tg.start_soon(conn.run)
            task_status.started()

    # -- plugin calls and decoder output -----------------------------------

    def screen(self, items: object, limit: int) -> list[Tick]:
        """
        The reader's slow path: the valid ticks of a decoder's result. Bad
        items are counted (``bad_tick``, and a plugin fault of the decoder),
        ticks dated after ``limit`` (epoch ms) too (``bad_ts``).
        """
        good, bad_items, bad_ts = _checks.screen(items, limit)
        if bad_items:
            self.decode_errors["bad_tick"] = self.decode_errors.get("bad_tick", 0) + bad_items[0]
            self.faults.record(self.plugin, "decoder", bad_items[1], provider=self.name)
        if bad_ts:
            n, first = len(bad_ts), bad_ts[0]
            self.decode_errors["bad_ts"] = self.decode_errors.get("bad_ts", 0) + n
            self._log_every("bad_ts", lambda suppressed: log.warning(
                "tick_bad_ts", provider=self.name, instrument=str(first.instrument)[:64],
                ts=first.ts, recv_ts=first.recv_ts, max_clock_skew=self.runtime.max_clock_skew,
                dropped=n, suppressed=suppressed))
        return good

    # -- status ------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        """Connection attempts after a connection's first, over all connections."""
        return sum(c.reconnects for c in self.conns)

    @property
    def frames(self) -> int:
        """Frames received, over all connections."""
        return sum(c.frames for c in self.conns)

    @property
    def ticks(self) -> int:
        """Ticks handed to the pipeline, over all connections."""
        return sum(c.ticks for c in self.conns)

    def note_error(self, message: str | None, hint: str | None = None) -> None:
        """Record why a connection is not connected (``last_error``) and what would fix it."""
        self.last_error, self.hint = message, hint

    def log_limited(self, key: str, method: Callable[..., Any], event: str, **fields: Any) -> None:
        """Log ``event`` with ``method`` at most once per 10 s per ``key`` (counting the rest)."""
        self._log_every.log(key, method, event, **fields)

    def count_decode_error(self, kind: str, exc: BaseException) -> None:
        """Count a frame the decoder could not decode, by ``kind``, and log it (rate-limited)."""
        self.decode_errors[kind] = self.decode_errors.get(kind, 0) + 1
        excerpt = getattr(exc, "excerpt", b"")
        self._log_every(f"decode:{kind}", lambda n: log.warning(
            "decode_failed", provider=self.name, kind=kind, error=str(exc)[:200],
            excerpt=repr(excerpt)[:100], suppressed=n))

    def refresh_state(self) -> None:
        """Take the worst state of the connections that count (the first, and any carrying codes)."""
        state = ProviderState.worst(c.state for c in self.conns if self._counts(c))
        if state is self.state:
            return
        now = self.clock.now()
        if state is ProviderState.CONNECTED:
            self.healthy_since, self.down_since = now, None
        elif self.state is ProviderState.CONNECTED or self.down_since is None:
            self.down_since, self.healthy_since = now, None
        self.state = state

    @property
    def attempts(self) -> int:
        """Failed attempts in a row of the worst connection not connected now (0 when all are)."""
        return max((c.backoff.attempts for c in self.conns
                    if self._counts(c) and c.state is not ProviderState.CONNECTED), default=0)

    def _counts(self, c: Connection) -> bool:
        """Whether ``c``'s state counts: the first, and any carrying codes (gated: on a held slot)."""
        if self.gate is not None:
            return bool(c.codes) and c.index in self.gate.held
        return c.index == 0 or bool(c.codes)

    def is_down(self, after: float) -> bool:
        """Down: fatal state now, or not connected for ``after`` seconds."""
        if self.state.fatal:
            return True
        return self.down_since is not None and self.clock.now() - self.down_since >= after

    def healthy_for(self, seconds: float) -> bool:
        """Connected without interruption for at least ``seconds``."""
        return self.healthy_since is not None and self.clock.now() - self.healthy_since >= seconds

    def status(self) -> dict[str, Any]:
        """The provider's ``/status`` entry (no secrets)."""
        connected = [c for c in self.conns if c.state is ProviderState.CONNECTED]
        since = min((c.connected_since for c in connected if c.connected_since), default=None)
        last_rx = max((c.last_rx for c in connected), default=None)
        return {
            "state": self.state,
            "connections": len(connected),
            "connected_since": since,
            "last_message_age_ms": int((self.clock.now() - last_rx) * 1000) if last_rx is not None else None,
            "subscriptions": self.subscriptions,
            "reconnects": self.reconnects,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "hint": self.hint,
            "frames": self.frames,
            "ticks": self.ticks,
            "decode_errors": sum(self.decode_errors.values()),
            "decode_errors_by_kind": dict(self.decode_errors),
            "code": self.spec.code,
            "url": next((c.url for c in self.conns if c.url), ""),  # the first connection's, else any's
        }
