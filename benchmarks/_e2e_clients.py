"""
Client process for the end-to-end benchmark: N lean WebSocket clients, driven over stdin.

Each client is a minimal RFC 6455 client on an ``asyncio.Protocol`` (the
server's frames are unmasked, so reading one costs a header parse): it
subscribes to the given instruments and counts delivered ticks by counting
``"recv_ts"`` keys in each ``ticks`` frame, without decoding. A few *probe*
clients, spread over the connection order, decode every frame (msgspec,
only the fields needed) and record, for every tick, the latency from the
provider's send time to the moment the frame was read off the socket:

* Yahoo: the fake server puts its send time (epoch ms) in ``time``, which
  becomes the tick's ``ts``;
* Dhan: the fake server sends the send second in LTT and the milliseconds in
  LTQ, so the send time is ``ts + size``;

and the gateway-internal part, from the gateway's ``recv_ts`` to receipt.
Both are in epoch milliseconds: the send and receive stamps are whole ms, so
each sample reads up to 1 ms high (0.5 ms on average).

Protocol on stdin/stdout::

    <- READY <connected clients>
    -> start                          reset counters, open the window
    -> stop <expected_per_client> <timeout_s>
    <- RESULT {...}                   once every client got the expected ticks or went quiet
    -> quit
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import struct
import sys
import time
from array import array
from typing import Any

import msgspec


class _T(msgspec.Struct):
    ts: int
    recv_ts: int
    provider: str
    size: int | None = None


class _Frame(msgspec.Struct):
    ticks: list[_T] = []


_decode_frame = msgspec.json.Decoder(_Frame).decode


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return key + (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + _mask(payload)


class Client(asyncio.Protocol):
    """One lean WebSocket client."""

    def __init__(self, path: str, host: str, subscribe: bytes, probe: bool) -> None:
        self.path = path
        self.host = host
        self.subscribe = subscribe
        self.probe = probe
        self.buf = bytearray()
        self.upgraded = False
        #: Resolved when the snapshot that follows ``subscribed`` arrived.
        self.subscribed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.ticks = 0
        self.frames = 0
        self.last_rx = 0.0
        self.lat = array("d")
        self.internal = array("d")
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("connection lost before subscribed"))

    def data_received(self, data: bytes) -> None:
        now = time.time_ns() / 1e6
        buf = self.buf
        buf += data
        pos = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(bytes(buf[:200]).decode(errors="replace"))
            self.upgraded = True
            pos = end + 4
            assert self.transport is not None
            self.transport.write(_frame(1, self.subscribe))
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            start = pos + 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op == 1:
                self._message(buf, start, end, now)
            elif op == 9:
                assert self.transport is not None
                self.transport.write(_frame(10, bytes(buf[start:end])))
            elif op == 8:
                assert self.transport is not None
                self.transport.close()
            pos = end
        if pos:
            del buf[:pos]

    def _message(self, buf: bytearray, start: int, end: int, now: float) -> None:
        head = bytes(buf[start:start + 24])
        if b'"ticks"' in head and b"snapshot" not in head:
            self.frames += 1
            self.ticks += buf.count(b'"recv_ts"', start, end)
            self.last_rx = now
            if self.probe:
                lat = self.lat
                internal = self.internal
                for t in _decode_frame(bytes(buf[start:end])).ticks:
                    send = t.ts + (t.size or 0) if t.provider == "DHAN" else t.ts
                    lat.append(now - send)
                    internal.append(now - t.recv_ts)
        elif b"snapshot" in head and not self.subscribed.done():
            self.subscribed.set_result(None)

    def reset(self) -> None:
        """Start a new measuring window."""
        self.ticks = 0
        self.frames = 0
        self.lat = array("d")
        self.internal = array("d")


def _pct(values: array[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    instruments = [i for i in args.instruments.split(",") if i]
    sub = json.dumps({"op": "subscribe", "instruments": instruments}).encode()
    host, port = args.host, args.port
    probes = {round(i * args.clients / args.probes) for i in range(min(args.probes, args.clients))}
    clients: list[Client] = []
    for i in range(args.clients):
        factory = functools.partial(Client, args.path, f"{host}:{port}", sub, i in probes)
        _, proto = await loop.create_connection(factory, host, port)
        clients.append(proto)
    await asyncio.wait_for(asyncio.gather(*(c.subscribed for c in clients)), 120)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say(f"READY {len(clients)}")
    t0 = time.time_ns() / 1e6
    cpu0 = time.process_time()
    while True:
        raw = await reader.readline()
        if not raw:
            return
        cmd = raw.decode().split()
        if not cmd:
            continue
        if cmd[0] == "start":
            for c in clients:
                c.reset()
            t0 = time.time_ns() / 1e6
            cpu0 = time.process_time()
        elif cmd[0] == "stop":
            expected, timeout = int(cmd[1]), float(cmd[2])
            deadline = time.monotonic() + timeout
            last_total, quiet_since = -1, time.monotonic()
            while time.monotonic() < deadline:
                total = sum(c.ticks for c in clients)
                if all(c.ticks >= expected for c in clients):
                    break
                if total != last_total:
                    last_total, quiet_since = total, time.monotonic()
                elif time.monotonic() - quiet_since > 1.0:
                    break
                await asyncio.sleep(0.02)
            lat = array("d")
            internal = array("d")
            for c in clients:
                lat.extend(c.lat)
                internal.extend(c.internal)
            last = max((c.last_rx for c in clients), default=t0)
            result: dict[str, Any] = {
                "clients": len(clients),
                "closed": sum(c.closed for c in clients),
                "ticks": sum(c.ticks for c in clients),
                "min_ticks": min(c.ticks for c in clients),
                "frames": sum(c.frames for c in clients),
                "window_s": max(last - t0, 1.0) / 1000,
                "cpu_s": time.process_time() - cpu0,
                "samples": len(lat),
                "p50": _pct(lat, 0.50), "p99": _pct(lat, 0.99), "max": max(lat) if lat else None,
                "int_p50": _pct(internal, 0.50), "int_p99": _pct(internal, 0.99),
                "int_max": max(internal) if internal else None,
            }
            say("RESULT " + json.dumps(result))
        elif cmd[0] == "quit":
            return


def main() -> None:
    """Connect the clients and serve the stdin protocol."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--instruments", required=True, help="comma-separated")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
