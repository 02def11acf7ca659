"""
A fake Yahoo Finance streamer for tests and benchmarks.

:class:`FakeYahooServer` is a real WebSocket server on 127.0.0.1 speaking
the streamer's protocol: it reads ``{"subscribe": [...]}`` /
``{"unsubscribe": [...]}`` text frames (recording every one), keeps the
first ``cap`` symbols per connection like Yahoo, closes the socket without
a status code (the client sees 1005) on a malformed request, and sends
``{"type":"pricing","message":"<base64 PricingData>"}`` frames. Tests can
make it misbehave: drop every connection abruptly, close cleanly (1000),
go silent, send malformed frames. A *stream* mode pushes numbered ticks for
every subscribed symbol (the per-symbol sequence number in ``day_volume``,
the send time in ``time``), paced or as fast as the sockets take them.

Usable as an async context manager under anyio's asyncio backend::

    async with FakeYahooServer() as yahoo:
        settings = ...  # [providers.yahoo] url = yahoo.url
        await yahoo.wait_subscribed("AAPL")
        await yahoo.push("AAPL", price=227.55, day_volume=1000)

or from a shell: ``python -m mdgate_yahoo.testing --port 8600 --rate 50``.
Where Yahoo's real behaviour is known only in part, see
docs/protocols/yahoo.md#the-fake-server.
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from mdgate_yahoo.pricing_pb2 import PricingData

__all__ = [
    "MALFORMED_FRAMES",
    "FakeConnection",
    "FakeYahooServer",
    "encode_envelope",
    "encode_pricing",
    "main",
]


def encode_envelope(payload: bytes, type_: str = "pricing") -> str:
    """Wrap serialized PricingData bytes in the streamer's JSON envelope."""
    b64 = binascii.b2a_base64(payload, newline=False).decode("ascii")
    return json.dumps({"type": type_, "message": b64})


def encode_pricing(**fields: Any) -> str:
    """
    Build one streamer frame from PricingData fields.

    Example: ``encode_pricing(id="AAPL", price=227.55, time=1736509140000)``.
    Zero values are not on the wire (proto3), exactly as from Yahoo.
    """
    return encode_envelope(PricingData(**fields).SerializeToString())


#: Malformed frames by the decode error kind they should provoke.
MALFORMED_FRAMES: Final[Mapping[str, str]] = {
    "bad_json": '{"type": "pricing", "message": ',
    "bad_envelope": '{"type": "pricing"}',
    "bad_base64": '{"type": "pricing", "message": "not base64!"}',
    "bad_protobuf": encode_envelope(b"\x0a\x05AA"),  # field 1 claims 5 bytes, has 2
    "unknown_symbol": encode_pricing(id="NOT-SUBSCRIBED", price=1.5, time=1),
}


@dataclass(eq=False)
class FakeConnection:
    """One client connection as the fake server sees it."""

    id: int
    ws: ServerConnection
    #: Subscribed symbols in arrival order (at most the server's cap).
    subscribed: list[str] = field(default_factory=list)
    #: Symbols refused because the cap was reached.
    refused: list[str] = field(default_factory=list)
    #: Every text frame the client sent.
    frames: list[str] = field(default_factory=list)
    #: Silent connections get nothing from the server any more.
    silent: bool = False


