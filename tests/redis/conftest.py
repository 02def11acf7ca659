"""
Fixtures for the Redis store tests: a throw-away ``redis-server`` per test
(:class:`mdgate.testing.redis.RedisServer`), which tests may kill and restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from mdgate.testing.redis import RedisServer, free_port

__all__ = ["RedisFactory", "RedisServer", "free_port"]

RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Create (not start) throw-away servers: ``make(port=None, extra=())``."""
    made: list[RedisServer] = []

    def make(port: int | None = None, extra: Sequence[str] = ()) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(made)}", port, extra)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def redis_server(redis_factory: RedisFactory) -> RedisServer:
    """A running throw-away redis-server (no persistence)."""
    server = redis_factory()
    server.start()
    return server
