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

import hmac
import http
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import msgspec
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from mdgate._fanout import ClientOutbox
from mdgate.errors import InstrumentError, NoRouteError, SubscriptionRejected
from mdgate.model import Tick, encode, parse_instrument
from mdgate.store import BAR_INTERVALS

if TYPE_CHECKING:
    from mdgate._daemon import Gateway

__all__ = ["ClientServer"]

log = structlog.get_logger(__name__)

_json_decode: Final = msgspec.json.Decoder().decode
#: Bytes buffered in a client's socket transport before the writer waits for it to drain.
_HIGH_WATER: Final = 64 * 1024


def _json_response(status: int, body: Any) -> Response:
    data = encode(body) + b"\n"
    reason = http.HTTPStatus(status).phrase
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       ("Cache-Control", "no-store")])
    return Response(status, reason, headers, data)


def _text_response(status: int, text: str, extra: Sequence[tuple[str, str]] = ()) -> Response:
    data = text.encode()
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(data))), *extra])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def _error(code: str, message: str, errors: list[dict[str, str]] | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if errors:
        body["errors"] = errors
    return encode(body)


class ClientServer:
    """Serves clients for one :class:`~mdgate._daemon.Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.server: Server | None = None
        self.port = 0
        self.clients = 0
        self._outboxes: set[ClientOutbox] = set()
        self._conflated_gone = 0

    @property
    def conflated(self) -> int:
        """Ticks dropped by conflation for slow clients, since start."""
        return self._conflated_gone + sum(o.conflated for o in self._outboxes)

    # -- HTTP --------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        tokens = self.gw.settings.server.tokens
        if not tokens:
            return True
        presented: str | None = None
        auth = request.headers.get("Authorization")
        if auth and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        else:
            values = parse_qs(urlsplit(request.path).query).get("token")
            presented = values[0] if values else None
        if not presented:
            return False
        given = presented.encode()
        return any(hmac.compare_digest(given, t.reveal().encode()) for t in tokens)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path.rstrip("/") or "/"
        if path == "/healthz":
            return _text_response(200, "ok\n")
        if path not in ("/ws", "/status", "/history"):
            return _text_response(404, "not found: try /ws, /healthz, /status, /history\n")
        if not self._authorized(request):
            return _text_response(401, "a valid access token is required\n",
                                  [("WWW-Authenticate", 'Bearer realm="mdgate"')])
        if path == "/status":
            return _json_response(200, self.gw.status())
        if path == "/history":
            return await self._history(parse_qs(url.query))
        return None

    async def _history(self, query: dict[str, list[str]]) -> Response:
        def one(key: str) -> str | None:
            values = query.get(key)
            return values[0] if values else None

        try:
            name, _, _ = parse_instrument(one("instrument") or "")
        except InstrumentError as exc:
            return _json_response(400, {"error": "bad_instrument", "message": str(exc)})
        interval = one("interval") or "ticks"
        if interval != "ticks" and interval not in BAR_INTERVALS:
            return _json_response(400, {"error": "bad_request",
                                        "message": "interval must be ticks, 1m, 5m or 15m"})
        try:
            raw_since, raw_until = one("since"), one("until")
            since = int(raw_since) if raw_since else None
            until = int(raw_until) if raw_until else None
            limit = int(one("limit") or 1000)
        except ValueError:
            return _json_response(400, {"error": "bad_request",
                                        "message": "since/until are epoch ms, limit an integer"})
        limit = max(1, min(limit, 100_000))
        store = self.gw.store
        try:
            with anyio.fail_after(10):
                if interval == "ticks":
                    rows: list[Any] = await store.history(name, since_ms=since, until_ms=until, limit=limit)
                else:
                    rows = await store.bars(name, interval, since_ms=since, until_ms=until, limit=limit)
        except Exception as exc:
            log.warning("history_failed", instrument=name, error=str(exc))
            return _json_response(503, {"error": "unavailable", "message": "the store cannot answer now"})
        key = "ticks" if interval == "ticks" else "bars"
        return _json_response(200, {"instrument": name, "interval": interval, key: rows})

    # -- WebSocket -----------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        """Listen until cancelled; ``task_status.started(port)`` once bound."""
        s = self.gw.settings.server
        async with serve(
            self._handle, s.host, s.port,
            process_request=self._process_request,
            max_size=s.max_message_size,
            compression="deflate" if s.compression else None,
            server_header="mdgate",
            close_timeout=1.0,
        ) as server:
            self.server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info("server_listening", host=s.host, port=self.port)
            task_status.started(self.port)
            await anyio.sleep_forever()

    async def close(self) -> None:
        """Close every client with 1001 (going away) and stop listening."""
        if self.server is not None:
            self.server.close(close_connections=True)
            with anyio.move_on_after(2.0):
                await self.server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        gw = self.gw
        s = gw.settings.server
        outbox = ClientOutbox(s.client_queue, s.max_ticks_per_frame, framed=gw.fanout.framed)
        wanted: set[str] = set()
        self.clients += 1
        self._outboxes.add(outbox)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, ws, outbox, tg.cancel_scope)
                try:
                    async for message in ws:
                        await self._on_message(outbox, wanted, message)
                except ConnectionClosed:
                    pass
                tg.cancel_scope.cancel()
        finally:
            self.clients -= 1
            self._outboxes.discard(outbox)
            self._conflated_gone += outbox.conflated
            gw.fanout.set_instruments(outbox, frozenset())
            for name in wanted:
                gw.subs.release(name)

    async def _writer(self, ws: ServerConnection, outbox: ClientOutbox, scope: anyio.CancelScope) -> None:
        if not outbox.framed:
            await self._writer_ws(ws, outbox, scope)
            return
        # Frames come pre-framed (unmasked, uncompressed text frames with their header) and
        # shared by every client of a subscription set: write them straight to the socket.
        # websockets itself writes only whole frames (ping, pong, close), so whole frames of
        # ours interleave safely; nothing is written once the connection is closing.
        timeout = self.gw.settings.server.drain_timeout
        transport = ws.transport
        while True:
            await outbox.wait()
            frames = outbox.take()
            if ws.protocol.state is not State.OPEN or transport.is_closing():
                scope.cancel()
                return
            transport.writelines(frames)
            if transport.get_write_buffer_size() <= _HIGH_WATER:
                continue
            try:
                with anyio.fail_after(timeout):
                    while transport.get_write_buffer_size() > _HIGH_WATER:
                        if transport.is_closing():
                            scope.cancel()
                            return
                        await anyio.sleep(0.005)
            except TimeoutError:
                await self._too_slow(ws, outbox, scope)
                return

    async def _writer_ws(self, ws: ServerConnection, outbox: ClientOutbox, scope: anyio.CancelScope) -> None:
        # With permessage-deflate, websockets must build (compress) every frame itself.
        timeout = self.gw.settings.server.drain_timeout
        while True:
            await outbox.wait()
            frames = outbox.take()
            try:
                with anyio.fail_after(timeout):
                    for frame in frames:
                        await ws.send(frame, text=True)
            except TimeoutError:
                await self._too_slow(ws, outbox, scope)
                return
            except ConnectionClosed:
                scope.cancel()
                return

    async def _too_slow(self, ws: ServerConnection, outbox: ClientOutbox, scope: anyio.CancelScope) -> None:
        log.warning("client_too_slow", remote=str(ws.remote_address), conflated=outbox.conflated)
        with anyio.move_on_after(1.0):
            await ws.close(1008, "client too slow: socket not drained")
        ws.transport.abort()
        scope.cancel()

    async def _on_message(self, outbox: ClientOutbox, wanted: set[str], message: str | bytes) -> None:
        try:
            req = _json_decode(message)
        except (msgspec.DecodeError, UnicodeDecodeError):
            outbox.control(_error("bad_json", "message is not valid JSON"))
            return
        if not isinstance(req, dict):
            outbox.control(_error("bad_request", "message must be a JSON object"))
            return
        op = req.get("op")
        if op not in ("subscribe", "unsubscribe"):
            outbox.control(_error("bad_request", f"unknown op {op!r}: expected subscribe or unsubscribe"))
            return
        instruments = req.get("instruments")
        if not isinstance(instruments, list) or not instruments:
            outbox.control(_error("bad_request", "instruments must be a non-empty list of strings"))
            return
        if op == "subscribe":
            await self._subscribe(outbox, wanted, instruments)
        else:
            self._unsubscribe(outbox, wanted, instruments)

    @staticmethod
    def _names(raw: list[Any], errors: list[dict[str, str]]) -> list[str]:
        """Valid instrument names of a request, upper-cased and de-duplicated, in order."""
        names: list[str] = []
        for item in raw:
            try:
                name, _, _ = parse_instrument(item)
            except InstrumentError as exc:
                errors.append({"instrument": str(item), "code": "bad_instrument", "message": str(exc)})
                continue
            if name not in names:
                names.append(name)
        return names

    @staticmethod
    def _report(outbox: ClientOutbox, errors: list[dict[str, str]]) -> None:
        """One error frame for every problem of a request; its code is the first one's."""
        if not errors:
            return
        first = errors[0]
        message = first["message"] if len(errors) == 1 else (
            f"{len(errors)} instruments refused or unavailable: "
            + ", ".join(e["instrument"] for e in errors))
        outbox.control(_error(first["code"], message, errors))

    async def _subscribe(self, outbox: ClientOutbox, wanted: set[str], raw: list[Any]) -> None:
        subs = self.gw.subs
        errors: list[dict[str, str]] = []
        good: list[str] = []
        for name in self._names(raw, errors):
            if name not in wanted:
                try:
                    available = subs.acquire(name)
                except NoRouteError as exc:
                    errors.append({"instrument": name, "code": "no_route", "message": str(exc)})
                    continue
                except SubscriptionRejected as exc:
                    errors.append({"instrument": name, "code": "unavailable", "message": exc.message})
                    continue
                wanted.add(name)
                if not available:
                    errors.append({"instrument": name, "code": "unavailable",
                                   "message": f"providers for {name} are down; ticks flow once one recovers"})
            good.append(name)
        if good:
            outbox.control(encode({"type": "subscribed", "instruments": good}))
        self._report(outbox, errors)
        if good:
            snapshot = await self.gw.snapshot(good)
            outbox.control(encode({"type": "snapshot", "ticks": snapshot}))
            self.gw.fanout.set_instruments(outbox, frozenset(wanted))

    def _unsubscribe(self, outbox: ClientOutbox, wanted: set[str], raw: list[Any]) -> None:
        errors: list[dict[str, str]] = []
        done = self._names(raw, errors)
        for name in done:
            if name in wanted:
                wanted.discard(name)
                self.gw.subs.release(name)
        self.gw.fanout.set_instruments(outbox, frozenset(wanted))
        if done:
            outbox.control(encode({"type": "unsubscribed", "instruments": done}))
        self._report(outbox, errors)


def merge_latest(a: dict[str, Tick], b: dict[str, Tick]) -> dict[str, Tick]:
    """Merge two latest-tick maps, keeping the newer tick (by ``ts``) per instrument."""
    out = dict(a)
    for name, tick in b.items():
        prev = out.get(name)
        if prev is None or tick.ts >= prev.ts:
            out[name] = tick
    return out
