"""
The official Python client of mdgate's WebSocket protocol (``docs/client-protocol.md``).

::

    from mdgate.client import TickEvent, connect

    async with connect("ws://127.0.0.1:8765/ws", token="...") as c:
        async for event in c.subscribe(["NSE:RELIANCE", "NASDAQ:AAPL"]):
            if isinstance(event, TickEvent):
                print(event.instrument, event.price)

Frames become typed events (:class:`TickEvent`, :class:`GapEvent`,
:class:`GapFilledEvent`, :class:`ProviderEvent`, :class:`ErrorEvent`,
:class:`Subscribed`, :class:`Unsubscribed`, :class:`Reconnected`). A dropped
connection is reopened with capped, fully jittered exponential backoff and
every instrument is subscribed again, with ``since`` (the last ``seq`` seen
per instrument) so that the gateway can replay what was missed; a tick whose
``seq`` is not above the last one seen for its instrument is never yielded
twice. The client starts no task of its own: it reads, and reconnects, while
you iterate. It imports only websockets and msgspec (no server part).
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any, Final

import msgspec
from websockets.asyncio.client import ClientConnection, connect as _ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from mdgate._backoff import Backoff
from mdgate._events import (
    ClientError,
    ConnectError,
    ErrorEvent,
    Event,
    GapEvent,
    GapFilledEvent,
    HandshakeRefused,
    ProtocolError,
    ProviderEvent,
    Reconnected,
    Subscribed,
    TickEvent,
    Unsubscribed,
    _State,
    _Ticks,
)

__all__ = [
    "Client", "ClientError", "ConnectError", "ErrorEvent", "Event", "GapEvent", "GapFilledEvent",
    "HandshakeRefused", "ProtocolError", "ProviderEvent", "Reconnected", "Subscribed", "TickEvent",
    "Unsubscribed", "connect",
]

#: The gateway's default ``[server] max_instruments_per_request``: larger requests are split.
MAX_PER_REQUEST: Final = 1000


# -- the client --------------------------------------------------------------------


def _chunks(names: list[str], size: int = MAX_PER_REQUEST) -> Iterable[list[str]]:
    return (names[i:i + size] for i in range(0, len(names), size))


def _names(instruments: Iterable[str] | str) -> list[str]:
    if isinstance(instruments, str):
        instruments = [instruments]
    return list(dict.fromkeys(name.strip().upper() for name in instruments))


class Client:
    """
    A connection to a gateway that survives drops. Made by :func:`connect`; use it as
    ``async with connect(...) as c``. Read events from one iterator at a time
    (:meth:`subscribe` or :meth:`events`): each yields the events of every subscription.
    """

    def __init__(
        self, url: str, *, token: str | None = None, backoff_initial: float = 0.5, backoff_max: float = 30.0,
        open_timeout: float = 10.0, retry_first: bool = False, max_size: int | None = 64 * 2**20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._backoff = Backoff(backoff_initial, backoff_max, random=random)
        self._open_timeout = open_timeout
        self._retry_first = retry_first
        self._max_size = max_size
        self._clock, self._sleep = clock, sleep
        self._state = _State()
        self._pending: deque[Event] = deque()
        self._ws: ClientConnection | None = None
        self._closed = False
        #: Whether the current connection delivered a frame (resets the backoff when it drops).
        self._delivered = False

    @property
    def instruments(self) -> list[str]:
        """The instruments this client wants (sent again on every reconnect)."""
        return list(self._state.wanted)

    @property
    def last_seq(self) -> Mapping[str, int]:
        """The last ``seq`` seen per instrument (what a reconnect resumes from)."""
        return dict(self._state.last_seq)

    @property
    def recovered(self) -> Mapping[str, bool]:
        """Per instrument, the gateway's latest ``recovered`` answer to a resume."""
        return dict(self._state.recovered)

    async def __aenter__(self) -> Client:
        try:
            self._ws = await self._open()
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if not self._retry_first:
                raise ConnectError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
            self._ws = await self._reconnect(str(exc) or type(exc).__name__, self._clock())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; iterators end. Safe to call twice."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await ws.close()
            finally:  # also when cancelled: the socket never outlives the client
                ws.transport.abort()

    def subscribe(self, instruments: Iterable[str] | str) -> _Subscription:
        """
        Subscribe to ``instruments`` (kept across reconnects).

        ``async for event in c.subscribe([...])`` sends the request, then yields
        events; ``await c.subscribe([...])`` only sends it (read with :meth:`events`).
        """
        return _Subscription(self, _names(instruments))

    async def unsubscribe(self, instruments: Iterable[str] | str) -> None:
        """Unsubscribe (also forgetting their last ``seq``); the answer comes as :class:`Unsubscribed`."""
        names = _names(instruments)
        for name in names:
            self._state.wanted.pop(name, None)
            self._state.last_seq.pop(name, None)
        await self._send_op("unsubscribe", names, {})

    async def _add(self, names: list[str]) -> None:
        for name in names:
            self._state.wanted[name] = None
        since = {n: s for n, s in self._state.last_seq.items() if n in names}
        await self._send_op("subscribe", names, since)

    async def _send_op(self, op: str, names: list[str], since: dict[str, int]) -> None:
        """Send ``op`` while connected; while not, the next reconnect sends what is wanted."""
        ws = self._ws
        if ws is None or not names:
            return
        try:
            for chunk in _chunks(names):
                request: dict[str, Any] = {"op": op, "instruments": chunk}
                part = {n: since[n] for n in chunk if n in since}
                if part:
                    request["since"] = part
                await ws.send(msgspec.json.encode(request).decode())
        except ConnectionClosed:
            pass  # the reader sees it and reconnects

    def events(self) -> AsyncIterator[Event]:
        """Every event of every subscription, reconnecting as needed, until :meth:`close`."""
        return _Events(self)

    async def _next(self) -> Event:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            ws = self._ws
            if ws is None:
                raise StopAsyncIteration
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                self._ws = None
                self._ws = await self._reconnect(_why(exc), self._clock())
                continue
            self._delivered = True
            self._pending.extend(self._state.feed(raw))
        return self._pending.popleft()

    async def _open(self) -> ClientConnection:
        """One connection attempt, then the resubscription of everything wanted."""
        try:
            ws = await _ws_connect(self.url, additional_headers=self._headers,
                                   open_timeout=self._open_timeout, max_size=self._max_size)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status != 429:
                raise HandshakeRefused(self.url, status) from None
            raise
        self._delivered = False
        self._ws = ws
        state = self._state
        await self._send_op("subscribe", list(state.wanted), state.since())
        return ws

    async def _reconnect(self, error: str, lost_at: float) -> ClientConnection:
        """Open a connection again, after a backoff delay before each attempt."""
        if self._delivered:
            self._backoff.reset()
        attempts = 0
        while True:
            await self._sleep(self._backoff.next())
            if self._closed:
                raise StopAsyncIteration
            attempts += 1
            try:
                ws = await self._open()
            except (OSError, TimeoutError, InvalidHandshake) as exc:  # not HandshakeRefused: it propagates
                error = str(exc) or type(exc).__name__
                continue
            state = self._state
            state.reconnect = (self._clock() - lost_at, attempts, error, tuple(state.since()))
            if not state.wanted:
                self._pending.append(state._reconnected(_Ticks(ticks=[])))
            return ws