class FakeYahooServer:
    """
    A loopback Yahoo streamer (see the module docstring).

    Args:
        host: listen address.
        port: listen port; 0 picks a free one (see :attr:`port`).
        cap: symbols kept per connection (Yahoo: the first 100); ``None``: no cap.
        close_on_malformed: close the socket (no status: 1005) when a client
            frame is not a valid request, as Yahoo does.
        snapshots: fields sent for a symbol right after it is subscribed
            (Yahoo sends the last known quote at once).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cap: int | None = 100,
        close_on_malformed: bool = True,
        snapshots: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.host = host
        self._want_port = port
        self.cap = cap
        self.close_on_malformed = close_on_malformed
        self.snapshots: dict[str, Mapping[str, Any]] = dict(snapshots or {})
        #: Every text frame any client sent, in arrival order.
        self.received: list[str] = []
        #: Open connections.
        self.connections: list[FakeConnection] = []
        #: Connections accepted so far.
        self.accepted = 0
        #: Client frames that were not valid requests.
        self.malformed = 0
        #: Frames sent by the stream mode.
        self.stream_sent = 0
        self.port = 0
        self._ids = itertools.count(1)
        self._seq: dict[str, int] = {}
        self._server: Server | None = None
        self._tg: TaskGroup | None = None
        self._stream_scope: anyio.CancelScope | None = None

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> FakeYahooServer:
        self._server = await serve(
            self._handle,
            self.host,
            self._want_port,
            ping_interval=None,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        assert self._server is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._server.close()
        for conn in list(self.connections):
            conn.ws.transport.abort()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        """The URL clients connect to (``ws://127.0.0.1:PORT/?version=2``)."""
        return f"ws://{self.host}:{self.port}/?version=2"

    def subscribed(self) -> set[str]:
        """Symbols subscribed on any open connection."""
        return {s for c in self.connections for s in c.subscribed}

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; ``TimeoutError`` after ``timeout`` s."""
        with anyio.fail_after(timeout):
            # Predicates are arbitrary: poll every 5 ms rather than wire events.
            while not predicate():
                await anyio.sleep(0.005)

    async def wait_subscribed(self, *symbols: str, timeout: float = 5.0) -> None:
        """Wait until every symbol is subscribed on some open connection."""
        await self.wait_for(lambda: set(symbols) <= self.subscribed(), timeout)

    async def wait_connections(self, accepted: int, timeout: float = 5.0) -> None:
        """Wait until at least ``accepted`` connections were accepted in total."""
        await self.wait_for(lambda: self.accepted >= accepted, timeout)

    # ------------------------------------------------------------------ sending

    async def _send(self, conn: FakeConnection, frame: str) -> bool:
        if conn.silent:
            return False
        try:
            await conn.ws.send(frame)
        except ConnectionClosed:
            return False
        return True

    async def push_frame(self, frame: str | bytes, symbol: str | None = None) -> int:
        """
        Send a raw frame to every open connection (or those subscribed to ``symbol``).

        Returns:
            How many connections it was sent to (silent ones are skipped).
        """
        sent = 0
        for conn in list(self.connections):
            if symbol is None or symbol in conn.subscribed:
                if conn.silent:
                    continue
                try:
                    await conn.ws.send(frame)
                except ConnectionClosed:
                    continue
                sent += 1
        return sent

    async def push(self, symbol: str, **fields: Any) -> int:
        """
        Send a PricingData for ``symbol`` to the connections subscribed to it.

        ``id`` defaults to ``symbol`` and ``time`` to now (epoch ms).

        Returns:
            How many connections it was sent to.
        """
        fields.setdefault("id", symbol)
        fields.setdefault("time", time.time_ns() // 1_000_000)
        return await self.push_frame(encode_pricing(**fields), symbol)

    async def send_malformed(self, kind: str = "bad_base64") -> int:
        """Send a malformed frame (see :data:`MALFORMED_FRAMES`) to every connection."""
        return await self.push_frame(MALFORMED_FRAMES[kind])

    # ------------------------------------------------------------------ faults

    def drop(self) -> None:
        """Abort every open connection (TCP reset, no closing handshake)."""
        for conn in list(self.connections):
            conn.ws.transport.abort()

    async def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection with a closing handshake."""
        for conn in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.close(code, reason)

    def go_silent(self) -> None:
        """Keep open connections but send nothing more on them (new ones are normal)."""
        for conn in self.connections:
            conn.silent = True

    # ------------------------------------------------------------------ stream mode

    def start_stream(
        self,
        rate: float | None = None,
        *,
        count: int | None = None,
        price: float = 100.0,
    ) -> None:
        """
        Push numbered ticks for every subscribed symbol until stopped.

        Args:
            rate: frames per second in total (round-robin over subscribed
                symbols and connections); ``None``: as fast as possible.
            count: stop after this many frames in total.
            price: base price; the price steps by 0.25 with the sequence.

        Each frame carries the symbol's sequence number (1, 2, ...) in
        ``day_volume`` and the send time (epoch ms) in ``time``.
        """
        assert self._tg is not None, "use the server as an async context manager"
        self.stop_stream()
        scope = anyio.CancelScope()
        self._stream_scope = scope
        self._tg.start_soon(self._stream, scope, rate, count, price)

    def stop_stream(self) -> None:
        """Stop the stream mode (no-op when not streaming)."""
        if self._stream_scope is not None:
            self._stream_scope.cancel()
            self._stream_scope = None

    def _stream_frame(self, symbol: str, price: float) -> str:
        seq = self._seq.get(symbol, 0) + 1
        self._seq[symbol] = seq
        return encode_pricing(
            id=symbol,
            price=price + (seq % 400) * 0.25,
            time=time.time_ns() // 1_000_000,
            day_volume=seq,
            last_size=1,
            quote_type=8,
            market_hours=1,
            price_hint=2,
        )

    async def _stream(
        self,
        scope: anyio.CancelScope,
        rate: float | None,
        count: int | None,
        price: float,
    ) -> None:
        with scope:
            t0 = anyio.current_time()
            sent = 0
            while count is None or sent < count:
                pairs = [(c, s) for c in self.connections if not c.silent for s in c.subscribed]
                if not pairs:
                    await anyio.sleep(0.01)
                    continue
                if rate is None:
                    budget = len(pairs)
                else:
                    due = math.floor((anyio.current_time() - t0) * rate)
                    budget = due - sent
                    if budget <= 0:
                        await anyio.sleep(max(1.0 / rate, 0.001))
                        continue
                if count is not None:
                    budget = min(budget, count - sent)
                for conn, symbol in itertools.islice(itertools.cycle(pairs), budget):
                    if await self._send(conn, self._stream_frame(symbol, price)):
                        self.stream_sent += 1
                    sent += 1
                await anyio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ protocol

    def _apply(self, conn: FakeConnection, text: str) -> list[str] | None:
        # Apply one client request; return the new symbols, or None if malformed.
        try:
            req = json.loads(text)
        except ValueError:
            return None
        if not isinstance(req, dict) or not set(req) <= {"subscribe", "unsubscribe"}:
            return None
        for key in ("subscribe", "unsubscribe"):
            syms = req.get(key, [])
            if not isinstance(syms, list) or not all(isinstance(s, str) for s in syms):
                return None
        added: list[str] = []
        for s in req.get("subscribe", []):
            if s in conn.subscribed:
                continue
            if self.cap is not None and len(conn.subscribed) >= self.cap:
                conn.refused.append(s)
                continue
            conn.subscribed.append(s)
            added.append(s)
        for s in req.get("unsubscribe", []):
            if s in conn.subscribed:
                conn.subscribed.remove(s)
        return added

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeConnection(next(self._ids), ws)
        self.connections.append(conn)
        self.accepted += 1
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                self.received.append(text)
                conn.frames.append(text)
                added = self._apply(conn, text)
                if added is None:
                    self.malformed += 1
                    if self.close_on_malformed:
                        # No status code: the client sees 1005, as with Yahoo.
                        await ws.close(None)  # type: ignore[arg-type]
                        break
                    continue
                for symbol in added:
                    snap = self.snapshots.get(symbol)
                    if snap is not None:
                        fields = {
                            "id": symbol,
                            "time": time.time_ns() // 1_000_000,
                            **snap,
                        }
                        await self._send(conn, encode_pricing(**fields))
        except ConnectionClosed:
            pass
        finally:
            self.connections.remove(conn)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a fake Yahoo streamer until interrupted (``-m mdgate_yahoo.testing``)."""
    parser = argparse.ArgumentParser(
        prog="python -m mdgate_yahoo.testing",
        description="Fake Yahoo Finance streamer.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="stream frames per second in total (default: no stream)",
    )
    parser.add_argument("--blast", action="store_true", help="stream as fast as possible")
    parser.add_argument("--cap", type=int, default=100, help="symbols per connection (0: none)")
    args = parser.parse_args(argv)

    async def run() -> None:
        async with FakeYahooServer(host=args.host, port=args.port, cap=args.cap or None) as srv:
            print(f"fake Yahoo streamer on {srv.url}", flush=True)  # noqa: T201
            if args.blast or args.rate:
                srv.start_stream(None if args.blast else args.rate)
            await anyio.sleep_forever()

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
