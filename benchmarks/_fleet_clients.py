"""
The fleet chaos test's clients: each subscribes to every instrument on one fan-out instance
and, when that instance goes away, reconnects to the next one with ``since`` (its last seq of
each instrument), as an application would. Everything received is kept for the checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus


@dataclass
class FleetClient:
    """One client, following ``urls`` in turn."""

    name: str
    urls: list[str]
    instruments: list[str]
    token: str
    #: instrument -> every seq received, in order.
    seqs: dict[str, list[int]] = field(default_factory=dict)
    #: instrument -> monotonic seconds of each tick received.
    times: dict[str, list[float]] = field(default_factory=dict)
    #: (monotonic seconds, the gap frame).
    gaps: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    #: The ``recovered`` map of each resume (subscribe with ``since``).
    resumes: list[dict[str, bool]] = field(default_factory=list)
    #: (monotonic seconds, url) of each connection made.
    connects: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    at: int = 0

    def last(self) -> dict[str, int]:
        """instrument -> the last seq received."""
        return {k: v[-1] for k, v in self.seqs.items() if v}

    async def run(self) -> None:
        """Connect, subscribe (resuming after the first time), read; move on when the server goes."""
        while True:
            url = self.urls[self.at % len(self.urls)]
            try:
                async with connect(f"{url}?token={self.token}", max_size=None, open_timeout=5) as ws:
                    self.connects.append((time.monotonic(), url))
                    since = self.last()
                    req: dict[str, Any] = {"op": "subscribe", "instruments": self.instruments}
                    if since:
                        req["since"] = since
                    await ws.send(json.dumps(req))
                    async for raw in ws:
                        self.take(json.loads(raw))
            except (TimeoutError, ConnectionClosed, InvalidHandshake, InvalidStatus, OSError) as exc:
                self.errors.append(f"{url}: {type(exc).__name__}")
            self.at += 1
            await asyncio.sleep(0.05)

    def take(self, msg: dict[str, Any]) -> None:
        """Keep one server frame."""
        kind = msg.get("type")
        now = time.monotonic()
        if kind == "ticks":
            for t in msg["ticks"]:
                self.seqs.setdefault(t["instrument"], []).append(t["seq"])
                self.times.setdefault(t["instrument"], []).append(now)
        elif kind == "gap":
            self.gaps.append((now, msg))
        elif kind == "subscribed" and "recovered" in msg:
            self.resumes.append(msg["recovered"])

    def ticks_after(self, when: float) -> dict[str, int]:
        """instrument -> ticks received after monotonic ``when``."""
        return {k: sum(1 for t in v if t > when) for k, v in self.times.items()}

    def holes_and_duplicates(self) -> tuple[int, int]:
        """Seqs skipped and seqs received twice, over every instrument."""
        holes = dups = 0
        for seqs in self.seqs.values():
            seen: set[int] = set()
            prev: int | None = None
            for s in seqs:
                if s in seen:
                    dups += 1
                    continue
                seen.add(s)
                if prev is not None and s > prev + 1:
                    holes += s - prev - 1
                prev = max(prev or s, s)
        return holes, dups


async def run_clients(clients: list[FleetClient]) -> list[asyncio.Task[None]]:
    """Start every client; return their tasks (cancel them to stop)."""
    return [asyncio.create_task(c.run(), name=c.name) for c in clients]


async def stop_clients(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the clients' tasks and wait for them."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
