"""
A fake example feed for tests, built on :class:`mdgate.testing.FakeProviderServer`.

:class:`FakeExampleServer` speaks the example protocol over a real loopback
WebSocket: it records subscribe/unsubscribe requests (``subscribe_requests``,
``subscribed``), counts pings, and can refuse the token::

    async with FakeExampleServer() as feed:
        settings = ...  # [providers.example] url = feed.url
        await feed.wait_subscribed("ACME")
        await feed.send_tick("ACME", 101.5)
"""

from __future__ import annotations

import json
from typing import Any

from mdgate import Frame
from mdgate.testing import FakeConnection, FakeProviderServer

__all__ = ["FakeExampleServer"]


class FakeExampleServer(FakeProviderServer[FakeConnection]):
    """
    A loopback example feed.

    Attributes:
        pings: ping requests received.
        refuse_auth: answer every subscribe with an ``auth`` error (the
            decoder raises ``AuthenticationError``).
    """

    def __init__(self, port: int = 0) -> None:
        super().__init__(port=port)
        self.pings = 0
        self.refuse_auth = False

    async def on_frame(self, conn: FakeConnection, frame: Frame) -> bool:
        """Apply one request."""
        msg = json.loads(frame)
        if msg["action"] == "subscribe":
            self.record_subscribe(conn, msg["symbols"])
            if self.refuse_auth:
                await self.send(json.dumps({"error": "auth", "message": "token refused"}), conn)
        elif msg["action"] == "unsubscribe":
            self.record_unsubscribe(conn, msg["symbols"])
        elif msg["action"] == "ping":
            self.pings += 1
        return True

    async def send_tick(self, symbol: str, price: float, ts: int = 1_700_000_000_000, **extra: Any) -> int:
        """Send one tick (``q`` size, ``v`` volume in ``extra``) to every open connection; return how many."""
        return await self.send(json.dumps({"s": symbol, "p": price, "t": ts, **extra}))
