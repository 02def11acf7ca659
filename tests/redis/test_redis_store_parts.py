"""
The Redis store's facade over its parts (writer, reader, feed): what
:class:`RedisStore` hands each part and reads back from it. No server runs:
the URL points at a closed port, so the store stays ``down``.
"""

from __future__ import annotations

from typing import Any

import anyio
from structlog.testing import capture_logs

from mdgate._config import RedisSettings, RuntimeSettings
from mdgate._model import Tick
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.plugins.stores.redis_store._url import RedisUrl
from mdgate.testing.redis import free_port

BASE = 1_700_000_040_000


def tick(ts: int = BASE, price: float = 100.0) -> Tick:
    return Tick("NSE:RELIANCE", price, ts, ts + 1, "DHAN")


def down_store(**settings: Any) -> RedisStore:
    url = f"redis://127.0.0.1:{free_port()}/0"
    return RedisStore(url, RedisSettings(**settings), RuntimeSettings(shutdown_timeout=1.5))


async def test_store_counters_are_the_writers_and_match_status() -> None:
    store = down_store(buffer_max=100, bars=False)
    store.write([tick(BASE + i) for i in range(250)])
    s = store.status()
    assert (s["buffered"], s["dropped"]) == (100, 150)
    assert (store.dropped, store.written, store.batches, store.failures) == (150, 0, 0, 0)
    assert (store.duplicates, store.bars_written, store.bars_dropped) == (0, 0, 0)
    with anyio.fail_after(5):
        await store.aclose()  # Redis unreachable: gives up after its deadline, counts failures
    assert store.failures == store.status()["failures"] > 0


async def test_store_latest_while_down_answers_locally_without_asking_redis() -> None:
    store = down_store()
    store.write([tick(BASE + 5, 101.0), tick(BASE, 99.0)])  # the older one does not win
    with capture_logs() as logs, anyio.fail_after(5):
        got = await store.latest(["NSE:RELIANCE", "NSE:NONE"])
    assert got == {"NSE:RELIANCE": tick(BASE + 5, 101.0)}
    assert [e["event"] for e in logs] == []  # no failed Redis read was attempted
    await store.aclose()


def test_url_clean_masks_password_and_url_in_error_text() -> None:
    url = RedisUrl("redis://:s3cret-pw@127.0.0.1:6390/0")
    text = url.clean("cannot reach redis://:s3cret-pw@127.0.0.1:6390/0 (auth s3cret-pw)")
    assert text == "cannot reach redis://:***@127.0.0.1:6390/0 (auth ***)"
    assert url.masked == "redis://:***@127.0.0.1:6390/0"
    assert RedisUrl("redis://127.0.0.1:6390/0").clean("plain error") == "plain error"
