"""
Feed process for the end-to-end benchmark: one fake provider server, driven over stdin.

Runs :class:`mdgate_yahoo.testing.FakeYahooServer` or
:class:`mdgate_dhan.testing.FakeDhanServer` (the real wire protocols, numbered
ticks, send timestamps) in its own process so that producing the load does
not cost the gateway's CPU. Protocol (one line each way)::

    <- READY <url>
    -> stream <rate|max> <seconds>     paced: exactly round(rate*seconds) ticks; max: blast
    <- DONE <sent> <elapsed_s>
    -> state
    <- STATE {"subscribed": n, "connections": c, "sent": total}
    -> quit

Usage: ``python benchmarks/_e2e_feeds.py yahoo|dhan [--cap 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Protocol

import anyio

#: Ticks per chunk in blast mode (each chunk is sent completely: no tick is in doubt).
BLAST_CHUNK = 2000


class _Feed(Protocol):
    url: str

    async def stream(self, rate: float | None, seconds: float) -> int: ...

    def state(self) -> dict[str, int]: ...


class _Yahoo:
    def __init__(self, srv: object) -> None:
        from mdgate_yahoo.testing import FakeYahooServer

        assert isinstance(srv, FakeYahooServer)
        self.srv = srv
        self.url = srv.url

    async def _run(self, rate: float | None, count: int) -> int:
        srv = self.srv
        if not srv.subscribed:
            return 0
        target = srv.stream_sent + count
        srv.start_stream(rate, count=count)
        while srv.stream_sent < target:
            await anyio.sleep(0.002)
            if not srv.connections:
                break
        srv.stop_stream()
        return count

    async def stream(self, rate: float | None, seconds: float) -> int:
        if rate is not None:
            return await self._run(rate, round(rate * seconds))
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            n = await self._run(None, BLAST_CHUNK)
            if not n:
                break
            sent += n
        return sent

    def state(self) -> dict[str, int]:
        return {"subscribed": len(self.srv.subscribed), "connections": len(self.srv.connections),
                "sent": self.srv.stream_sent}


class _Dhan:
    def __init__(self, srv: object) -> None:
        from mdgate_dhan.testing import FakeDhanServer

        assert isinstance(srv, FakeDhanServer)
        self.srv = srv
        self.url = srv.url

    async def stream(self, rate: float | None, seconds: float) -> int:
        if rate is not None:
            return await self.srv.stream(round(rate * seconds), rate=rate)
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            n = await self.srv.stream(BLAST_CHUNK)
            if not n:
                break
            sent += n
        return sent

    def state(self) -> dict[str, int]:
        return {"subscribed": len(self.srv.subscribed), "connections": len(self.srv.connections),
                "sent": self.srv.streamed}


async def _serve(feed: _Feed) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say(f"READY {feed.url}")
    while True:
        raw = await reader.readline()
        if not raw:
            return
        cmd = raw.decode().split()
        if not cmd:
            continue
        if cmd[0] == "stream":
            rate = None if cmd[1] == "max" else float(cmd[1])
            t0 = time.perf_counter()
            sent = await feed.stream(rate, float(cmd[2]))
            say(f"DONE {sent} {time.perf_counter() - t0:.6f}")
        elif cmd[0] == "state":
            say("STATE " + json.dumps(feed.state()))
        elif cmd[0] == "quit":
            return


async def _main(provider: str, cap: int) -> None:
    if provider == "yahoo":
        from mdgate_yahoo.testing import FakeYahooServer

        async with FakeYahooServer(cap=cap or None) as ysrv:
            await _serve(_Yahoo(ysrv))
    else:
        from mdgate_dhan.testing import FakeDhanServer

        async with FakeDhanServer() as dsrv:
            await _serve(_Dhan(dsrv))


def main() -> None:
    """Run one fake feed until stdin closes or ``quit``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("provider", choices=("yahoo", "dhan"))
    parser.add_argument("--cap", type=int, default=100)
    args = parser.parse_args()
    anyio.run(_main, args.provider, args.cap)


if __name__ == "__main__":
    main()
