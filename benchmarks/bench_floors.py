"""
The floor of each step of the tick path, measured on its own on this machine.

What a tick costs end to end (``bench_e2e.py``) is the sum of steps; this script measures
what each step costs with nothing else around it, so that a profile of the gateway can be
read against it:

* **receive**: CPU per WebSocket message of a client that only counts what it receives,
  with websockets (the library the SDKs use) and with picows (the gateway's), the server
  in another process on loopback: *blast* (messages back to back: many per socket read)
  and *paced* (one message every 100 µs: every message its own wake-up, the event loop's
  ``epoll`` and callbacks included);
* **event-loop hop**: one ``loop.call_soon`` round (what each extra iteration between a
  read and a write costs: a task switch or a scheduled callback);
* **socket write**: one ``send`` of a 200-byte frame to a loopback peer (the floor of one
  client write; on loopback the receiver's TCP work is done in the sender's system call);
* **fan-out per client**: one tick published to 50 idle pre-framed clients and flushed
  (``Fanout.publish``, ``Flusher.flush``: one ``send`` per client to a loopback peer), per
  client: the socket write above plus the gateway's Python per client;
* **pipeline step**: ``Pipeline.step`` with the Redis store's ``write`` (buffer, bars,
  latest table; no I/O) and a fan-out with no client, per tick, for batches of 1 and 100;
* **Redis batch packing**: ``BatchPacker.pack`` (IDs, one JSON argument, hiredis packing),
  per tick, for batches of 50 and 500 ticks over 500 instruments;
* **Redis storage at a paced rate** (``_floor_redis.py``): one tick per timer wake-up at
  10,000 and 1,000 ticks/s, CPU per tick of the timer alone, of a minimal batching client
  (packing, one ``EVALSHA`` per 5 ms, the reply), of the same on the writer's libraries
  (redis-py's connection, anyio's events and deadlines) and of the gateway's ``BatchWriter``
  (with and without one-minute bars); the Redis rows print each variant's cost above the timer
  alone.

Decoding is measured by ``bench_yahoo_decode.py`` and ``bench_dhan_decode.py``.

Usage: ``.venv/bin/python benchmarks/bench_floors.py [--messages 200000]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import multiprocessing
import os
import platform
import socket
import struct
import time
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: A message the size of a Yahoo pricing message (base64 text, ~150 bytes).
PAYLOAD = base64.b64encode(os.urandom(110))


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + struct.pack("!H", n)
    return head + payload


def _serve(sock: socket.socket, count: int, pace_us: float) -> None:
    """One WebSocket client at a time: the upgrade, then ``count`` text frames, then close."""
    while True:
        conn, _ = sock.accept()
        with conn:
            req = b""
            while b"\r\n\r\n" not in req:
                req += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in req.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            frame = _frame(PAYLOAD)
            if pace_us <= 0:
                chunk = frame * 100
                for _ in range(count // 100):
                    conn.sendall(chunk)
            else:
                step = pace_us / 1e6
                due = time.perf_counter()
                for _ in range(count):
                    due += step
                    while time.perf_counter() < due:
                        pass
                    conn.sendall(frame)
            conn.sendall(b"\x88\x02\x03\xe8")
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass


def _server(count: int, pace_us: float) -> tuple[multiprocessing.Process, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    proc = multiprocessing.Process(target=_serve, args=(sock, count, pace_us), daemon=True)
    proc.start()
    sock.close()
    return proc, port


async def _websockets(url: str, count: int) -> int:
    from websockets.asyncio.client import connect

    n = 0
    async with connect(url, compression=None, max_size=None) as ws:
        async for _ in ws:
            n += 1
            if n == count:
                break
    return n


async def _picows(url: str, count: int) -> int:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    done = asyncio.get_running_loop().create_future()

    class Count(WSListener):  # type: ignore[misc]
        n = 0

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.TEXT:
                frame.get_payload_as_utf8_text()  # what the gateway does with a message
                self.n += 1
                if self.n == count and not done.done():
                    done.set_result(None)

    transport, listener = await ws_connect(Count, url)
    await done
    transport.disconnect()
    return int(listener.n)


def _run(coro: Any, uvloop: bool) -> Any:
    if not uvloop:
        return asyncio.run(coro)
    import uvloop as uv

    with asyncio.Runner(loop_factory=uv.new_event_loop) as runner:
        return runner.run(coro)


def receive(lib: str, count: int, pace_us: float, *, uvloop: bool = False) -> float:
    """CPU µs per message received (on uvloop's event loop with ``uvloop``)."""
    proc, port = _server(count, pace_us)
    try:
        fn = _websockets if lib == "websockets" else _picows
        t0 = time.process_time()
        n = _run(fn(f"ws://127.0.0.1:{port}/", count), uvloop)
        return (time.process_time() - t0) / n * 1e6
    finally:
        proc.kill()
        proc.join()


def loop_hop(rounds: int = 200_000) -> float:
    """CPU µs per ``call_soon`` round of the event loop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = rounds

        def hop() -> None:
            nonlocal left
            left -= 1
            if left:
                loop.call_soon(hop)
            else:
                done.set_result(None)

        loop.call_soon(hop)
        await done

    t0 = time.process_time()
    asyncio.run(main())
    return (time.process_time() - t0) / rounds * 1e6


def _drain(sock: socket.socket) -> None:
    conn, _ = sock.accept()
    with conn:
        while conn.recv(1 << 16):
            pass


def socket_write(count: int = 200_000) -> float:
    """CPU µs of the sender per 200-byte ``send`` to a loopback peer."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    proc = multiprocessing.Process(target=_drain, args=(sock,), daemon=True)
    proc.start()
    out = socket.create_connection(sock.getsockname())
    sock.close()
    out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = b"x" * 200
    t0 = time.process_time()
    for _ in range(count):
        out.send(data)
    spent = time.process_time() - t0
    out.close()
    proc.join(10)
    return spent / count * 1e6


def pipeline_step(batch: int, batches: int = 2_000) -> float:
    """CPU µs per tick of ``Pipeline.step`` (Redis store buffer + bars, fan-out without clients)."""
    from mdgate._config import RedisSettings, RuntimeSettings
    from mdgate._latest import LatestTicks
    from mdgate._model import Tick
    from mdgate._pipeline import Pipeline
    from mdgate._queue import TickQueue
    from mdgate._serve.fanout import Fanout
    from mdgate._stats import PipelineStats
    from mdgate.plugins.stores.redis_store._url import RedisUrl
    from mdgate.plugins.stores.redis_store._writer import BatchWriter

    writer = BatchWriter(RedisUrl("redis://127.0.0.1:1"), RedisSettings(buffer_max=10**9),
                         RuntimeSettings(), LatestTicks())
    fanout: Any = Fanout()
    p = Pipeline(TickQueue(10**9), LatestTicks(), writer.write, fanout.publish, PipelineStats())
    now = 1_700_000_000_000
    made = [[Tick(f"NSE:S{(b * batch + i) % 1000}", 100.0 + i % 7, now + b, now + b, "DHAN", volume=i)
             for i in range(batch)] for b in range(batches)]
    t0 = time.process_time()
    for ticks in made:
        p.step(ticks)
    return (time.process_time() - t0) / (batch * batches) * 1e6


def _drain_all(sock: socket.socket, clients: int) -> None:
    import selectors

    sel = selectors.DefaultSelector()
    for _ in range(clients):
        conn, _ = sock.accept()
        sel.register(conn, selectors.EVENT_READ)
    left = clients
    while left:
        for key, _ in sel.select():
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            if not conn.recv(1 << 16):
                sel.unregister(conn)
                conn.close()
                left -= 1


def fanout_flush(clients: int, ticks: int = 4_000) -> float:
    """
    CPU µs per client per tick of publishing one tick to ``clients`` idle pre-framed clients
    and writing each its frame (``Fanout.publish`` + ``Flusher.flush``: one ``send`` each, to
    loopback peers drained by another process); compare with the socket write alone.
    """
    from types import SimpleNamespace

    from websockets.protocol import State

    from mdgate._model import Tick
    from mdgate._serve.fanout import ClientOutbox, Fanout
    from mdgate._serve.writer import Flusher

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(clients)
    proc = multiprocessing.Process(target=_drain_all, args=(sock, clients), daemon=True)
    proc.start()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        fanout, flusher = Fanout(framed=True), Flusher(lambda ms: None)
        transports = []
        for _ in range(clients):
            transport, _ = await loop.create_connection(asyncio.Protocol, *sock.getsockname())
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            outbox = ClientOutbox(10_000, 1 << 20, framed=True)
            fanout.set_instruments(outbox, frozenset({"NSE:S1"}))
            flusher.attach(SimpleNamespace(transport=transport, protocol=SimpleNamespace(state=State.OPEN)),  # type: ignore[arg-type]
                           outbox)
            transports.append(transport)
        now = int(time.time() * 1000)
        made = [[Tick("NSE:S1", 100.0 + i % 7, now, now, "DHAN", volume=i)] for i in range(ticks)]
        t0 = time.process_time()
        for batch in made:
            flusher.hold()
            fanout.publish(batch)
            flusher.flush()
            await asyncio.sleep(0)  # what a transport could not send goes out meanwhile
        spent = time.process_time() - t0
        assert flusher.handed_back == 0, "a client lagged: the figure would not be the idle path"
        for transport in transports:
            transport.close()
        return spent / (ticks * clients) * 1e6

    try:
        return asyncio.run(main())
    finally:
        sock.close()
        proc.join(10)


def pack_batch(n: int, tries: int = 5) -> float:
    """CPU µs per tick of packing one Redis batch of ``n`` ticks (best of ``tries``)."""
    from mdgate._model import Tick
    from mdgate.plugins.stores.redis_store._codec import BatchPacker

    packer = BatchPacker(100_000, 100_000, 10_000)
    now = 1_700_000_000_000
    ticks = [Tick(f"NSE:S{i % 500}", 100.0 + i % 7, now + i, now + i, "DHAN", volume=i) for i in range(n)]
    reps = max(1, 40_000 // n)
    best = float("inf")
    for _ in range(tries):
        t0 = time.process_time()
        for _ in range(reps):
            packer.pack(ticks)
        best = min(best, (time.process_time() - t0) / reps / n)
    return best * 1e6


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="messages per blast receive run")
    parser.add_argument("--paced", type=int, default=20_000, help="messages per paced receive run")
    parser.add_argument("--redis-rounds", type=int, default=3, help="paced Redis rounds (0: skip)")
    args = parser.parse_args()
    rows = [
        ("receive, websockets, blast", receive("websockets", args.messages, 0)),
        ("receive, picows, blast", receive("picows", args.messages, 0)),
        ("receive, websockets, paced (one message per 100 µs)", receive("websockets", args.paced, 100)),
        ("receive, picows, paced (one message per 100 µs)", receive("picows", args.paced, 100)),
        *((("receive, picows, paced, on uvloop", receive("picows", args.paced, 100, uvloop=True)),)
          if _has_uvloop() else ()),
        ("event-loop hop (call_soon round)", loop_hop()),
        ("socket write, 200 bytes, loopback", socket_write()),
        ("fan-out of one tick to 50 idle clients, per client (publish, flush, send)", fanout_flush(50)),
        ("pipeline step, batches of 1 tick", pipeline_step(1, 20_000)),
        ("pipeline step, batches of 100 ticks", pipeline_step(100)),
        ("Redis batch packing, 50 ticks per batch", pack_batch(50)),
        ("Redis batch packing, 500 ticks per batch", pack_batch(500)),
    ]
    if args.redis_rounds:
        from _floor_redis import paced_store

        for rate in (10_000, 1_000):
            got = paced_store(rate, rounds=args.redis_rounds)
            rows += [
                (f"Redis storage at {rate:,} ticks/s, minimal batching client (above the timer's "
                 f"{got['pacing']:.1f})", got["minimal"] - got["pacing"]),
                (f"Redis storage at {rate:,} ticks/s, the same on the writer's libraries (redis-py, anyio)",
                 got["minimal, libraries"] - got["pacing"]),
                (f"Redis storage at {rate:,} ticks/s, the gateway's BatchWriter",
                 got["writer"] - got["pacing"]),
                (f"Redis storage at {rate:,} ticks/s, BatchWriter with bars off",
                 got["writer, no bars"] - got["pacing"]),
            ]
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs\n")
    print("| step on its own | CPU µs per message / call / tick |\n| --- | ---: |")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
