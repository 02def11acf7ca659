"""
Fake provider servers: a real WebSocket server on 127.0.0.1 standing in for a provider.

:class:`FakeProviderServer` is the base every provider's fake extends
(``mdgate_yahoo.testing.FakeYahooServer``, ``mdgate_dhan.testing.FakeDhanServer``,
the example provider's ``FakeExampleServer``). It owns what every fake needs,
under one set of names:

* life cycle: :meth:`~FakeProviderServer.start` / :meth:`~FakeProviderServer.stop`
  on a free loopback port (``port=0``), or ``async with``; :attr:`~FakeProviderServer.url`;
* what clients did: :attr:`~FakeProviderServer.history` (every accepted
  :class:`FakeConnection`), :attr:`~FakeProviderServer.connections` (the open
  ones), :attr:`~FakeProviderServer.accepted`, :attr:`~FakeProviderServer.received`
  (every client frame), :attr:`~FakeProviderServer.subscribe_requests` /
  :attr:`~FakeProviderServer.unsubscribe_requests` and
  :attr:`~FakeProviderServer.subscribed` (codes held by open connections),
  :attr:`~FakeProviderServer.peak_by_credential` (the most connections open at once per credential);
* waiting: :meth:`~FakeProviderServer.wait_until` (a predicate on the server),
  :meth:`~FakeProviderServer.wait_subscribed`, :meth:`~FakeProviderServer.wait_connections`;
* sending: :meth:`~FakeProviderServer.send` (one connection or all),
  :meth:`~FakeProviderServer.send_to_holders` (those subscribed to a code);
  a subclass adds ``send_<packet>`` helpers for its protocol;
* faults: :meth:`~FakeProviderServer.drop` (abort, no close frame),
  :meth:`~FakeProviderServer.close_all` (clean close), :meth:`~FakeProviderServer.go_silent`,
  and the scriptable ones every provider's fake inherits:
  :meth:`~FakeProviderServer.drop_after` (abort after N more frames sent),
  :meth:`~FakeProviderServer.freeze` (keep the sockets open, stop reading and
  writing), :meth:`~FakeProviderServer.flood` (one frame N times, fast),
  :meth:`~FakeProviderServer.refuse_for` (answer handshakes with HTTP 503 for T
  seconds of :attr:`~FakeProviderServer.clock`) and
  :meth:`~FakeProviderServer.expire_credentials` (a flag each protocol's fake
  honours the way its provider signals an authentication failure);
  :meth:`~FakeProviderServer.send_malformed` is protocol-specific (each fake
  implements it).

A subclass speaks its protocol by overriding :meth:`~FakeProviderServer.on_connect`,
:meth:`~FakeProviderServer.on_frame` and, to refuse handshakes,
:meth:`~FakeProviderServer.process_request`; it records subscriptions with
:meth:`~FakeProviderServer.record_subscribe` / :meth:`~FakeProviderServer.record_unsubscribe`.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

import anyio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mdgate import Frame

__all__ = ["FakeConnection", "FakeFeedServer", "FakeProviderServer"]


@dataclass(eq=False)
class FakeConnection:
    """
    One client connection as a fake server sees it.

    Attributes:
        id: 1, 2, ... in accept order.
        ws: the server side of the WebSocket.
        path: the request path with its query string.
        subscribed: code -> what the protocol recorded with it (a mode, or
            ``True``), in subscription order.
        frames: every frame this client sent.
        silent: the server sends nothing more on it (:meth:`FakeProviderServer.go_silent`).
        frozen: the server neither reads nor writes on it (:meth:`FakeProviderServer.freeze`).
        closed: the connection is over.
        sent: frames the server sent on it.
    """

    id: int
    ws: ServerConnection
    path: str = ""
    subscribed: dict[str, object] = field(default_factory=dict)
    frames: list[Frame] = field(default_factory=list)
    silent: bool = False
    frozen: bool = False
    closed: bool = False
    sent: int = 0


C = TypeVar("C", bound=FakeConnection)


class FakeProviderServer(Generic[C]):
    """
    The base of every fake provider (see the module docstring).

    Args:
        host: listen address.
        port: listen port; 0 picks a free one (see :attr:`port` once started).
        ping_interval: WebSocket pings from the server (``None``: off).
        clock: seconds for :meth:`refuse_for` (a test may pass the
            ``now`` of a :class:`~mdgate._clock.ManualClock`); default ``time.monotonic``.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, ping_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.ping_interval = ping_interval
        self.clock = clock
        #: Set by :meth:`expire_credentials`: the fake refuses authentication
        #: (each protocol's fake signals it the way its provider does).
        self.credentials_expired = False
        #: Handshakes seen (accepted or refused), and those refused by :meth:`refuse_for`.
        self.handshakes = 0
        self.refused = 0
        #: When a list, every frame sent through :meth:`send` / :meth:`send_to_holders`
        #: is appended to it (recording golden files).
        self.sent_frames: list[Frame] | None = None
        #: Every connection accepted, oldest first.
        self.history: list[C] = []
        #: Every frame any client sent, in arrival order.
        self.received: list[Frame] = []
        #: The codes of every subscribe request, in arrival order.
        self.subscribe_requests: list[list[str]] = []
        #: The codes of every unsubscribe request, in arrival order.
        self.unsubscribe_requests: list[list[str]] = []
        #: credential -> the most connections open at once with it (see :meth:`credential`).
        self.peak_by_credential: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._changed = anyio.Event()
        self._refuse_until: float | None = None
        self._drop_budget: int | None = None
        self._thawed = anyio.Event()

    # ------------------------------------------------------------------ life cycle

    def new_connection(self, cid: int, ws: ServerConnection, path: str) -> C:
        """Build the record of a new connection (a subclass returns its own type)."""
        return FakeConnection(cid, ws, path)  # type: ignore[return-value]

    async def start(self) -> None:
        """Start listening (``port=0`` picks a free port, stored in :attr:`port`)."""
        self._server = await serve(
            self._handler, self.host, self.port, process_request=self._process_request,
            compression=None, ping_interval=self.ping_interval, ping_timeout=None, reuse_address=True,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Abort every connection and stop listening."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        self.drop()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The URL clients connect to (``ws://127.0.0.1:PORT``)."""
        return f"ws://{self.host}:{self.port}"

    # ------------------------------------------------------------------ inspection

    @property
    def connections(self) -> list[C]:
        """Open connections, oldest first."""
        return [c for c in self.history if not c.closed]

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return len(self.history)

    @property
    def subscribed(self) -> set[str]:
        """Codes subscribed on any open connection."""
        return {code for c in self.history if not c.closed for code in c.subscribed}

    def holders(self, code: str) -> list[C]:
        """Open connections subscribed to ``code``."""
        return [c for c in self.history if not c.closed and code in c.subscribed]

    # ------------------------------------------------------------------ waiting

    def notify(self) -> None:
        """Wake every :meth:`wait_until` (it re-checks its predicate)."""
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def wait_until(self, predicate: Callable[[Self], bool], timeout: float = 10.0) -> None:
        """
        Wait until ``predicate(self)`` holds.

        Re-checked on every change the server sees (connection, frame,
        close) and at least every 50 ms (for predicates on other state).

        Raises:
            TimeoutError: after ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while not predicate(self):
                with anyio.move_on_after(0.05):
                    await self._changed.wait()

    async def wait_subscribed(self, *codes: str, timeout: float = 10.0) -> None:
        """Wait until every one of ``codes`` is subscribed on some open connection."""
        wanted = set(codes)
        await self.wait_until(lambda s: wanted <= s.subscribed, timeout)

    async def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` connections were accepted in total."""
        await self.wait_until(lambda s: s.accepted >= count, timeout)

    # ------------------------------------------------------------------ sending

    async def send(self, frame: Frame, conn: C | None = None) -> int:
        """
        Send one frame to ``conn``, or to every open connection.

        Returns:
            How many connections it was sent to (silent and closed ones are skipped).
        """
        return await self._send_each([conn] if conn is not None else self.connections, frame)

    async def send_to_holders(self, code: str, frame: Frame) -> int:
        """Send one frame to every open connection subscribed to ``code``; return how many."""
        return await self._send_each(self.holders(code), frame)

    async def _send_each(self, conns: Iterable[C], frame: Frame) -> int:
        sent = 0
        for conn in conns:
            if conn.silent or conn.frozen or conn.closed:
                continue
            try:
                await conn.ws.send(frame)
            except ConnectionClosed:
                continue
            sent += 1
            conn.sent += 1
            if self.sent_frames is not None:
                self.sent_frames.append(frame)
            if self._drop_budget is not None:
                self._drop_budget -= 1
                if self._drop_budget <= 0:
                    self._drop_budget = None
                    self.drop()
                    break
        return sent

    async def flood(self, frame: Frame, count: int, conn: C | None = None) -> int:
        """
        Send ``frame`` ``count`` times as fast as the sockets take it, to
        ``conn`` or every open connection.

        Returns:
            How many frames were sent in total.
        """
        total = 0
        for _ in range(count):
            total += await self.send(frame, conn)
        return total

    async def send_malformed(self) -> int:
        """
        Send one frame the provider's decoder must reject to every open connection.

        Protocol-specific: every provider's fake implements it.

        Returns:
            How many connections it was sent to.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement send_malformed()")

    # ------------------------------------------------------------------ faults

    def drop(self, conn: C | None = None) -> None:
        """Abort ``conn`` or every open connection (TCP reset, no close frame)."""
        for c in [conn] if conn is not None else self.connections:
            c.ws.transport.abort()
            c.closed = True
        self._wake_frozen()
        self.notify()

    def _wake_frozen(self) -> None:
        event, self._thawed = self._thawed, anyio.Event()
        event.set()

    async def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection with a closing handshake."""
        for c in self.connections:
            with contextlib.suppress(ConnectionClosed):
                await c.ws.close(code, reason)
            c.closed = True
        self.notify()

    def go_silent(self) -> None:
        """Keep the open connections but send nothing more on them (new ones are normal)."""
        for c in self.connections:
            c.silent = True

    def drop_after(self, frames: int) -> None:
        """Abort every open connection once ``frames`` more frames were sent (over all connections)."""
        if frames <= 0:
            self.drop()
            return
        self._drop_budget = frames

    def freeze(self) -> None:
        """
        Freeze the open connections: the sockets stay open, but the server
        stops reading them (no frame handled, no pong, no close answered)
        and sends nothing. New connections are normal. :meth:`thaw` undoes it.
        """
        for c in self.connections:
            c.frozen = True
            with contextlib.suppress(Exception):  # an aborted transport may refuse
                c.ws.transport.pause_reading()

    def thaw(self) -> None:
        """Undo :meth:`freeze` on the connections still open."""
        for c in self.connections:
            if c.frozen:
                c.frozen = False
                with contextlib.suppress(Exception):
                    c.ws.transport.resume_reading()
        self._wake_frozen()

    def refuse_for(self, seconds: float) -> None:
        """
        Refuse every handshake with HTTP 503 for ``seconds`` of :attr:`clock`
        from now (``0`` stops refusing). Refused handshakes are counted in
        :attr:`refused`.
        """
        self._refuse_until = self.clock() + seconds if seconds > 0 else None

    @property
    def refusing(self) -> bool:
        """Handshakes are refused now (:meth:`refuse_for`)."""
        return self._refuse_until is not None and self.clock() < self._refuse_until

    def expire_credentials(self) -> None:
        """From now on refuse authentication (see :attr:`credentials_expired`)."""
        self.credentials_expired = True

    def restore_credentials(self) -> None:
        """Accept the credentials again."""
        self.credentials_expired = False

    # ------------------------------------------------------------------ protocol

    def record_subscribe(self, conn: C, codes: Iterable[str], value: object = True) -> list[str]:
        """Record a subscribe request on ``conn``; return the codes it did not hold yet."""
        codes = list(codes)
        self.subscribe_requests.append(codes)
        new = [c for c in codes if c not in conn.subscribed]
        for code in codes:
            conn.subscribed[code] = value
        return new

    def record_unsubscribe(self, conn: C, codes: Iterable[str]) -> None:
        """Record an unsubscribe request on ``conn``."""
        codes = list(codes)
        self.unsubscribe_requests.append(codes)
        for code in codes:
            conn.subscribed.pop(code, None)

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Answer the HTTP handshake: ``None`` accepts it, a ``Response`` refuses it."""
        return None

    async def on_connect(self, conn: C) -> bool:
        """A connection was accepted; return ``False`` to end it (after closing it)."""
        return True

    async def on_frame(self, conn: C, frame: Frame) -> bool:
        """A client sent ``frame`` (already recorded); return ``False`` to stop reading."""
        return True

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        self.notify()
        if self.refusing:
            self.refused += 1
            return Response(503, "Service Unavailable", Headers({"Content-Length": "0"}), b"")
        return self.process_request(ws, request)

    def credential(self, conn: C) -> str:
        """
        The credential ``conn`` connected with, for :attr:`peak_by_credential`: its
        ``clientId`` query parameter (Dhan's), else ``default``.
        """
        from urllib.parse import parse_qs, urlsplit

        return parse_qs(urlsplit(conn.path).query).get("clientId", ["default"])[0]

    def open_by_credential(self) -> dict[str, int]:
        """credential -> connections open now."""
        out: dict[str, int] = {}
        for c in self.connections:
            key = self.credential(c)
            out[key] = out.get(key, 0) + 1
        return out

    async def _handler(self, ws: ServerConnection) -> None:
        conn = self.new_connection(next(self._ids), ws, ws.request.path if ws.request else "")
        self.history.append(conn)
        key = self.credential(conn)
        now_open = self.open_by_credential().get(key, 0)
        self.peak_by_credential[key] = max(self.peak_by_credential.get(key, 0), now_open)
        self.notify()
        try:
            if not await self.on_connect(conn):
                return
            async for frame in ws:
                while conn.frozen and not conn.closed:
                    await self._thawed.wait()
                self.received.append(frame)
                conn.frames.append(frame)
                try:
                    if not await self.on_frame(conn, frame):
                        return
                finally:
                    self.notify()
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self.notify()


class FakeFeedServer(FakeProviderServer[FakeConnection]):
    """
    A protocol-less fake: records what clients send, answers through callbacks.

    ``on_message(server, conn, frame)`` and ``on_connect(server, conn)`` may
    be plain or async functions. Used by the ``fake_feed_server`` pytest fixture.
    """

    def __init__(
        self,
        on_message: Callable[[FakeFeedServer, FakeConnection, Frame], Any] | None = None,
        on_connect: Callable[[FakeFeedServer, FakeConnection], Any] | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self._on_message = on_message
        self._on_connect = on_connect

    async def on_connect(self, conn: FakeConnection) -> bool:
        """Run the ``on_connect`` callback."""
        if self._on_connect is not None:
            await _maybe_await(self._on_connect(self, conn))
        return True

    async def on_frame(self, conn: FakeConnection, frame: Frame) -> bool:
        """Run the ``on_message`` callback."""
        if self._on_message is not None:
            await _maybe_await(self._on_message(self, conn, frame))
        return True


async def _maybe_await(value: object) -> object:
    if isinstance(value, Awaitable):
        return await value
    return value
