"""
Hostile-client probe: what one client that does not play nice costs the gateway and its other clients.

Everything on loopback, each part in its own process:

* a fake Yahoo streamer (``benchmarks/_e2e_feeds.py``, the real wire protocol)
  paced at ``--rate`` ticks/s over 20 instruments;
* ``mdgate run`` (in-memory store, default ``[server]`` limits) with the 20
  instruments in ``[subscriptions] always``;
* one normal measuring client (``benchmarks/_e2e_clients.py``: every tick's
  latency from the provider's send time to receipt) subscribed to them;
* in this process, one hostile client that never reads what it is sent
  (4 KiB receive buffer, no reads after the handshake) and sends
  ``--requests`` hostile requests, round-robin: 1,000 unknown instruments in
  one subscribe (every one refused), JSON nested 30,000 deep, a 64 KiB
  instrument name, a subscribe naming more instruments than
  ``max_instruments_per_request``, a subscribe to the live instruments (so
  ticks pile up for it) and 60 KB of invalid UTF-8. When the gateway closes
  it (1008) it reconnects and goes on.

Windows: warm-up, then the normal client alone (baseline), then the same
with the hostile client (its requests spread over the window), then with a
*stalled* client (subscribed to the live instruments, reading nothing) for
``--stall-seconds``, sampling the gateway's RSS every second. Reported:
gateway RSS before the hostile window and at the end (must rise by at most
``--max-rss-mb``, default 10), the normal client's delivered rate and p99 in
every window, and the gateway's ``/status`` client counters. Exit status 1
when the RSS bound is broken, ``/healthz`` does not answer or a request
failed inside the gateway.

Usage: ``.venv/bin/python benchmarks/probe_hostile.py`` (about 80 seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_e2e import PY, LineProc, http_get, proc_cpu, proc_mem  # noqa: E402

from mdgate.testing.redis import free_port  # noqa: E402

INSTRUMENTS = [f"NASDAQ:HB{i:03d}" for i in range(1, 21)]
SENTINEL = b'{"op": "unsubscribe", "instruments": ["X:SENTINEL"]}'
SENTINEL_ANSWER = b'{"type":"unsubscribed","instruments":["X:SENTINEL"]}'


# -- the gateway --------------------------------------------------------------------


class Gateway:
    """``mdgate run`` as a subprocess, defaults everywhere but the feed and the instruments."""

    def __init__(self, tmp: Path, feed_url: str) -> None:
        self.port = free_port()
        config = tmp / "mdgate.toml"
        config.write_text("\n".join([
            "[server]", f"port = {self.port}", "",
            "[subscriptions]", f"always = {json.dumps(INSTRUMENTS)}", "",
            "[providers.yahoo]", f'url = "{feed_url}"', "",
            "[logging]", 'level = "warning"', 'format = "json"', "",
        ]))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
        self.log = tmp / "gateway.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([PY, "-m", "mdgate", "--config", str(config), "run"],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-2000:]}")
            try:
                if http_get(self.port, "/healthz", 0.5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gateway: no /healthz within 30 s")
            time.sleep(0.02)

    def rss_mb(self) -> float:
        """Resident set size, MiB."""
        return proc_mem(self.proc.pid)["VmRSS"] / 1024

    def status(self) -> dict[str, Any]:
        """``GET /status``."""
        code, body = http_get(self.port, "/status", 5)
        assert code == 200, code
        doc: dict[str, Any] = json.loads(body)
        return doc

    def stop(self) -> None:
        """SIGTERM, then kill."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the hostile client ----------------------------------------------------------------


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (mask of zeros: the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def hostile_requests(max_per_request: int = 1000) -> list[tuple[str, int, bytes]]:
    """The request kinds: (name, opcode, payload)."""
    sub = lambda names: json.dumps({"op": "subscribe", "instruments": names}).encode()  # noqa: E731
    return [
        ("1,000 refused names", 1, sub([f"MARS:R{i:04d}" for i in range(1000)])),
        ("JSON nested 30,000 deep", 1, b"[" * 30_000 + b"]" * 30_000),
        ("64 KiB instrument name", 1, sub(["NSE:" + "X" * 65_000])),
        ("over max_instruments_per_request", 1, sub([f"NYSE:Z{i}" for i in range(max_per_request + 500)])),
        ("subscribe to the live instruments", 1, sub(INSTRUMENTS)),
        ("60 KB invalid UTF-8", 2, b"\xff" * 60_000),
    ]


class Hostile:
    """A client that writes and does not read; reconnects whenever the gateway closes it."""

    def __init__(self, port: int, kinds: list[tuple[str, int, bytes]]) -> None:
        self.port = port
        self.kinds = kinds
        self.connects = 0
        self.refused: dict[int, int] = {}
        self.sent = 0
        self.by_kind: dict[str, int] = {}

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        while True:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
            key = base64.b64encode(os.urandom(16)).decode()
            await loop.sock_sendall(sock, (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)  # byte by byte: nothing past the header is read
                if not chunk:
                    break
                head += chunk
            self.connects += 1
            status = int(head.split()[1]) if head.startswith(b"HTTP/") else 0
            if status == 101:
                reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
                writer.transport.pause_reading()  # and read nothing more until the end
                return reader, writer
            self.refused[status] = self.refused.get(status, 0) + 1
            sock.close()
            await asyncio.sleep(0.2)

    async def run(self, n: int, seconds: float) -> float:
        """
        Send ``n`` requests spread over ``seconds``, then read until the answer
        to a last request (so that the gateway has seen them all); return the time it took.
        """
        kinds = self.kinds
        t0 = time.monotonic()
        reader, writer = await self._connect()
        for i in range(n):
            name, opcode, payload = kinds[i % len(kinds)]
            while True:
                try:
                    writer.write(_frame(opcode, payload))
                    await asyncio.wait_for(writer.drain(), 5.0)
                    break
                except (ConnectionError, TimeoutError):
                    writer.transport.abort()
                    reader, writer = await self._connect()
            self.sent += 1
            self.by_kind[name] = self.by_kind.get(name, 0) + 1
            due = t0 + seconds * (i + 1) / n
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        writer.write(_frame(1, SENTINEL))
        writer.transport.resume_reading()
        seen = b""
        try:
            async with asyncio.timeout(60):
                while SENTINEL_ANSWER not in seen:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break  # closed by the gateway: it has seen everything it will
                    seen = seen[-len(SENTINEL_ANSWER):] + chunk
        except (ConnectionError, TimeoutError):
            pass
        writer.transport.abort()
        return time.monotonic() - t0


# -- the run ---------------------------------------------------------------------------------


def measure(clients: LineProc, feed: LineProc, rate: float, seconds: float,
            during: Any = None) -> dict[str, Any]:
    """One window: the feed streams ``rate`` ticks/s for ``seconds``; returns the client's figures."""
    clients.send("start")
    feed.send(f"stream {rate} {seconds}")
    took = during() if during is not None else None
    sent = int(feed.expect("DONE", seconds + 60).split()[0])
    res: dict[str, Any] = json.loads(clients.ask(f"stop {sent} 10", "RESULT", 60))
    res["sent"] = sent
    res["rate"] = res["ticks"] / res["window_s"]
    res["hostile_s"] = took
    return res


async def stall(port: int, seconds: float, rss: Any) -> list[float]:
    """A client subscribed to the live instruments that never reads: the gateway's RSS once a second."""
    _, writer = await Hostile(port, [])._connect()
    writer.write(_frame(1, json.dumps({"op": "subscribe", "instruments": INSTRUMENTS}).encode()))
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(1.0)
        samples.append(rss())
    writer.transport.abort()
    return samples


def main() -> int:
    """Run the probe and print a markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="ticks/s the feed sends (default 1000)")
    parser.add_argument("--requests", type=int, default=1000, help="hostile requests (default 1000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured window")
    parser.add_argument("--stall-seconds", type=float, default=30.0, help="stalled-client window (s)")
    parser.add_argument("--max-rss-mb", type=float, default=10.0, help="allowed RSS rise (default 10)")
    parser.add_argument("--kinds", default="", help="only these request kinds, by number from 0 "
                        "(comma-separated; development: which kind costs what)")
    args = parser.parse_args()

    procs: list[LineProc] = []
    gw: Gateway | None = None
    with tempfile.TemporaryDirectory(prefix="mdgate-probe-") as tmpdir:
        try:
            feed = LineProc("feed", [PY, str(HERE / "_e2e_feeds.py"), "yahoo", "--cap", "100"])
            procs.append(feed)
            url = feed.expect("READY", 30)
            gw = Gateway(Path(tmpdir), url)
            clients = LineProc("client", [
                PY, str(HERE / "_e2e_clients.py"), "--port", str(gw.port), "--clients", "1", "--probes", "1",
                "--instruments", ",".join(INSTRUMENTS)])
            procs.append(clients)
            clients.expect("READY", 60)
            print("warming up", file=sys.stderr, flush=True)
            measure(clients, feed, args.rate, 5.0)
            print("baseline window", file=sys.stderr, flush=True)
            cpu0 = proc_cpu(gw.proc.pid)
            base = measure(clients, feed, args.rate, args.seconds)
            base_cpu = proc_cpu(gw.proc.pid) - cpu0
            rss_before = gw.rss_mb()
            cpu0 = proc_cpu(gw.proc.pid)
            kinds = hostile_requests()
            if args.kinds:
                kinds = [kinds[int(k)] for k in args.kinds.split(",")]
            hostile = Hostile(gw.port, kinds)
            print(f"hostile window: {args.requests} requests", file=sys.stderr, flush=True)
            under = measure(clients, feed, args.rate, args.seconds,
                            during=lambda: asyncio.run(hostile.run(args.requests, args.seconds * 0.9)))
            gw_cpu = proc_cpu(gw.proc.pid) - cpu0
            rss_hostile = gw.rss_mb()
            print(f"stalled-client window: {args.stall_seconds:g} s", file=sys.stderr, flush=True)
            stalled = measure(clients, feed, args.rate, args.stall_seconds,
                              during=lambda: asyncio.run(stall(gw.port, args.stall_seconds, gw.rss_mb)))
            time.sleep(2.0)  # the hostile clients are gone; let the gateway settle
            rss_after = gw.rss_mb()
            status = gw.status()
            healthz = http_get(gw.port, "/healthz", 2)[0]
        finally:
            for p in procs:
                p.stop()
            if gw is not None:
                gw.stop()
    rise = rss_after - rss_before
    srv = status["server"]
    samples: list[float] = stalled["hostile_s"]

    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    print(f"Feed: {args.rate:,.0f} ticks/s over {len(INSTRUMENTS)} instruments. Hostile client: "
          f"{hostile.sent} requests in {under['hostile_s']:.1f} s ({hostile.connects} connection(s), "
          f"refused handshakes: {hostile.refused or 'none'}); stalled client: subscribed to the same "
          f"instruments, reads nothing for {args.stall_seconds:g} s.\n")
    print("| window | ticks sent | delivered/s | delivered | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, r in (("normal client alone", base), ("with the hostile client", under),
                     ("with the stalled client", stalled)):
        print(f"| {label} | {r['sent']:,} | {r['rate']:,.0f} | {r['ticks'] / max(r['sent'], 1):.1%} "
              f"| {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['max'])} |")
    print()
    print(f"Gateway RSS: {rss_before:.1f} MiB before the hostile window, {rss_hostile:.1f} MiB after it; "
          f"while the stalled client stayed {min(samples):.1f}..{max(samples):.1f} MiB "
          f"(every 5 s: {', '.join(f'{v:.1f}' for v in samples[4::5])}); {rss_after:.1f} MiB at the end: "
          f"**{rise:+.1f} MiB** in all (bound {args.max_rss_mb:g}).")
    print(f"Gateway CPU: {base_cpu:.1f} s in the baseline window, {gw_cpu:.1f} s in the hostile one; "
          f"`/healthz` {healthz}.")
    print(f"`/status` server: closed {srv['closed']}, refused {srv['refused']}, limit_errors "
          f"{srv['limit_errors']}, internal_errors {srv['internal_errors']}, dropped_ticks "
          f"{srv['dropped_ticks']}; pipeline conflated {status['pipeline']['conflated']}.")
    ok = rise <= args.max_rss_mb and srv["internal_errors"] == 0 and healthz == 200
    print("\nresult:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
