"""
The chaos soak's provider side: the fake Yahoo and Dhan servers with a
ledger of every tick they put on a socket, feeders that stream numbered
ticks, and the provider faults (drops, refusals, stalls, malformed frames).

Accounting (see docs/reliability.md, "Chaos soak"): a tick is *sent* once
``ws.send`` returned for it on an open connection; it is identified by
``(instrument, provider code, volume)``, the volume being a per-instrument
sequence number. A sent tick is *excused* (it may legitimately be missing
from Redis) only when

* the driver aborted its connection while the tick's bytes had not yet
  reached the gateway's receive queue (``in_flight_at_abort``; the driver
  pauses the feeder and waits until the socket's user-space buffer and
  kernel send queue are empty before it aborts, so this is normally 0), or
* the gateway unsubscribed its code on that connection at most
  :data:`UNSUB_GRACE` seconds after it was sent (the gateway stops decoding
  a code before it sends the unsubscribe, so ticks in flight are dropped as
  ``unknown_symbol``: ``in_flight_at_unsubscribe``).

Ticks sent with a far-future ``ts`` (``bad_ts``) have volumes from
:data:`BAD_TS_BASE` on and must *not* be stored.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import random
import struct
import termios
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from websockets.exceptions import ConnectionClosed

from mdgate_dhan.protocol import encode_header, encode_quote, encode_ticker
from mdgate_dhan.testing import FakeDhanServer
from mdgate_yahoo.testing import MALFORMED_FRAMES, FakeYahooServer, encode_pricing

#: A tick whose send preceded an unsubscribe of its code by at most this much may be lost.
UNSUB_GRACE: Final = 1.0
#: Volumes of far-future ``ts`` ticks start here (never a sequence number of a normal tick).
BAD_TS_BASE: Final = 3_000_000_000
#: Seconds the driver waits for a connection's bytes to reach the gateway before aborting it.
FLUSH_WAIT: Final = 3.0


def unsent_bytes(ws: Any) -> int | None:
    """Bytes written to ``ws`` not yet in the peer's receive queue (None: socket gone)."""
    transport = ws.transport
    pending = int(transport.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return None
    # On loopback a byte leaves the kernel send queue once it is in the peer's receive queue,
    # which Linux keeps readable even after a reset.
    return pending + int(struct.unpack("i", raw)[0])


@dataclass(eq=False)
class ConnLog:
    """What one provider connection carried, as its fake server saw it."""

    provider: str
    conn_id: int
    opened: float
    #: (code, volume, monotonic send time) of every tick sent.
    sent: list[tuple[str, int, float]] = field(default_factory=list)
    #: ``sent[:flushed]`` is known to have reached the gateway's receive queue.
    flushed: int = 0
    closed_at: float | None = None
    #: ``driver`` (a fault aborted or closed it) or ``gateway``.
    closed_by: str | None = None
    #: Ticks that were still on their way when the driver aborted the connection.
    in_flight_at_abort: int = 0
    #: code -> monotonic times the fake processed an unsubscribe of it.
    unsubs: dict[str, list[float]] = field(default_factory=dict)


class Ledger:
    """Every connection of both fakes, and the ticks sent on each."""

    def __init__(self) -> None:
        self.conns: dict[Any, ConnLog] = {}
        self.bad_ts: list[tuple[str, str, int]] = []  # (provider code, instrument, volume)
        self.malformed: dict[str, int] = {}
        self._ids = itertools.count(1)

    def log(self, provider: str, ws: Any) -> ConnLog:
        """The log of connection ``ws`` (created on first use)."""
        entry = self.conns.get(ws)
        if entry is None:
            entry = self.conns[ws] = ConnLog(provider, next(self._ids), time.monotonic())
        return entry

    def closed(self, provider: str, ws: Any) -> None:
        """Record that ``ws`` ended (by the gateway unless a fault marked it first)."""
        entry = self.log(provider, ws)
        if entry.closed_at is None:
            entry.closed_at = time.monotonic()
            entry.closed_by = entry.closed_by or "gateway"

    def all_sent(self) -> Iterable[tuple[ConnLog, int, str, int, float]]:
        """Every sent tick: (connection, index on it, code, volume, send time)."""
        for entry in self.conns.values():
            for i, (code, volume, t) in enumerate(entry.sent):
                yield entry, i, code, volume, t


class ChaosYahoo(FakeYahooServer):
    """FakeYahooServer that records unsubscribes and connection ends and can refuse handshakes."""

    def __init__(self, ledger: Ledger, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger
        #: The next this-many connections are closed at once with 1013 (try again later).
        self.refuse_left = 0
        self.refusals = 0

    def _apply(self, conn: Any, text: str) -> list[str] | None:
        before = set(conn.subscribed)
        added = super()._apply(conn, text)
        gone = before - set(conn.subscribed)
        if gone:
            now = time.monotonic()
            unsubs = self.ledger.log("yahoo", conn.ws).unsubs
            for code in gone:
                unsubs.setdefault(code, []).append(now)
        return added

    async def _handler(self, ws: Any) -> None:
        if self.refuse_left > 0:
            self.refuse_left -= 1
            self.refusals += 1
            with contextlib.suppress(ConnectionClosed):
                await ws.close(1013, "try again later")
            return
        self.ledger.log("yahoo", ws)
        try:
            await super()._handler(ws)
        finally:
            self.ledger.closed("yahoo", ws)


class ChaosDhan(FakeDhanServer):
    """FakeDhanServer that records unsubscribes and connection ends and can refuse logins (807)."""

    def __init__(self, ledger: Ledger, **kwargs: Any) -> None:
        super().__init__(auth_failure_code=807, **kwargs)
        self.ledger = ledger
        #: The next this-many handshakes are refused (disconnect 807: token expired).
        self.refuse_left = 0
        self.silent: set[Any] = set()

    def _credentials_ok(self, path: str) -> bool:
        if self.refuse_left > 0:
            self.refuse_left -= 1
            return False
        return super()._credentials_ok(path)

    async def _request(self, conn: Any, text: str) -> bool:
        before = set(conn.subscribed)
        try:
            return await super()._request(conn, text)
        finally:
            gone = before - set(conn.subscribed)
            if gone:
                now = time.monotonic()
                unsubs = self.ledger.log("dhan", conn.ws).unsubs
                for code in gone:
                    unsubs.setdefault(code, []).append(now)

    async def _handler(self, ws: Any) -> None:
        self.ledger.log("dhan", ws)
        try:
            await super()._handler(ws)
        finally:
            self.ledger.closed("dhan", ws)


class Feeder:
    """
    Streams numbered ticks from one fake to every tracked code subscribed on its connections.

    Args:
        provider: ``yahoo`` or ``dhan``.
        server: the fake.
        instruments: code -> instrument for every code the feeder may send.
        rate: ticks per second in total.
    """

    def __init__(self, provider: str, server: ChaosYahoo | ChaosDhan, instruments: dict[str, str],
                 rate: float, rng: random.Random) -> None:
        self.provider = provider
        self.server = server
        self.ledger = server.ledger
        self.instruments = instruments
        self.rate = rate
        self.rng = rng
        self.seq: dict[str, int] = {}
        self.paused = 0
        self.sending = False
        self.sent = 0
        self._rr = 0

    # -- targets -----------------------------------------------------------

    def _pairs(self) -> list[tuple[Any, str]]:
        out: list[tuple[Any, str]] = []
        if isinstance(self.server, ChaosYahoo):
            for yc in self.server.connections:
                if not yc.silent:
                    out.extend((yc.ws, code) for code in yc.subscribed if code in self.instruments)
        else:
            for dc in self.server.connections:
                if dc.ws not in self.server.silent:
                    out.extend((dc.ws, code) for code in dc.subscribed if code in self.instruments)
        return out

    def _held(self) -> bool:
        return self.paused > 0

    def _subscribed(self, ws: Any, code: str) -> bool:
        if isinstance(self.server, ChaosYahoo):
            return any(c.ws is ws and code in c.subscribed and not c.silent for c in self.server.connections)
        return ws not in self.server.silent and any(
            c.ws is ws and code in c.subscribed for c in self.server.connections)

    def _frame(self, code: str, volume: int, ts_ms: int | None = None) -> str | bytes:
        price = 100.0 + (volume % 200) * 0.25
        if isinstance(self.server, ChaosYahoo):
            return encode_pricing(id=code, price=price, time=ts_ms or time.time_ns() // 1_000_000,
                                  day_volume=volume, last_size=1 + volume % 7, quote_type=8,
                                  market_hours=1, price_hint=2)
        return encode_quote(code, ltp=price, ltq=1 + volume % 7, ltt=self.server.ltt(ts_ms), volume=volume,
                            open=100.0, high=150.0, low=99.0)

    # -- sending -----------------------------------------------------------

    async def _send(self, ws: Any, code: str, frame: str | bytes, volume: int | None) -> bool:
        entry = self.ledger.log(self.provider, ws)
        t = time.monotonic()
        try:
            await ws.send(frame)
        except ConnectionClosed:
            return False
        if volume is not None:
            entry.sent.append((code, volume, t))
            if unsent_bytes(ws) == 0:
                entry.flushed = len(entry.sent)
        return True

    async def tick(self, ws: Any, code: str) -> bool:
        """Send the next numbered tick of ``code`` on ``ws``."""
        volume = self.seq.get(code, 0) + 1
        self.seq[code] = volume
        if await self._send(ws, code, self._frame(code, volume), volume):
            self.sent += 1
            return True
        return False

    async def run(self) -> None:
        """Stream at ``rate`` until cancelled (round-robin over subscribed tracked codes)."""
        step = 0.01
        t0 = time.monotonic()
        done = 0
        while True:
            await anyio.sleep(step)
            if self.paused:
                t0, done = time.monotonic(), 0
                continue
            due = int((time.monotonic() - t0) * self.rate) - done
            if due > self.rate * 0.25:  # we were starved: do not burst, restart the pacing
                t0, done, due = time.monotonic(), 0, int(self.rate * step) or 1
            if due <= 0:
                continue
            pairs = self._pairs()
            if not pairs:
                done += due
                continue
            self.sending = True
            try:
                for _ in range(due):
                    if self._held():
                        break
                    ws, code = pairs[self._rr % len(pairs)]
                    self._rr += 1
                    if self._subscribed(ws, code):
                        await self.tick(ws, code)
                    done += 1
            finally:
                self.sending = False

    @contextlib.asynccontextmanager
    async def pause(self) -> AsyncIterator[None]:
        """Hold the feeder (between two frames) for the duration of the block."""
        self.paused += 1
        try:
            with anyio.move_on_after(5.0):
                while self.sending:
                    await anyio.sleep(0.002)
            yield
        finally:
            self.paused -= 1

    async def flush(self, ws: Any) -> bool:
        """Wait (bounded) until every byte sent on ``ws`` is in the gateway's receive queue."""
        entry = self.ledger.log(self.provider, ws)
        deadline = time.monotonic() + FLUSH_WAIT
        while time.monotonic() < deadline:
            if unsent_bytes(ws) == 0:
                entry.flushed = len(entry.sent)
                return True
            await anyio.sleep(0.005)
        return False

    def open_connections(self) -> list[Any]:
        """The fake's open connections (their ``ws``)."""
        if isinstance(self.server, ChaosYahoo):
            return [yc.ws for yc in self.server.connections]
        return [dc.ws for dc in self.server.connections]

    async def abort_all(self, clean: bool) -> int:
        """Flush, then end every connection (TCP abort, or a 1001 close when ``clean``)."""
        n = 0
        async with self.pause():
            for ws in self.open_connections():
                await self.flush(ws)
                entry = self.ledger.log(self.provider, ws)
                entry.closed_by = "driver"
                entry.in_flight_at_abort = len(entry.sent) - entry.flushed
                if clean:
                    with anyio.move_on_after(2.0), contextlib.suppress(ConnectionClosed):
                        await ws.close(1001, "going away")
                ws.transport.abort()
                n += 1
        return n

    async def stall(self) -> int:
        """Keep every open connection but send nothing more on it (the gateway must notice)."""
        n = 0
        async with self.pause():
            if isinstance(self.server, ChaosYahoo):
                for yc in self.server.connections:
                    yc.silent = True
                    n += 1
            else:
                for dc in self.server.connections:
                    self.server.silent.add(dc.ws)
                    n += 1
        return n

    async def auth_refusal(self, refuse_next: int) -> int:
        """Dhan only: disconnect 807 (token expired) on every connection, refuse the next logins."""
        assert isinstance(self.server, ChaosDhan)
        n = 0
        async with self.pause():
            self.server.refuse_left = refuse_next
            for c in list(self.server.connections):
                await self.flush(c.ws)
                entry = self.ledger.log(self.provider, c.ws)
                entry.closed_by = "driver"
                entry.in_flight_at_abort = len(entry.sent) - entry.flushed
                await self.server.disconnect(807, c)
                n += 1
        return n

    async def malformed(self) -> dict[str, int]:
        """Send one of each malformed frame kind, a far-future tick and a good tick stacked with garbage."""
        kinds: dict[str, int] = {}
        async with self.pause():
            pairs = self._pairs()
            if not pairs:
                return kinds
            ws, code = pairs[self.rng.randrange(len(pairs))]
            for kind, frame in self._garbage(code):
                if await self._send(ws, code, frame, None):
                    kinds[kind] = kinds.get(kind, 0) + 1
            # A tick of a far-future time: must be refused by the timestamp rule, not stored.
            volume = BAD_TS_BASE + len(self.ledger.bad_ts) + 1
            if isinstance(self.server, ChaosYahoo):
                bad = self._frame(code, volume, ts_ms=time.time_ns() // 1_000_000 + 365 * 86_400_000)
            else:
                bad = encode_quote(code, ltp=123.45, ltq=1, ltt=0xFFFFFFFF, volume=volume)
            if await self._send(ws, code, bad, None):
                self.ledger.bad_ts.append(("YF" if self.provider == "yahoo" else "DHAN",
                                           self.instruments[code], volume))
                kinds["bad_ts"] = kinds.get("bad_ts", 0) + 1
            if not isinstance(self.server, ChaosYahoo):
                # A good packet stacked with a truncated one: the good tick must still be stored.
                volume = self.seq.get(code, 0) + 1
                self.seq[code] = volume
                good = self._frame(code, volume)
                assert isinstance(good, bytes)
                frame = good + encode_header(4, 50, 1, 1)[:6]
                if await self._send(ws, code, frame, volume):
                    self.sent += 1
                    kinds["stacked_bad_tail"] = kinds.get("stacked_bad_tail", 0) + 1
        for k, v in kinds.items():
            key = f"{self.provider}:{k}"
            self.ledger.malformed[key] = self.ledger.malformed.get(key, 0) + v
        return kinds

    def _garbage(self, code: str) -> list[tuple[str, str | bytes]]:
        server = self.server
        if isinstance(server, ChaosYahoo):
            return [(k, f) for k, f in MALFORMED_FRAMES.items()] + [
                ("not_json_object", json.dumps([1, 2, 3])),
                ("binary", b"\x00\xff" * 40),
            ]
        return [
            ("short_packet", encode_header(4, 20, 1, 2885) + b"\0" * 12),
            ("bad_length", encode_header(4, 3, 1, 2885)),
            ("unknown_code", encode_header(99, 8, 1, 2885)),
            ("unknown_symbol", encode_ticker("NSE_EQ:999999", 10.0, server.ltt())),
            ("text_frame", "this is not a binary packet"),
            ("truncated_header", b"\x04\x32\x00"),
        ]
