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
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import structlog

from mdgate._backoff import Backoff
from mdgate._clock import MONOTONIC, Clock
from mdgate._config import RuntimeSettings
from mdgate._errors import (
    AuthenticationError,
    DecodeError,
    ProviderConnectionError,
    ProviderDisabled,
    ProviderError,
    RateLimitedError,
    SubscriptionRejected,
)
from mdgate._model import Tick
from mdgate._provider import Decoder, Endpoint, Frame, Transport
from mdgate._providers import checks as _checks
from mdgate._providers.checks import CONTAINED, BadTicks, PluginFault, call_hook, chunks, frames_of
from mdgate._providers.faults import PluginFaults
from mdgate._providers.registry import ProviderHooks
from mdgate._providers.states import ProviderState
from mdgate._providers.transport import Tap, open_upstream
from mdgate._providers.watchdog import MarketOpen, always_open, watch_stall
from mdgate._queue import TickQueue
from mdgate._ratelog import EveryLog

__all__ = ["Connection", "ProviderSession"]

log = structlog.get_logger(__name__)


class Connection:
    """One provider connection and its loop."""

    def __init__(self, session: ProviderSession, index: int) -> None:
        self.session = session
        self.index = index
        #: code -> instrument, everything this connection should carry.
        self.codes: dict[str, str] = {}
        self._to_sub: dict[str, str] = {}
        self._to_unsub: set[str] = set()
        self._wake = anyio.Event()
        self._has_codes = anyio.Event()
        self.state = ProviderState.CONNECTING
        self.connected_since: int | None = None
        self.last_rx = session.clock.now()
        #: Failed attempts since the last live connection, and the delays between them.
        self.backoff = Backoff(session.runtime.backoff_initial, session.runtime.backoff_max,
                               random=session.random)
        self._live = False
        #: When (epoch ms) and why a live connection ended, and the codes it carried (less those
        #: moved away since): a gap for each, reported once data flows again.
        self.dropped: tuple[int, str, set[str]] | None = None
        self._fault: BaseException | None = None
        self._handshake: list[Frame] = []
        # this connection's counters and endpoint; the session adds them up for /status
        self.url = ""
        self.reconnects = self.frames = self.ticks = 0

    # -- subscription changes (called from the subscription manager) ------

    def add(self, code: str, instrument: str) -> None:
        """Carry ``code`` on this connection (subscribed at once when connected)."""
        if not self.codes:
            self.last_rx = self.session.clock.now()
        self.codes[code] = instrument
        self._to_unsub.discard(code)
        self._to_sub[code] = instrument
        self._has_codes.set()
        self._wake.set()

    def relabel(self, code: str, instrument: str) -> None:
        """``code``, already carried, now stands for ``instrument``."""
        self.codes[code] = instrument

    def remove(self, code: str) -> None:
        """Stop carrying ``code`` (unsubscribed at once when connected)."""
        self.codes.pop(code, None)
        if self.dropped is not None:
            self.dropped[2].discard(code)  # served elsewhere meanwhile: no hole on this connection
        if self._to_sub.pop(code, None) is None:
            self._to_unsub.add(code)
        self._wake.set()

    # -- the loop ----------------------------------------------------------

    def _set_state(self, state: ProviderState) -> None:
        if state != self.state:
            self.state = state
            self.session.refresh_state()

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled."""
        s = self.session
        backoff = self.backoff
        first = True
        while True:
            if s.disabled_reason is not None:
                self._set_state(ProviderState.DISABLED)
                s.note_error(s.disabled_reason)
                await s.config_changed()
                continue
            if self.index > 0 and not self.codes:
                self._has_codes = anyio.Event()
                await self._has_codes.wait()
            if not first:
                self.reconnects += 1
            first = False
            delay: float
            try:
                await self._connect_and_serve()
                delay = 0.0  # pragma: no cover - serve only returns by raising
            except AuthenticationError as exc:
                self._set_state(ProviderState.AUTH_FAILED)
                s.note_error(exc.message, exc.hint)
                log.error("provider_auth_failed", provider=s.name, connection=self.index,
                          error=exc.message, code=exc.code, retry_in=s.runtime.auth_retry)
                await s.clock.wait(s.config_changed, s.runtime.auth_retry)
                backoff.reset()
                continue
            except ProviderDisabled as exc:
                self._set_state(ProviderState.DISABLED)
                s.note_error(exc.message)
                await s.config_changed()
                continue
            except ProviderError as exc:
                stalled = isinstance(exc, _checks.Stalled)
                self._set_state(ProviderState.STALLED if stalled else ProviderState.RECONNECTING)
                s.note_error(exc.message)
                if self._live:
                    backoff.reset()
                    why = "stall" if stalled else "reconnect"
                    self.dropped = self.dropped or (time.time_ns() // 1_000_000, why, set(self.codes))
                delay = backoff.hard() if isinstance(exc, RateLimitedError) else backoff.next()
                s.log_limited(f"disconnect:{self.index}", log.warning, "provider_disconnected",
                              provider=s.name, connection=self.index, error=exc.message,
                              retry_in=round(delay, 2))
            except Exception as exc:  # a plugin bug: report it, keep everything else running
                self._set_state(ProviderState.FAILED)
                hook, error = (exc.hook, exc.error) if isinstance(exc, PluginFault) else ("transport", exc)
                message = f"plugin {s.plugin!r}: {hook}: {s.faults.describe(error)}"
                s.note_error(message)
                s.faults.record(s.plugin, hook, error, provider=s.name, connection=self.index)
                if self._live:
                    backoff.reset()
                delay = backoff.next()
                s.log_limited(f"failed:{self.index}", log.error, "provider_failed", provider=s.name,
                              connection=self.index, plugin=s.plugin, hook=hook, error=message)
            self.connected_since = None
            await s.clock.wait(s.config_changed, delay)

    async def open(self) -> tuple[Transport, object]:
        """Open the upstream connection: through the session's tap (recording, replay) when it has one."""
        s = self.session
        opener = open_upstream if s.tap is None else s.tap.open
        transport, ep, self.url = await opener(s.name, s.hooks.connect, s.config, self.index)
        return transport, ep

    async def _connect_and_serve(self) -> None:
        s = self.session
        self._live = False
        self._fault = None
        transport, ep = await self.open()
        try:
            decoder: Decoder | None = call_hook(
                "mdgate_normalize", s.hooks.normalize, provider=s.name, config=s.config)
            if decoder is None:
                raise PluginFault("mdgate_normalize", "returned None, not a decoder")
            if s.tap is not None:
                transport, decoder = s.tap.wrap(s.name, self.index, transport, decoder, lambda: self._fault)
            # The handshake and the initial subscribe are sent by the writer task, so that the
            # reader runs from the start: if the provider refuses us (a disconnect packet, then a
            # close), the reader decodes why, even when a send fails first.
            self._handshake = list(ep.handshake) if isinstance(ep, Endpoint) else []
            self._to_unsub.clear()
            self._to_sub = dict(self.codes)
            self._wake.set()
            self.connected_since = time.time_ns() // 1_000_000
            self.last_rx = s.clock.now()
            self._set_state(ProviderState.CONNECTED)
            log.info("provider_connected", provider=s.name, connection=self.index,
                     url=self.url, subscriptions=len(self._to_sub))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._guard, self._writer, transport, decoder, tg.cancel_scope)
                tg.start_soon(self._guard, self._watchdog, transport, decoder, tg.cancel_scope)
                await self._guard(self._reader, transport, decoder, tg.cancel_scope, reader=True)
            if self._fault is not None:
                raise self._fault
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if s.closing and self.codes and self.state is ProviderState.CONNECTED:
                        with anyio.move_on_after(1.0):
                            await self._send(transport, "unsubscribe", list(self.codes), remaining=[])
                finally:  # an unsubscribe hook that raises must not leave the socket open
                    await transport.aclose()

    async def _guard(
        self, fn: Callable[[Transport, Decoder], Any], transport: Transport, decoder: Decoder,
        scope: anyio.CancelScope, *, reader: bool = False,
    ) -> None:
        try:
            await fn(transport, decoder)
        except Exception as exc:
            # The reader's error explains the end best (a provider's disconnect packet, decoded
            # from frames received before the close), so it overrides the writer's.
            if reader or self._fault is None:
                self._fault = exc
            if reader or isinstance(exc, _checks.Stalled) or not isinstance(exc, ProviderConnectionError):
                scope.cancel()
                return
            # A send failed because the connection is closing: let the reader drain what was
            # already received (it ends by itself on the close), but not for ever.
            await self.session.clock.sleep(2.0)
            scope.cancel()

    async def _reader(self, transport: Transport, decoder: Decoder) -> None:
        s = self.session
        recv = transport.recv
        feed = decoder.feed
        queue = s.queue
        put_nowait = queue.put_nowait
        monotonic = s.clock.now
        time_ns = time.time_ns
        skew = int(s.runtime.max_clock_skew * 1000)
        tick_type = Tick
        ticks: Any
        while True:
            frame = await recv()
            self.last_rx = monotonic()
            self.frames += 1
            recv_ts = time_ns() // 1_000_000
            if not self._live:  # data flows again: a hole since the last drop, if any, ends here
                self._go_live(recv_ts)
            try:
                ticks = feed(frame, recv_ts)
            except DecodeError as exc:
                s.count_decode_error(exc.kind, exc)
                ticks = exc.ticks
            except ProviderError as exc:
                good = s.screen(exc.ticks, recv_ts + skew) if exc.ticks else ()
                if good:
                    self.ticks += len(good)
                    await queue.put(good)
                raise
            except CONTAINED as exc:  # a decoder bug must not kill the stream
                s.count_decode_error("decoder_error", exc)
                s.faults.record(s.plugin, "decoder", exc, provider=s.name)
                continue
            # One pass over the frame's ticks checks them all (a Tick, dated no further than
            # max_clock_skew ahead of its receipt); any doubt takes the slow path, which keeps
            # the good ones and counts the rest.
            limit = recv_ts + skew
            try:
                if ticks.__class__ is not list:
                    raise BadTicks
                for t in ticks:
                    if not (t.__class__ is tick_type and t.ts <= limit):
                        raise BadTicks
            except Exception:
                ticks = s.screen(ticks, limit)
            if ticks:
                self.ticks += len(ticks)
                if not put_nowait(ticks):
                    await queue.put(ticks)

    def _go_live(self, now_ms: int) -> None:
        self._live = True
        s, dropped, self.dropped = self.session, self.dropped, None
        if dropped is not None and s.on_resume is not None:
            held = {c: i for c, i in self.codes.items() if c in dropped[2]}
            s.on_resume(held, dropped[0], dropped[1], now_ms)

    async def _send(self, transport: Transport, hook: str, codes: list[str], **extra: object) -> None:
        """Send what the plugin's subscribe or unsubscribe hook makes of ``codes``, in batches."""
        s = self.session
        for batch in chunks(codes, s.spec.max_per_message):
            for frame in frames_of(f"mdgate_{hook}", getattr(s.hooks, hook), provider=s.name,
                                   config=s.config, codes=list(batch), **extra):
                await transport.send(frame)

    async def _writer(self, transport: Transport, decoder: Decoder) -> None:
        s = self.session
        clock = s.clock
        interval = s.heartbeat_interval
        next_beat = clock.now() + interval if interval else None
        while True:
            timeout = None if next_beat is None else max(0.0, next_beat - clock.now())
            await clock.wait(self._wake.wait, timeout)
            self._wake = anyio.Event()
            if self._handshake:
                handshake, self._handshake = self._handshake, []
                for frame in handshake:
                    await transport.send(frame)
            if self._to_unsub:
                gone = [c for c in self._to_unsub if c not in self.codes]
                self._to_unsub.clear()
                try:
                    for code in gone:
                        decoder.untrack(code)
                except CONTAINED as exc:
                    raise PluginFault("decoder", exc) from exc
                await self._send(transport, "unsubscribe", gone, remaining=list(self.codes))
            if self._to_sub:
                new = dict(self._to_sub)
                self._to_sub.clear()
                try:
                    for code, instrument in new.items():
                        decoder.track(code, instrument)
                except CONTAINED as exc:
                    raise PluginFault("decoder", exc) from exc
                await self._send(transport, "subscribe", list(new))
                log.debug("provider_subscribed", provider=s.name, connection=self.index, count=len(new))
            if next_beat is not None and clock.now() >= next_beat:
                if self.codes:
                    frames = frames_of("mdgate_heartbeat", s.hooks.heartbeat, provider=s.name,
                                       config=s.config, codes=list(self.codes))
                    for frame in frames:
                        await transport.send(frame)
                next_beat = clock.now() + (interval or 0)

    async def _watchdog(self, transport: Transport, decoder: Decoder) -> None:
        s = self.session
        await watch_stall(s.name, s.clock, s.stall_timeout, self.codes, lambda: self.last_rx, s.market_open)


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
        for conn in self.conns:
            if len(conn.codes) < per:
                break
        else:
            if len(self.conns) >= self.spec.max_connections:
                raise SubscriptionRejected(
                    self.name,
                    f"limit reached: {per} instruments per connection x "
                    f"{self.spec.max_connections} connections = {self.capacity}",
                )
            conn = Connection(self, len(self.conns))
            self.conns.append(conn)
            if self._tg is not None:
                self._tg.start_soon(conn.run)
        conn.add(code, instrument)
        self._where[code] = conn

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
        state = ProviderState.worst(c.state for c in self.conns if c.index == 0 or c.codes)
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
                    if (c.index == 0 or c.codes) and c.state is not ProviderState.CONNECTED), default=0)

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
