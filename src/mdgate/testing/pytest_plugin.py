"""
pytest plugin (entry point ``pytest11``): fixtures for provider plugin authors.

* ``fake_feed_server``: a started :class:`~mdgate.testing.FakeFeedServer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mdgate.testing import FakeFeedServer


@pytest.fixture
async def fake_feed_server() -> AsyncIterator[FakeFeedServer]:
    """A real WebSocket server on 127.0.0.1 standing in for a provider."""
    async with FakeFeedServer() as server:
        yield server
