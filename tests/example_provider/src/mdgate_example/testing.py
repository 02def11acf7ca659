"""
A fake example feed for tests, built on :class:`mdgate.testing.FakeProviderServer`.

:class:`FakeExampleServer` speaks the example protocol over a real loopback
WebSocket: it records subscribe/unsubscribe requests (``subscribe_requests``,
``subscribed``), counts pings, and can refuse the token (``expire_credentials()``:
every subscribe is answered with an ``auth`` error). It inherits every
scriptable fault of the base (drop after N frames, freeze, flood, refuse
connections for a while)::

    async with FakeExampleServer() as feed:
        settings = ...  # [providers.example] url = feed.url
        await feed.wait_subscribed("ACME")
        await feed.send_tick("ACME", 101.5)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from mdgate import Frame
from mdgate.testing import FakeConnection, FakeProviderServer

__all__ = ["FakeExampleServer"]


class FakeExampleServer(FakeProviderServer[FakeConnection]):
    """
    A loopback example feed.

    Attributes:
        pings: ping requests received.
    """

    #: A frame the decoder rejects (``bad_json``).
    MALFORMED = '{"s": "ACME", "p": '

    def __init__(self, port: int = 0, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(port=port, clock=clock)
        self.pings = 0

    @property
    def refuse_auth(self) -> bool:
        """Answer every subscribe with an ``auth`` error (the same flag as ``credentials_expired``)."""
        return self.credentials_expired

    @refuse_auth.setter
    def refuse_auth(self, value: bool) -> None:
        self.credentials_expired = value

    async def on_frame(self, conn: FakeConnection, frame: Frame) -> bool:
        """Apply one request."""
        msg = json.loads(frame)
        if msg["action"] == "subscribe":
            self.record_subscribe(conn, msg["symbols"])
            if self.credentials_expired:
                await self.send(json.dumps({"error": "auth", "message": "token refused"}), conn)
        elif msg["action"] == "unsubscribe":
            self.record_unsubscribe(conn, msg["symbols"])
        elif msg["action"] == "ping":
            self.pings += 1
        return True

    async def send_tick(self, symbol: str, price: float, ts: int = 1_700_000_000_000, **extra: Any) -> int:
        """Send one tick (``q`` size, ``v`` volume in ``extra``) to every open connection; return how many."""
        return await self.send(json.dumps({"s": symbol, "p": price, "t": ts, **extra}))

    async def send_malformed(self) -> int:
        """Send a frame that is not JSON to every open connection; return how many."""
        return await self.send(self.MALFORMED)
