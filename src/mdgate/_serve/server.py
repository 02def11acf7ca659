"""
The client server: WebSocket ``/ws`` plus HTTP ``/healthz``, ``/status`` and
``/history`` on one port (websockets' ``process_request``).

Client protocol (JSON text frames, see docs/client-protocol.md)::

    -> {"op": "subscribe", "instruments": ["NSE:RELIANCE"]}
    <- {"type": "subscribed", "instruments": ["NSE:RELIANCE"]}
    <- {"type": "snapshot", "ticks": [...]}
    <- {"type": "ticks", "ticks": [...]}            (as data arrives)
    -> {"op": "unsubscribe", "instruments": [...]}
    <- {"type": "unsubscribed", "instruments": [...]}
    <- {"type": "error", "code": "...", "message": "...", "errors": [...]}
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mdgate._config import ServerSettings
from mdgate._errors import NoRouteError, SubscriptionRejected
from mdgate._model import encode
from mdgate._serve.backends import Backends, detached
from mdgate._serve.fanout import ClientOutbox
from mdgate._serve.http import bytes_response, history, json_response, text_response
from mdgate._serve.limits import (
    RELEASE_AFTER,
    ConnectionLimits,
    OriginPolicy,
    RateLimitedLog,
    error_frame,
    fd_plan,
    instrument_names,
    label,
    raise_nofile,
    refusal_frame,
    release_last_frame,
)
from mdgate._serve.page import page_response
from mdgate._serve.resume import ResumeSource, parse_since, resume
from mdgate._serve.snapshots import SnapshotFrames
from mdgate._serve.writer import DRAIN_POLL, HIGH_WATER, Flusher, write_framed, write_ws
from mdgate._stats import ClientStats

__all__ = ["ClientServer"]

log = structlog.get_logger(__name__)

_json_decode: Final = msgspec.json.Decoder().decode
#: Seconds a client being closed (slow, over budget) gets for the closing handshake.
CLOSE_GRACE: Final = 5.0
#: A subscribe looks at the time after this many instruments...
_YIELD_EVERY: Final = 16
#: ...and yields to the event loop once it has held it this many seconds.
_YIELD_AFTER: Final = 0.0005
#: Paths that need a token when tokens are configured (``/metrics`` unless ``metrics_public``).
_GUARDED: Final = frozenset({"/", "/ws", "/status", "/metrics", "/history"})
_PATHS: Final = "/, /ws, /healthz, /readyz, /status, /metrics, /history"
#: The message asyncio logs when accept() fails for lack of file descriptors.
_ACCEPT_EXHAUSTED: Final = "socket.accept() out of system resource"


def _one_header(request: Request, name: str) -> tuple[str | None, bool]:
    """A header's value, and False when it is repeated (a request to refuse)."""
    values = request.headers.get_all(name)
    if len(values) > 1:
        return None, False
    return (values[0] if values else None), True


