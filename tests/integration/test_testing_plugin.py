"""The pytest11 plugin's fixture works for plugin authors."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect

pytestmark = pytest.mark.anyio


async def test_fake_feed_server_fixture_records_and_pushes(fake_feed_server):
    async with connect(fake_feed_server.url) as ws:
        await ws.send("hello")
        await fake_feed_server.wait_until(lambda f: f.received == ["hello"])
        await fake_feed_server.send("tick")
        assert await ws.recv() == "tick"
    assert fake_feed_server.accepted == 1
