"""
A fake Dhan Live Market Feed v2 server for tests and benchmarks.

:class:`FakeDhanServer` is a real WebSocket server on 127.0.0.1 speaking
the v2 protocol: it checks the query string (``version=2``, ``token``,
``clientId``, ``authType=2``), records subscribe/unsubscribe requests,
enforces Dhan's limits, and sends binary packets built with the encoders of
:mod:`mdgate_dhan.protocol`. Behaviour on faults (Dhan's real behaviour is
known only in part, docs/protocols/dhan.md#the-fake-server):

* bad credentials (or ``expire_credentials()``): ``auth_failure="disconnect"`` (default) accepts the
  handshake, sends a disconnect packet with ``auth_failure_code`` (808) and
  closes; ``auth_failure="http"`` refuses the handshake with HTTP 401;
* more than ``max_per_message`` (100) instruments in one request, or more
  than ``max_per_connection`` (5000) on a connection: disconnect 804, close;
* a connection beyond ``max_connections`` (5): the **oldest** connection
  gets disconnect 805 and is closed;
* after a subscribe, a Prev close packet per new instrument that has a
  price in ``prev_close``;
* a disconnect packet is followed by the close frame at once, or after
  ``close_delay`` seconds (Dhan's timing is unknown).

It inherits every scriptable fault of :class:`mdgate.testing.FakeProviderServer`
(drop after N frames, freeze, flood, refuse connections for a while);
:meth:`FakeDhanServer.send_malformed` sends a truncated Quote packet.

Stream mode (:meth:`FakeDhanServer.stream`) sends numbered Quote packets
round-robin over the subscribed instruments: ``volume`` is the server-wide
sequence number (1, 2, ... across all instruments and connections) and the
send time is recoverable from the normalized
tick as ``send_ms = tick.ts + tick.size`` (LTT carries the IST-shifted send
second, LTQ the milliseconds within it), given the default
``ltt_offset_seconds`` of 19800.

Run standalone: ``python -m mdgate_dhan.testing --port 8901 --stream-rate 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mdgate import Frame
from mdgate.testing import FakeConnection, FakeProviderServer
from mdgate_dhan.protocol import (
    HEADER,
    MAX_PER_MESSAGE,
    QUOTE_BODY,
    DepthLevel,
    decode_request,
    encode_disconnect_packet,
    encode_full,
    encode_market_status,
    encode_oi,
    encode_prev_close,
    encode_quote,
    encode_ticker,
    parse_code,
)

__all__ = ["DhanConnection", "FakeDhanServer", "main"]

IST_OFFSET: Final = 19_800
_SUBSCRIBE: Final = frozenset({15, 17, 21})
_UNSUBSCRIBE: Final = frozenset({16, 18, 22})


def _ids(code: str) -> tuple[int, int]:
    _, segment, sid = parse_code(code)
    return segment, sid


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class DhanConnection(FakeConnection):
    """One client connection as the fake feed sees it (``subscribed``: code -> RequestCode 15, 17 or 21)."""

    opened: float = 0.0
    #: Every JSON request received, decoded.
    requests: list[Any] = field(default_factory=list)
    _stream: tuple[int, list[tuple[int, int]]] = (-1, [])

    def stream_codes(self) -> list[tuple[int, int]]:
        """The subscribed codes as (segment, security id), cached until they change."""
        version = hash(frozenset(self.subscribed))
        if self._stream[0] != version:
            self._stream = (version, [_ids(code) for code in self.subscribed])
        return self._stream[1]


class FakeDhanServer(FakeProviderServer[DhanConnection]):
    """
    A loopback Dhan v2 feed (see the module docstring for its behaviour).

    Use as ``async with FakeDhanServer() as server:``; point the plugin at
    ``server.url`` with the same ``client_id`` and ``token``.
    """

    def __init__(
        self,
        *,
        token: str = "test-token",
        client_id: str = "1000000001",
        host: str = "127.0.0.1",
        port: int = 0,
        auth_failure: str = "disconnect",
        auth_failure_code: int = 808,
        max_per_message: int = MAX_PER_MESSAGE,
        max_per_connection: int = 5000,
        max_connections: int = 5,
        prev_close: Mapping[str, float] | None = None,
        ltt_offset: int = IST_OFFSET,
        close_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if auth_failure not in ("disconnect", "http"):
            raise ValueError("auth_failure must be 'disconnect' or 'http'")
        # Dhan's server pings every 10 s (docs/protocols/dhan.md#keepalive).
        super().__init__(host=host, port=port, ping_interval=10, clock=clock)
        self.token = token
        self.client_id = client_id
        self.auth_failure = auth_failure
        self.auth_failure_code = auth_failure_code
        self.max_per_message = max_per_message
        self.max_per_connection = max_per_connection
        self.max_connections = max_connections
        self.prev_close: dict[str, float] = dict(prev_close or {})
        self.ltt_offset = ltt_offset
        #: Seconds between a disconnect packet and the close frame.
        self.close_delay = close_delay
        #: Handshakes seen, accepted or not.
        self.connection_attempts = 0
        #: Handshakes refused or disconnected for bad credentials.
        self.auth_failures = 0
        #: Disconnect reasons sent, in order.
        self.disconnects_sent: list[int] = []
        #: Packets (or stacked frames) sent by :meth:`stream`.
        self.streamed = 0
        self._seq = 0

    def new_connection(self, cid: int, ws: ServerConnection, path: str) -> DhanConnection:
        """A :class:`DhanConnection`."""
        return DhanConnection(cid, ws, path, opened=time.monotonic())

    @property
    def requests(self) -> list[Any]:
        """Every JSON request received, connection by connection."""
        return [r for c in self.history for r in c.requests]

    # -- sending -----------------------------------------------------------

    def ltt(self, ts_ms: int | None = None) -> int:
        """The LTT Dhan would send for ``ts_ms`` (default now): IST-shifted seconds."""
        return (ts_ms if ts_ms is not None else _now_ms()) // 1000 + self.ltt_offset

    async def send_ticker(self, code: str, ltp: float, ts_ms: int | None = None) -> None:
        """Send a Ticker packet to the connections subscribed to ``code``."""
        await self.send_to_holders(code, encode_ticker(code, ltp, self.ltt(ts_ms)))

    async def send_quote(self, code: str, ltp: float, ts_ms: int | None = None, **fields: Any) -> None:
        """Send a Quote packet (extra fields as in ``protocol.encode_quote``)."""
        packet = encode_quote(code, ltp=ltp, ltt=self.ltt(ts_ms), **fields)
        await self.send_to_holders(code, packet)

    async def send_full(
        self,
        code: str,
        ltp: float,
        ts_ms: int | None = None,
        depth: Iterable[DepthLevel] = (),
        **fields: Any,
    ) -> None:
        """Send a Full packet with up to 5 depth levels."""
        packet = encode_full(code, ltp=ltp, ltt=self.ltt(ts_ms), depth=depth, **fields)
        await self.send_to_holders(code, packet)

    async def send_prev_close(self, code: str, prev_close: float, prev_oi: int = 0) -> None:
        """Send a Prev close packet."""
        await self.send_to_holders(code, encode_prev_close(code, prev_close, prev_oi))

    async def send_oi(self, code: str, oi: int) -> None:
        """Send an OI packet."""
        await self.send_to_holders(code, encode_oi(code, oi))

    async def send_market_status(self, conn: DhanConnection | None = None) -> None:
        """Send a Market status packet (header only)."""
        await self.send(encode_market_status(), conn)

    #: A truncated Quote packet (the decoder counts it as ``short_packet``).
    MALFORMED: Final = b"\x04\x32\x00\x01\x45\x0b"

    async def send_malformed(self) -> int:
        """Send a truncated Quote packet to every open connection; return how many."""
        return await self.send(self.MALFORMED)

    async def disconnect(self, reason: int, conn: DhanConnection | None = None) -> None:
        """Send a disconnect packet with ``reason`` (805, 807...), then close."""
        for c in [conn] if conn is not None else self.connections:
            await self._disconnect(c, reason)

    async def _disconnect(self, conn: DhanConnection, reason: int) -> None:
        self.disconnects_sent.append(reason)
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(encode_disconnect_packet(reason))
        if self.close_delay:
            await asyncio.sleep(self.close_delay)
        await conn.ws.close()
        conn.closed = True
        self.notify()

    async def stream(
        self,
        count: int,
        *,
        rate: float | None = None,
        per_frame: int = 1,
        price: float = 2885.05,
    ) -> int:
        """
        Send ``count`` numbered Quote packets round-robin over subscribed codes.

        Args:
            count: packets to send.
            rate: packets per second (paced); ``None`` sends as fast as the
                socket takes them ("blast").
            per_frame: packets stacked in each frame.
            price: LTP of every packet.

        Returns:
            The number of packets sent (fewer when nothing is subscribed).
        """
        sent = 0
        start = time.monotonic()
        pack_header, pack_quote = HEADER.pack, QUOTE_BODY.pack
        while sent < count:
            conns = [c for c in self.connections if c.subscribed]
            if not conns:
                break
            for conn in conns:
                codes = conn.stream_codes()
                n = min(per_frame, count - sent)
                packets = []
                for _ in range(n):
                    self._seq += 1
                    now = _now_ms()
                    segment, sid = codes[self._seq % len(codes)]
                    packets.append(
                        pack_header(4, 50, segment, sid)
                        + pack_quote(
                            price,
                            now % 1000,
                            now // 1000 + self.ltt_offset,
                            price,
                            self._seq,
                            0,
                            0,
                            0.0,
                            0.0,
                            0.0,
                            0.0,
                        )
                    )
                try:
                    await conn.ws.send(b"".join(packets))
                except ConnectionClosed:
                    conn.closed = True
                    continue
                sent += n
                self.streamed += n
                if sent >= count:
                    break
            if rate:
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            else:
                await asyncio.sleep(0)
        return sent

    # -- server side -------------------------------------------------------

    def _credentials_ok(self, path: str) -> bool:
        query = parse_qs(urlsplit(path).query)

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        return (
            not self.credentials_expired
            and one("version") == "2"
            and one("authType") == "2"
            and one("token") == self.token
            and one("clientId") == self.client_id
        )

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Count the handshake; refuse bad credentials with HTTP 401 when ``auth_failure="http"``."""
        self.connection_attempts += 1
        if self.auth_failure == "http" and not self._credentials_ok(request.path):
            self.auth_failures += 1
            return Response(401, "Unauthorized", Headers({"Content-Length": "0"}), b"")
        return None

    async def on_connect(self, conn: DhanConnection) -> bool:
        """Check the credentials (else disconnect); past ``max_connections``, disconnect the oldest (805)."""
        if not self._credentials_ok(conn.path):
            self.auth_failures += 1
            await self._disconnect(conn, self.auth_failure_code)
            return False
        open_conns = self.connections
        if len(open_conns) > self.max_connections:
            await self._disconnect(open_conns[0], 805)
        return True

    async def on_frame(self, conn: DhanConnection, frame: Frame) -> bool:
        """Apply one JSON request (binary frames are ignored: v2 clients send JSON only)."""
        if isinstance(frame, bytes):
            return True
        return await self._request(conn, frame)

    async def _request(self, conn: DhanConnection, text: str) -> bool:
        try:
            conn.requests.append(json.loads(text))
            request_code, codes = decode_request(text)
        except ValueError:
            return True  # recorded; Dhan's reaction to garbage is undocumented
        if request_code == 12:
            await conn.ws.close()
            conn.closed = True
            return False
        if len(codes) > self.max_per_message:
            await self._disconnect(conn, 804)
            return False
        if request_code in _SUBSCRIBE:
            new = self.record_subscribe(conn, codes, request_code)
            if len(conn.subscribed) > self.max_per_connection:
                await self._disconnect(conn, 804)
                return False
            frames = [encode_prev_close(c, self.prev_close[c]) for c in new if c in self.prev_close]
            if frames:
                await conn.ws.send(b"".join(frames))
        elif request_code in _UNSUBSCRIBE:
            self.record_unsubscribe(conn, codes)
        return True


async def _serve(args: argparse.Namespace) -> None:
    server = FakeDhanServer(token=args.token, client_id=args.client_id, port=args.port, host=args.host)
    await server.start()
    sys.stdout.write(f"fake Dhan feed listening on {server.url}\n")
    sys.stdout.flush()
    try:
        while True:
            if args.stream_rate or args.blast:
                batch = max(1, int(args.stream_rate / 10)) if args.stream_rate else 1000
                sent = await server.stream(batch, rate=args.stream_rate or None, per_frame=args.per_frame)
                if not sent:
                    await asyncio.sleep(0.05)
            else:
                await asyncio.sleep(3600)
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a fake Dhan feed until interrupted (``python -m mdgate_dhan.testing``)."""
    parser = argparse.ArgumentParser(prog="python -m mdgate_dhan.testing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--client-id", default="1000000001")
    parser.add_argument(
        "--stream-rate",
        type=float,
        default=0.0,
        help="numbered Quote packets per second to subscribed instruments (0 = none)",
    )
    parser.add_argument("--blast", action="store_true", help="stream as fast as possible")
    parser.add_argument("--per-frame", type=int, default=1, help="packets stacked per frame")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