def _why(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "connection lost"
    return f"closed by the gateway (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"


class _Events:
    """An async iterator over a client's events."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Event:
        return await self._client._next()


class _Subscription(_Events):
    """What :meth:`Client.subscribe` returns: iterate it, or await it to only send the request."""

    def __init__(self, client: Client, names: list[str]) -> None:
        super().__init__(client)
        self._names: list[str] | None = names

    async def _send(self) -> None:
        names, self._names = self._names, None
        if names is not None:
            await self._client._add(names)

    def __await__(self) -> Generator[Any, None, None]:
        return self._send().__await__()

    async def __anext__(self) -> Event:
        await self._send()
        return await super().__anext__()


def connect(
    url: str, *, token: str | None = None, backoff_initial: float = 0.5, backoff_max: float = 30.0,
    open_timeout: float = 10.0, retry_first: bool = False, max_size: int | None = 64 * 2**20,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    random: Callable[[], float] = _random.random,
) -> Client:
    """
    A client of the gateway at ``url`` (``ws://HOST:PORT/ws``), to use as ``async with``.

    Entering opens the connection (raising :class:`ConnectError` if it cannot, unless
    ``retry_first``); leaving closes it. A lost connection is opened again after a
    random delay in ``[0, min(backoff_max, backoff_initial * 2**n)]`` before attempt
    ``n`` (``n`` starts again from 0 after a connection that delivered a frame), and every
    instrument is subscribed again with ``since``. A handshake refused with HTTP 4xx
    (401: bad token) raises :class:`HandshakeRefused` and is never retried.

    Args:
        url: the gateway's WebSocket URL.
        token: sent as ``Authorization: Bearer TOKEN``.
        backoff_initial: ceiling of the first reconnect delay, seconds.
        backoff_max: the largest reconnect delay, seconds.
        open_timeout: seconds allowed for one opening handshake.
        retry_first: retry the first connection too (for applications started before the gateway).
        max_size: the largest frame accepted, bytes (``None``: no limit).
        clock: monotonic seconds (tests inject their own).
        sleep: the coroutine function that waits between attempts (tests inject their own).
        random: the jitter source, floats in ``[0, 1)`` (tests inject their own).

    Returns:
        The :class:`Client` (not connected until ``async with`` enters).
    """
    return Client(url, token=token, backoff_initial=backoff_initial, backoff_max=backoff_max,
                  open_timeout=open_timeout, retry_first=retry_first, max_size=max_size, clock=clock,
                  sleep=sleep, random=random)
