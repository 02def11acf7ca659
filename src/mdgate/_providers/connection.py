"""
One provider connection and its loop (:class:`Connection`); the session that holds its
connections is :class:`mdgate._providers.session.ProviderSession`, whose module says what
the loop does, step by step.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import structlog

from mdgate._backoff import Backoff
from mdgate._errors import (
    AuthenticationError,
    DecodeError,
    ProviderConnectionError,
    ProviderDisabled,
    ProviderError,
    RateLimitedError,
)
from mdgate._model import Tick
from mdgate._provider import Decoder, Endpoint, Frame, Transport
from mdgate._providers import checks as _checks
from mdgate._providers.checks import CONTAINED, BadTicks, PluginFault, call_hook, chunks, frames_of
from mdgate._providers.states import ProviderState
from mdgate._providers.transport import open_upstream
from mdgate._providers.watchdog import watch_stall

__all__ = ["Connection", "SessionView"]

if TYPE_CHECKING:
    from mdgate._clock import Clock
    from mdgate._config import RuntimeSettings
    from mdgate._fleet.slots import SlotGate
    from mdgate._provider import ProviderSpec
    from mdgate._providers.faults import PluginFaults
    from mdgate._providers.registry import ProviderHooks
    from mdgate._providers.transport import Tap
    from mdgate._providers.upstream import UpstreamWebSocket
    from mdgate._providers.watchdog import MarketOpen
    from mdgate._queue import TickQueue


class SessionView(Protocol):
    """What a connection uses of its session (:class:`mdgate._providers.session.ProviderSession`)."""

    name: str
    plugin: str
    hooks: ProviderHooks
    spec: ProviderSpec
    config: object
    disabled_reason: str | None
    runtime: RuntimeSettings
    clock: Clock
    random: Callable[[], float]
    faults: PluginFaults
    queue: TickQueue
    tap: Tap | None
    gate: SlotGate | None
    closing: bool
    market_open: MarketOpen
    on_resume: Callable[[dict[str, str], int, str, int], None] | None

    @property
    def stall_timeout(self) -> float | None: ...
    @property
    def heartbeat_interval(self) -> float | None: ...
    async def config_changed(self) -> None: ...
    def note_error(self, message: str | None, hint: str | None = None) -> None: ...
    def log_limited(self, key: str, method: Callable[..., Any], event: str, **fields: Any) -> None: ...
    def count_decode_error(self, kind: str, exc: BaseException) -> None: ...
    def screen(self, items: object, limit: int) -> list[Tick]: ...
    def refresh_state(self) -> None: ...

log = structlog.get_logger("mdgate._providers.session")


class Connection:
    """One provider connection and its loop."""

    def __init__(self, session: SessionView, index: int) -> None:
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
        #: What ends the reader after the message it was decoded from (a provider's error packet).
        self._stop: BaseException | None = None
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
            gate = s.gate
            if (self.index > 0 or gate is not None) and not self.codes:
                self._has_codes = anyio.Event()
                await self._has_codes.wait()
            if gate is not None and self.index not in gate.held:
                await gate.wait(self.index)  # an ingest instance connects only on the slots it holds
                continue
            if not first:
                self.reconnects += 1
            first = False
            delay: float
            try:
                if gate is None:
                    await self._connect_and_serve()
                else:
                    with gate.holding(self.index):  # revoked: closed here, then back to waiting
                        await self._connect_and_serve()
                    self.connected_since = None
                    self._set_state(ProviderState.CONNECTING)
                    continue
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
        self._stop = None
        take = self._taker(decoder)
        # the core's own WebSocket (its module, and picows, are imported on the first connection)
        upstream = sys.modules.get("mdgate._providers.upstream")
        if upstream is not None and isinstance(transport, upstream.UpstreamWebSocket):
            await self._pushed(transport, take)
            return
        recv = transport.recv
        queue = self.session.queue
        put_nowait = queue.put_nowait
        while True:
            ticks = take(await recv())
            if ticks:
                if not put_nowait(ticks):
                    await queue.put(ticks)
            if self._stop is not None:
                raise self._stop

    async def _pushed(self, ws: UpstreamWebSocket, take: Callable[[Frame], list[Tick] | None]) -> None:
        """
        The reader of a picows connection: every message is decoded and queued inside the
        event loop's read callback (no task switch per frame). While the queue is full the
        socket is not read (TCP back-pressure) and what was decoded meanwhile waits here, in order.
        """
        queue = self.session.queue
        put_nowait = queue.put_nowait
        backlog: list[list[Tick]] = []
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] | None = None

        def wake() -> None:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        def sink(frame: Frame) -> None:
            if self._stop is not None:
                return
            try:
                ticks = take(frame)
            except Exception as exc:  # what the pull loop would have raised
                self._stop = exc
                ticks = None
            # once the queue refuses a batch it stays full until this callback returns, so what
            # follows in the same read goes to the backlog too: the order holds
            if ticks and not put_nowait(ticks, schedule=False):  # the read's burst flushes
                backlog.append(ticks)
                ws.pause_reading()
                wake()
            if self._stop is not None:
                ws.pause_reading()
                wake()

        # after each socket read, what it brought goes down the pipeline at once (no loop
        # iteration in between): at a real rate every tick is its own read
        ws.set_sink(sink, wake, queue.flush)
        while True:
            while backlog:  # the queue was full: wait for room, oldest first
                await queue.put(backlog.pop(0))
            if self._stop is not None:
                raise self._stop
            if ws.ended:
                raise ws.end_error()
            ws.resume_reading()
            waiter = loop.create_future()
            await waiter

    def _taker(self, decoder: Decoder) -> Callable[[Frame], list[Tick] | None]:
        """
        The reader's work on one received message: decode it, check the ticks and return
        those to queue. A provider error (decoded from the message) sets ``_stop``.
        """
        s = self.session
        feed = decoder.feed
        monotonic = s.clock.now
        time_ns = time.time_ns
        skew = int(s.runtime.max_clock_skew * 1000)
        tick_type = Tick

        def take(frame: Frame) -> list[Tick] | None:
            ticks: Any
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
                self._stop = exc
                if good:
                    self.ticks += len(good)
                    return list(good)
                return None
            except CONTAINED as exc:  # a decoder bug must not kill the stream
                s.count_decode_error("decoder_error", exc)
                s.faults.record(s.plugin, "decoder", exc, provider=s.name)
                return None
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
                return ticks  # type: ignore[no-any-return]
            return None

        return take

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
