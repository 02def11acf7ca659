"""
A fake Yahoo Finance streamer for tests and benchmarks.

:class:`FakeYahooServer` is a real WebSocket server on 127.0.0.1 speaking
the streamer's protocol: it reads ``{"subscribe": [...]}`` /
``{"unsubscribe": [...]}`` text frames (recording every one), keeps the
first ``cap`` symbols per connection like Yahoo, closes the socket without
a status code (the client sees 1005) on a malformed request, and sends
``{"type":"pricing","message":"<base64 PricingData>"}`` frames. Tests can
make it misbehave: drop every connection abruptly, close cleanly (1000),
go silent, send malformed frames, and every scriptable fault of
:class:`mdgate.testing.FakeProviderServer` (drop after N frames, freeze,
flood, refuse connections for a while). The streamer takes no credentials;
``expire_credentials()`` makes it refuse the handshake with HTTP 401, the
only way it could say so. A *stream* mode pushes numbered ticks for
every subscribed symbol (the per-symbol sequence number in ``day_volume``,
the send time in ``time``), paced or as fast as the sockets take them.

Usable as an async context manager under anyio's asyncio backend::

    async with FakeYahooServer() as yahoo:
        settings = ...  # [providers.yahoo] url = yahoo.url
        await yahoo.wait_subscribed("AAPL")
        await yahoo.send_pricing("AAPL", price=227.55, day_volume=1000)

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
from typing import Any, Final

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from mdgate import Frame
from mdgate.testing import FakeConnection, FakeProviderServer
from mdgate_yahoo.pricing_pb2 import PricingData

__all__ = [
    "MALFORMED_FRAMES",
    "FakeYahooServer",
    "YahooConnection",
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
class YahooConnection(FakeConnection):
    """One client connection as the fake streamer sees it (``subscribed`` keeps at most ``cap`` symbols)."""

    #: Symbols refused because the cap was reached.
    refused: list[str] = field(default_factory=list)


class FakeYahooServer(FakeProviderServer[YahooConnection]):
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
        clock: seconds for ``refuse_for`` (default ``time.monotonic``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cap: int | None = 100,
        close_on_malformed: bool = True,
        snapshots: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host=host, port=port, clock=clock)
        self.cap = cap
        self.close_on_malformed = close_on_malformed
        self.snapshots: dict[str, Mapping[str, Any]] = dict(snapshots or {})
        #: Client frames that were not valid requests.
        self.malformed = 0
        #: Frames sent by the stream mode.
        self.stream_sent = 0
        self._seq: dict[str, int] = {}
        self._tg: TaskGroup | None = None
        self._stream_scope: anyio.CancelScope | None = None

    def new_connection(self, cid: int, ws: ServerConnection, path: str) -> YahooConnection:
        """A :class:`YahooConnection`."""
        return YahooConnection(cid, ws, path)

    async def start(self) -> None:
        """Start listening, and the task group of the stream mode."""
        await super().start()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()

    async def stop(self) -> None:
        """Stop the stream mode, abort every connection and stop listening."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None
        await super().stop()

    @property
    def url(self) -> str:
        """The URL clients connect to (``ws://127.0.0.1:PORT/?version=2``)."""
        return f"ws://{self.host}:{self.port}/?version=2"

    # ------------------------------------------------------------------ sending

    async def send_pricing(self, symbol: str, **fields: Any) -> int:
        """
        Send a PricingData for ``symbol`` to the connections subscribed to it.

        ``id`` defaults to ``symbol`` and ``time`` to now (epoch ms).

        Returns:
            How many connections it was sent to.
        """
        fields.setdefault("id", symbol)
        fields.setdefault("time", time.time_ns() // 1_000_000)
        return await self.send_to_holders(symbol, encode_pricing(**fields))

    async def send_malformed(self, kind: str = "bad_base64") -> int:
        """Send a malformed frame (see :data:`MALFORMED_FRAMES`) to every connection."""
        return await self.send(MALFORMED_FRAMES[kind])

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
                    if await self.send(self._stream_frame(symbol, price), conn):
                        self.stream_sent += 1
                    sent += 1
                await anyio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ protocol

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse the handshake with HTTP 401 once ``expire_credentials()`` was called."""
        if self.credentials_expired:
            return Response(401, "Unauthorized", Headers({"Content-Length": "0"}), b"")
        return None

    def _apply(self, conn: YahooConnection, text: str) -> list[str] | None:
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
        wanted = [s for s in req.get("subscribe", []) if s not in conn.subscribed]
        room = len(wanted) if self.cap is None else max(0, self.cap - len(conn.subscribed))
        conn.refused.extend(wanted[room:])
        added = self.record_subscribe(conn, wanted[:room]) if "subscribe" in req else []
        if "unsubscribe" in req:
            self.record_unsubscribe(conn, req["unsubscribe"])
        return added

    async def on_frame(self, conn: YahooConnection, frame: Frame) -> bool:
        """Apply a subscribe/unsubscribe request; close (1005) on a malformed one."""
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        added = self._apply(conn, text)
        if added is None:
            self.malformed += 1
            if self.close_on_malformed:
                # No status code: the client sees 1005, as with Yahoo.
                await conn.ws.close(None)  # type: ignore[arg-type]
                return False
            return True
        for symbol in added:
            snap = self.snapshots.get(symbol)
            if snap is not None:
                fields = {"id": symbol, "time": time.time_ns() // 1_000_000, **snap}
                await self.send(encode_pricing(**fields), conn)
        return True


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