def _address(conn: ServerConnection) -> str:
    peer = conn.remote_address
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class ClientServer:
    """Serves clients from its ``[server]`` settings and the collaborators it is handed."""

    def __init__(
        self, settings: ServerSettings, backends: Backends | None = None, *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            settings: the ``[server]`` slice (:meth:`apply` takes a reloaded one).
            backends: fan-out, interest, snapshot, history and status;
                None: :func:`~mdgate._serve.backends.detached`.
            clock: monotonic seconds (tests pass a fake).
        """
        s = self.settings = settings
        self.backends = backends if backends is not None else detached(settings)
        self.server: Server | None = None
        self.port = 0
        #: Monotonic seconds: drain timeouts and closing grace are measured with it.
        self.clock = clock
        #: Seconds a client being closed gets for the closing handshake before the socket is
        #: aborted; None: :data:`CLOSE_GRACE`, or ``drain_timeout`` when shorter (at least 1 s).
        self.close_grace: float | None = None
        self.limits = ConnectionLimits(s.max_clients, s.max_clients_per_address, s.max_clients)
        self.ratelog = RateLimitedLog(log, clock=clock)
        #: Client counters (``/status`` ``server``).
        self.stats = ClientStats()
        self._origins: tuple[tuple[str, ...], str, OriginPolicy] | None = None
        self._outboxes: set[ClientOutbox] = set()
        #: ``snapshot`` frames, built once per list of instruments while no batch is published.
        #: One request at a time is parsed and acquired: what a big one holds is held once.
        self._admission = anyio.Lock()
        #: Writes pre-framed clients' outboxes once per loop iteration (no task woken per client).
        self.flusher = Flusher(self.stats.age.observe)
        self.snapshots = SnapshotFrames(self.backends.fanout, lambda names: self.backends.snapshot(names))

    def apply(self, settings: ServerSettings) -> None:
        """Take a reloaded ``[server]`` slice; the listening address stays until a restart."""
        old = self.settings
        self.settings = dataclasses.replace(settings, host=old.host, port=old.port)

    @property
    def clients(self) -> int:
        """WebSocket clients connected now."""
        return self.stats.clients

    @property
    def conflated(self) -> int:
        """Ticks dropped by conflation for slow clients, since start."""
        return self.stats.conflated(self._outboxes)

    def status(self) -> dict[str, Any]:
        """Client counters for ``/status``."""
        return self.stats.document(self.limits, self._outboxes)

    # -- HTTP --------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        tokens = self.settings.tokens
        if not tokens:
            return True
        presented: str | None = None
        auth, single = _one_header(request, "Authorization")
        if not single:
            return False
        if auth and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        else:
            values = parse_qs(urlsplit(request.path).query).get("token")
            presented = values[0] if values else None
        if not presented:
            return False
        given = presented.encode()
        return any(hmac.compare_digest(given, t.reveal().encode()) for t in tokens)

    def _origin_policy(self) -> OriginPolicy:
        s = self.settings
        cached = self._origins
        if cached is None or cached[0] != s.allowed_origins or cached[1] != s.host:
            cached = self._origins = (s.allowed_origins, s.host, OriginPolicy(s.allowed_origins, s.host))
        return cached[2]

    def _origin_ok(self, connection: ServerConnection, request: Request) -> bool:
        origin, single = _one_header(request, "Origin")
        host, single_host = _one_header(request, "Host")
        if single and single_host and self._origin_policy().allows(origin, host):
            return True
        self.limits.refused["origin"] += 1
        self.ratelog.warning("client_refused", reason="origin", origin=label(origin or "(repeated)"),
                             remote=_address(connection))
        return False

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.limits.requested(connection)
        url = urlsplit(request.path)
        path = url.path.rstrip("/") or "/"
        if path == "/healthz":
            return text_response(200, "ok\n")
        if path == "/readyz":
            ready, reasons = self.backends.ready()
            return json_response(200 if ready else 503, {"ready": ready, "reasons": reasons})
        if path.startswith("/static/"):
            return page_response(path) or text_response(404, "not found\n")
        if path not in _GUARDED:
            return text_response(404, f"not found: try {_PATHS}\n")
        if path == "/ws" and not self._origin_ok(connection, request):
            return text_response(403, "this Origin may not open /ws (see [server] allowed_origins)\n")
        public = path == "/metrics" and self.settings.metrics_public
        if not public and not self._authorized(request):
            hint = "open /?token=YOUR_TOKEN" if path == "/" else "a valid access token is required"
            return text_response(401, hint + "\n", [("WWW-Authenticate", 'Bearer realm="mdgate"')])
        if path == "/status":
            query = parse_qs(url.query)
            return json_response(200, self.backends.status(instruments=query.get("instruments") == ["1"]))
        if path == "/metrics":
            body, content_type = self.backends.metrics()
            return bytes_response(200, body, content_type)
        if path == "/":
            return page_response(path) or text_response(404, "not found\n")
        if path == "/history":
            return await history(self.backends.history, parse_qs(url.query))
        lim = self.limits
        lim.max_per_address = self.settings.max_clients_per_address
        address = _address(connection)
        reason = lim.admit(connection, address)
        if reason is not None:
            limit = lim.max_per_address if reason == "max_clients_per_address" else lim.max_clients
            self.ratelog.warning("client_refused", reason=reason, limit=limit, remote=address,
                                 clients=lim.clients)
            return text_response(503, f"too many clients ({reason}); try again later\n",
                                 [("Retry-After", "5")])
        return None

    # -- sockets ---------------------------------------------------------------

    def _connection_class(self) -> type[ServerConnection]:
        limits, dropped = self.limits, self._drop_socket

        class Connection(ServerConnection):
            """A ServerConnection counted by :class:`ConnectionLimits` from accept to close."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                victim = limits.opened(self)
                if victim is not None:
                    dropped(victim)

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                if len(data) >= RELEASE_AFTER:
                    release_last_frame(self.protocol)

            def connection_lost(self, exc: Exception | None) -> None:
                try:
                    super().connection_lost(exc)
                finally:
                    limits.closed(self)

        return Connection

    def _drop_socket(self, conn: ServerConnection) -> None:
        self.ratelog.warning("client_socket_dropped", reason="too many open client sockets",
                             sockets=self.limits.sockets, limit=self.limits.max_sockets)
        conn.transport.abort()

    def exception_handler(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """
        An event-loop exception handler that counts failed ``accept()`` calls
        (out of file descriptors) and logs them rate-limited, passing anything
        else on to ``previous`` (or the loop's default handler).
        """

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == _ACCEPT_EXHAUSTED:
                self.stats.accept_errors += 1
                self.ratelog.warning("accept_failed", error=str(context.get("exception")),
                                     hint="out of file descriptors: raise the open-files limit "
                                          "(ulimit -n) or lower [server] max_clients")
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        return handler

    def _plan_sockets(self) -> None:
        s = self.settings
        before, after = raise_nofile(s.max_clients)
        if after != before:
            log.info("open_files_limit_raised", before=before, after=after)
        plan = fd_plan(s.max_clients, after)
        if plan.clients < s.max_clients:
            log.warning("max_clients_lowered", max_clients=s.max_clients, effective=plan.clients,
                        open_files_limit=after,
                        hint="raise the open-files limit (ulimit -n, systemd LimitNOFILE=) to serve more")
        self.limits.max_clients = plan.clients
        self.limits.max_sockets = plan.sockets

    # -- WebSocket -----------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        """Listen until cancelled; ``task_status.started(port)`` once bound."""
        s = self.settings
        self._plan_sockets()
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        mine = self.exception_handler(previous)
        loop.set_exception_handler(mine)
        try:
            async with serve(
                self._handle, s.host, s.port,
                process_request=self._process_request,
                max_size=s.max_message_size,
                compression="deflate" if s.compression else None,
                server_header="mdgate",
                close_timeout=1.0,
                # a client that stopped reading is closed by drain_timeout (1008), not by the
                # keepalive (1011): give the pong longer than that
                ping_timeout=max(20.0, s.drain_timeout + CLOSE_GRACE),
                create_connection=self._connection_class(),
            ) as server:
                self.server = server
                self.port = next(iter(server.sockets)).getsockname()[1]
                log.info("server_listening", host=s.host, port=self.port, max_clients=self.limits.max_clients)
                task_status.started(self.port)
                await anyio.sleep_forever()
        finally:
            if loop.get_exception_handler() is mine:
                loop.set_exception_handler(previous)

    async def close(self) -> None:
        """Close every client with 1001 (going away) and stop listening."""
        if self.server is not None:
            self.server.close(close_connections=True)
            with anyio.move_on_after(2.0):
                await self.server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        s, backends = self.settings, self.backends
        outbox = ClientOutbox(s.client_queue, s.max_ticks_per_frame, framed=backends.fanout.framed,
                              budget=s.client_buffer_bytes)
        # names a subscribe acquired and has not registered yet; what is registered is the
        # outbox's instruments, one set object shared by every client with the same set
        held: set[str] = set()
        self.stats.clients += 1
        self._outboxes.add(outbox)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, ws, outbox, tg.cancel_scope)
                try:
                    async for message in ws:
                        if outbox.over_budget:
                            continue  # being closed: read on (the close handshake needs it), do nothing
                        await self._on_message_guarded(ws, outbox, held, message)
                        del message  # a subscribe's text is as long as its list: not kept per client
                except ConnectionClosed:
                    pass
                tg.cancel_scope.cancel()
        finally:
            self.stats.clients -= 1
            self._outboxes.discard(outbox)
            self.stats.gone(outbox)
            names = outbox.instruments | held
            backends.fanout.set_instruments(outbox, frozenset())
            for name in names:
                backends.interest.release(name)

    async def _writer(self, ws: ServerConnection, outbox: ClientOutbox, scope: anyio.CancelScope) -> None:
        try:
            if outbox.framed:
                why = await write_framed(ws, outbox, self.flusher, self._drain)
            else:
                why = await write_ws(ws, outbox, self.settings.drain_timeout, self.stats.age.observe)
            if why is not None:
                await self._close_client(ws, outbox, why)
        finally:
            scope.cancel()

    async def _drain(self, transport: asyncio.WriteTransport, outbox: ClientOutbox) -> str | None:
        """Wait until the socket's buffer is back under the high-water mark, for at most ``drain_timeout``."""
        clock = self.clock
        since = clock()
        timeout = self.settings.drain_timeout
        while True:
            if transport.is_closing():
                return None
            if outbox.over_budget:
                return "over_budget"
            if clock() - since >= timeout:
                return "slow"
            await anyio.sleep(DRAIN_POLL)
            outbox.in_flight = size = transport.get_write_buffer_size()
            if size <= HIGH_WATER:
                return "drained"

    def grace(self) -> float:
        """Seconds the closing handshake of a slow or over-budget client may take."""
        if self.close_grace is not None:
            return self.close_grace
        return min(CLOSE_GRACE, max(1.0, self.settings.drain_timeout))

    async def _close_client(self, ws: ServerConnection, outbox: ClientOutbox, why: str) -> None:
        """
        Close a client that is too slow or over its budget with 1008: drop
        what is queued for it here, send the close frame (behind what the
        socket already holds), give the closing handshake :attr:`close_grace`
        seconds (:meth:`grace`), then abort the socket.
        """
        s = self.settings
        self.stats.closed[why] += 1
        outbox.dropped += outbox.pending_ticks
        outbox.drop()
        outbox.over_budget = True  # nothing more is queued for it
        if why == "slow":
            reason = f"client too slow: socket not drained for {s.drain_timeout:g} s"
            self.ratelog.warning("client_too_slow", remote=_address(ws), conflated=outbox.conflated,
                                 drain_timeout=s.drain_timeout)
        else:
            reason = f"client over budget: more than {outbox.budget} bytes queued"
            self.ratelog.warning("client_over_budget", remote=_address(ws), budget=outbox.budget)
        done = anyio.Event()

        async def close() -> None:
            try:
                await ws.close(1008, reason)
            except Exception:  # the socket is aborted below
                return
            done.set()

        grace = self.grace()
        ws.close_timeout = grace
        deadline = self.clock() + grace
        async with anyio.create_task_group() as tg:
            tg.start_soon(close)
            while not done.is_set() and self.clock() < deadline:
                with anyio.move_on_after(0.05):
                    await done.wait()
            tg.cancel_scope.cancel()
        if not done.is_set():
            ws.transport.abort()

    # -- requests --------------------------------------------------------------

    async def _on_message_guarded(
        self, ws: ServerConnection, outbox: ClientOutbox, held: set[str], message: str | bytes,
    ) -> None:
        try:
            await self._on_message(outbox, held, message)
        except Exception as exc:  # a request must never take the connection (or the daemon) down
            self.stats.internal_errors += 1
            self.ratelog.warning("client_request_failed", remote=_address(ws),
                                 error=f"{type(exc).__name__}: {label(str(exc))}")
            outbox.control(error_frame("internal", "the gateway could not process this request"))

    async def _on_message(self, outbox: ClientOutbox, held: set[str], message: str | bytes) -> None:
        """
        One request. Requests are parsed and their names acquired one at a time
        (a big request yields to the feed meanwhile, and what it holds, its
        parsed names, is held once, not once per client subscribing at the
        same moment); then the client is registered and answered.
        """
        async with self._admission:
            request = self._parse(outbox, message)
            if request is None:
                return
            op, raw, since = request
            if op == "unsubscribe":
                self._unsubscribe(outbox, held, raw)
                return
            admitted = await self._acquire(outbox, held, raw)
            del request, raw
        if admitted is not None:
            await self._register(outbox, held, *admitted, since)

    def _parse(self, outbox: ClientOutbox, message: str | bytes,
               ) -> tuple[str, list[Any], dict[str, int]] | None:
        """``(op, instruments, since)`` of a request; None when it was answered with an error."""
        try:
            req = _json_decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            outbox.control(error_frame("bad_json", "message is not valid JSON"))
            return None
        except RecursionError:
            outbox.control(error_frame("bad_json", "message is nested too deeply"))
            return None
        if not isinstance(req, dict):
            outbox.control(error_frame("bad_request", "message must be a JSON object"))
            return None
        op = req.get("op")
        if op not in ("subscribe", "unsubscribe"):
            shown = label(repr(op) if isinstance(op, str) else label(op))
            outbox.control(error_frame("bad_request",
                                       f"unknown op {shown}: expected subscribe or unsubscribe"))
            return None
        instruments = req.get("instruments")
        if not isinstance(instruments, list) or not instruments:
            outbox.control(error_frame("bad_request", "instruments must be a non-empty list of strings"))
            return None
        most = self.settings.max_instruments_per_request
        if len(instruments) > most:
            self.stats.limit_errors += 1
            outbox.control(error_frame(
                "limit", f"a request may name at most {most} instruments; this one names {len(instruments)} "
                         "(nothing was done: split it)"))
            return None
        since = parse_since(req.get("since")) if op == "subscribe" else {}
        if isinstance(since, str):
            outbox.control(error_frame("bad_request", since))
            return None
        return op, instruments, since

    def _report(self, outbox: ClientOutbox, errors: list[dict[str, str]]) -> None:
        """One bounded error frame for every problem of a request."""
        if errors:
            outbox.control(refusal_frame(errors))

    async def _acquire(self, outbox: ClientOutbox, held: set[str], raw: list[Any],
                       ) -> tuple[list[str], list[str], list[dict[str, str]]] | None:
        """
        Acquire the new names of a subscribe (into ``held``): ``(good, fresh, errors)``,
        or None when no name was good (the errors are answered).
        """
        interest = self.backends.interest
        fresh: list[str] = []
        most = self.settings.max_instruments_per_client
        current = outbox.instruments
        room = most - len(current) - len(held)
        errors: list[dict[str, str]] = []
        good: list[str] = []
        limited = False
        clock = self.clock
        held_since = clock()
        for i, name in enumerate(instrument_names(raw, errors), 1):
            if i % _YIELD_EVERY == 0 and clock() - held_since >= _YIELD_AFTER:
                await anyio.lowlevel.checkpoint()  # a big request must not hold up the feed
                held_since = clock()
            if name not in current and name not in held:
                if room <= 0:
                    limited = True
                    errors.append({"instrument": name, "code": "limit",
                                   "message": f"a client may subscribe to at most {most} instruments"})
                    continue
                try:
                    available = interest.acquire(name)
                except NoRouteError as exc:
                    errors.append({"instrument": name, "code": "no_route", "message": str(exc)})
                    continue
                except SubscriptionRejected as exc:
                    errors.append({"instrument": name, "code": "unavailable", "message": exc.message})
                    continue
                held.add(name)
                fresh.append(name)
                room -= 1
                if not available:
                    errors.append({"instrument": name, "code": "unavailable",
                                   "message": f"providers for {name} are down; ticks flow once one recovers"})
            good.append(name)
        self.stats.limit_errors += limited
        if not good:
            self._report(outbox, errors)
            return None
        return good, fresh, errors

    async def _register(self, outbox: ClientOutbox, held: set[str], good: list[str], fresh: list[str],
                        errors: list[dict[str, str]], since: dict[str, int]) -> None:
        """
        Register the client for every name it holds, live ticks held behind the answer, the
        snapshot and any replay of what was missed (:mod:`mdgate._serve.resume`): none is lost
        while the snapshot is read.
        """
        resumed = {name: since[name] for name in fresh if name in since}
        source = self.backends.resume or ResumeSource(lambda _: None, None)
        try:
            await resume(source, self.backends.fanout, outbox, outbox.instruments | held, good, resumed,
                         refusal_frame(errors) if errors else None, self.snapshots.frame,
                         self.settings.replay_max)
        finally:
            held.difference_update(outbox.instruments)  # registered: the outbox's set holds them

    def _unsubscribe(self, outbox: ClientOutbox, held: set[str], raw: list[Any]) -> None:
        errors: list[dict[str, str]] = []
        done = instrument_names(raw, errors)
        current = outbox.instruments
        gone = []
        for name in done:
            if name in current:
                gone.append(name)
                self.backends.interest.release(name)
            elif name in held:
                held.discard(name)
                self.backends.interest.release(name)
        if gone:
            self.backends.fanout.set_instruments(outbox, current.difference(gone))
        if done:
            outbox.control(encode({"type": "unsubscribed", "instruments": done}))
        self._report(outbox, errors)

