"""
The chaos soak's client side: well-behaved clients that read everything,
hostile clients (garbage, huge requests, deep nesting, connection floods,
made-up instruments) and slow clients (subscribe, never read).

Every client connects to 127.0.0.1 from its own loopback source address
(127.0.0.1 for normal clients, 127.0.0.6x for hostile ones), so that
per-address limits of the gateway see them as different hosts. Every
operation is bounded in time and size.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

NORMAL_ADDR: Final = "127.0.0.1"
HOSTILE_ADDR: Final = "127.0.0.66"
FLOOD_ADDR: Final = "127.0.0.67"
MADE_UP_ADDR: Final = "127.0.0.68"
SLOW_ADDR: Final = "127.0.0.69"


@dataclass
class ClientStats:
    """What the clients saw, for the report."""

    normal_ticks: int = 0
    normal_frames: int = 0
    normal_disconnects: int = 0
    normal_max_gap_s: float = 0.0
    hostile: dict[str, dict[str, int]] = field(default_factory=dict)
    slow: list[dict[str, Any]] = field(default_factory=list)
    #: connections accepted in each flood
    flood_accepted: list[int] = field(default_factory=list)

    def count(self, kind: str, outcome: str, n: int = 1) -> None:
        """Count one outcome of a hostile client of ``kind``."""
        d = self.hostile.setdefault(kind, {})
        d[outcome] = d.get(outcome, 0) + n


class Clients:
    """Runs the soak's clients against one gateway."""

    def __init__(self, port: int, token: str, instruments: list[str], made_up: list[str],
                 max_message_size: int, rng: random.Random) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.token = token
        self.instruments = instruments
        self.made_up_names = made_up
        self.max_message_size = max_message_size
        self.rng = rng
        self.stats = ClientStats()

    def _connect(self, addr: str, **kwargs: Any) -> Any:
        return connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                       open_timeout=5, close_timeout=1, max_size=None, local_addr=(addr, 0),
                       ping_interval=None, **kwargs)

    # -- normal ------------------------------------------------------------

    async def normal(self) -> None:
        """A client that subscribes every tracked instrument and reads everything, reconnecting."""
        while True:
            try:
                async with self._connect(NORMAL_ADDR) as ws:
                    await ws.send(json.dumps({"op": "subscribe", "instruments": self.instruments}))
                    last = time.monotonic()
                    async for raw in ws:
                        now = time.monotonic()
                        msg = json.loads(raw)
                        if msg.get("type") == "ticks":
                            self.stats.normal_frames += 1
                            self.stats.normal_ticks += len(msg["ticks"])
                            self.stats.normal_max_gap_s = max(self.stats.normal_max_gap_s, now - last)
                            last = now
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                pass
            self.stats.normal_disconnects += 1
            await anyio.sleep(0.5)

    # -- hostile -----------------------------------------------------------

    async def _drain(self, ws: ClientConnection, seconds: float, kind: str) -> int:
        """Read for ``seconds``; count error codes; return bytes received."""
        got = 0
        with anyio.move_on_after(seconds):
            try:
                async for raw in ws:
                    got += len(raw)
                    with contextlib.suppress(ValueError):
                        msg = json.loads(raw)
                        if isinstance(msg, dict) and msg.get("type") == "error":
                            self.stats.count(kind, f"error:{msg.get('code')}")
            except ConnectionClosed as exc:
                self.stats.count(kind, f"closed:{exc.rcvd.code if exc.rcvd else 'none'}")
        return got

    async def garbage(self, secret: str) -> None:
        """Malformed and ill-typed requests (one carries ``secret``, which must never reach a log)."""
        frames: list[str | bytes] = [
            "not json at all", b"\x00\x01\x02binary", "[]", "42", "null", '{"op": "nope"}',
            '{"op": "subscribe", "instruments": "NSE:RELIANCE"}',
            '{"op": "subscribe", "instruments": [1, null, {}, [], true]}',
            json.dumps({"op": "subscribe", "instruments": ["bad name!!", "NASDAQ:" + "A" * 3000, "X:"]}),
            '{"op": "subscribe", "token": "' + secret + '", "instruments": [',
            json.dumps({"op": "unsubscribe", "instruments": ["NASDAQ:NEVERSUBSCRIBED"] * 50}),
            '{"op": "subscribe", "op": "unsubscribe", "instruments": [1e999999, -0, "NSE:"]}',
        ]
        try:
            async with self._connect(HOSTILE_ADDR) as ws:
                sent = 0
                for f in frames:
                    await ws.send(f)
                    sent += len(f)
                got = await self._drain(ws, 1.0, "garbage")
                self.stats.count("garbage", "requests", len(frames))
                self.stats.count("garbage", "reply_bytes", got)
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
            self.stats.count("garbage", f"failed:{type(exc).__name__}")

    async def huge(self) -> None:
        """An oversize message (expect 1009), then 20 near-limit requests of bad names, unread."""
        try:
            async with self._connect(HOSTILE_ADDR) as ws:
                await ws.send("x" * (self.max_message_size + 1024))
                await self._drain(ws, 2.0, "huge_oversize")
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
            self.stats.count("huge_oversize", f"failed:{type(exc).__name__}")
        names: list[str] = []
        budget = self.max_message_size - 200
        size = 40
        i = 0
        while size < budget:
            name = f"NASDAQ:BAD NAME {i:05d}" if i % 2 else f"XX:{'Q' * 12}{i:05d}"
            names.append(name)
            size += len(name) + 4
            i += 1
        request = json.dumps({"op": "subscribe", "instruments": names[:-2]})
        try:
            async with self._connect(HOSTILE_ADDR) as ws:
                for _ in range(20):
                    await ws.send(request)
                self.stats.count("huge_requests", "requests", 20)
                self.stats.count("huge_requests", "request_bytes", 20 * len(request))
                await anyio.sleep(3.0)  # hold without reading
                got = await self._drain(ws, 2.0, "huge_requests")
                self.stats.count("huge_requests", "reply_bytes", got)
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
            self.stats.count("huge_requests", f"failed:{type(exc).__name__}")

    async def nesting(self) -> None:
        """JSON nested far too deep: must be answered ``bad_json``, never crash anything."""
        depth = min(20_000, (self.max_message_size - 100) // 2)
        for payload in ("[" * depth + "]" * depth,
                        '{"op": "subscribe", "instruments": ' + "[" * depth + "]" * depth + "}"):
            try:
                async with self._connect(HOSTILE_ADDR) as ws:
                    await ws.send(payload)
                    await self._drain(ws, 1.5, "nesting")
                    self.stats.count("nesting", "requests")
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                self.stats.count("nesting", f"failed:{type(exc).__name__}")

    async def flood(self, n: int, hold: float) -> None:
        """Open ``n`` connections from one address (bounded concurrency), hold, close; plus silent sockets."""
        conns: list[ClientConnection] = []
        sem = anyio.Semaphore(50)

        async def one() -> None:
            async with sem:
                try:
                    ws = await self._connect(FLOOD_ADDR)
                except InvalidStatus as exc:
                    self.stats.count("flood", f"http_{exc.response.status_code}")
                    return
                except (OSError, InvalidHandshake, TimeoutError) as exc:
                    self.stats.count("flood", f"failed:{type(exc).__name__}")
                    return
                conns.append(ws)
                self.stats.count("flood", "accepted")

        silent: list[socket.socket] = []
        try:
            for _ in range(20):  # TCP connections that never send a handshake
                s = socket.socket()
                s.setblocking(False)
                s.bind((FLOOD_ADDR, 0))
                silent.append(s)
                with contextlib.suppress(OSError):
                    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", self.port))
            with anyio.move_on_after(30):
                async with anyio.create_task_group() as tg:
                    for _ in range(n):
                        tg.start_soon(one)
            self.stats.flood_accepted.append(len(conns))
            await anyio.sleep(hold)
        finally:
            for ws in conns:
                ws.transport.abort()
            for s in silent:
                s.close()

    async def made_up(self) -> None:
        """Three requests of made-up (but well-formed) instruments, read briefly, hold, leave."""
        try:
            async with self._connect(MADE_UP_ADDR) as ws:
                for _ in range(3):
                    names = self.rng.sample(self.made_up_names, min(400, len(self.made_up_names)))
                    names += [f"NSE:NOSUCH{self.rng.randrange(10_000):04d}" for _ in range(3)]
                    await ws.send(json.dumps({"op": "subscribe", "instruments": names}))
                    self.stats.count("made_up", "requested", len(names))
                with anyio.move_on_after(2.0 + self.rng.random() * 2):
                    async for raw in ws:
                        msg = json.loads(raw)
                        kind = msg.get("type")
                        if kind == "subscribed":
                            self.stats.count("made_up", "subscribed", len(msg["instruments"]))
                        elif kind == "error":
                            self.stats.count("made_up", f"error:{msg.get('code')}",
                                             len(msg.get("errors") or [None]))
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
            self.stats.count("made_up", f"failed:{type(exc).__name__}")

    # -- slow --------------------------------------------------------------

    async def slow(self, hold: float) -> None:
        """Connect, subscribe everything, never read for ``hold`` s; then see how the gateway ended it."""
        loop = asyncio.get_running_loop()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        s.bind((SLOW_ADDR, 0))
        rec: dict[str, Any] = {"hold_s": round(hold, 1)}
        try:
            with anyio.fail_after(5):
                await loop.sock_connect(s, ("127.0.0.1", self.port))
                key = base64.b64encode(os.urandom(16)).decode()
                await loop.sock_sendall(s, (
                    f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                    f"Authorization: Bearer {self.token}\r\n\r\n").encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = await loop.sock_recv(s, 1)  # byte by byte: leave the frames unread
                    if not chunk:
                        raise ConnectionError("closed during handshake")
                    head += chunk
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                rec["handshake"] = head.split(b"\r\n", 1)[0].decode(errors="replace")
                return
            await loop.sock_sendall(s, _masked_text(json.dumps(
                {"op": "subscribe", "instruments": self.instruments}).encode()))
            t0 = time.monotonic()
            await anyio.sleep(hold)
            rec.update(await _read_to_end(s, t0))
        except (OSError, TimeoutError, ConnectionError) as exc:
            rec["error"] = type(exc).__name__
        finally:
            s.close()
            self.stats.slow.append(rec)


def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


async def _read_to_end(s: socket.socket, t0: float, limit: int = 256 << 20) -> dict[str, Any]:
    """Read what the gateway queued (bounded); report whether and how it closed the connection."""
    loop = asyncio.get_running_loop()
    walker = _FrameWalker()
    total = 0
    ended = "open"
    with anyio.move_on_after(2.0):  # the kernel holds a few MiB at most: read at loopback speed
        while total < limit:
            try:
                chunk = await loop.sock_recv(s, 1 << 16)
            except ConnectionResetError:
                ended = "reset"
                break
            if not chunk:
                ended = "eof"
                break
            total += len(chunk)
            if walker.feed(chunk):
                ended = "close_frame"
                break
    # partial_tail: bytes of an incomplete frame at the end (the stream was cut inside a frame)
    return {"closed_by_gateway": ended != "open", "ended": ended, "close_code": walker.close_code,
            "bytes_read": total, "partial_tail": len(walker.buf) if ended != "close_frame" else 0,
            "read_s": round(time.monotonic() - t0, 1)}


class _FrameWalker:
    """Walks unmasked server frames as bytes arrive, looking for the close frame."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.close_code: int | None = None

    def feed(self, chunk: bytes) -> bool:
        """Add bytes; True once a complete close frame was seen (its code in ``close_code``)."""
        buf = self.buf
        buf += chunk
        pos = 0
        while pos + 2 <= len(buf):
            op = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if pos + 4 > len(buf):
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                hdr = 4
            elif n == 127:
                if pos + 10 > len(buf):
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                hdr = 10
            if pos + hdr + n > len(buf):
                break
            if op == 0x8:
                self.close_code = int(struct.unpack_from("!H", buf, pos + hdr)[0]) if n >= 2 else 1005
                return True
            pos += hdr + n
        del buf[:pos]
        return False
