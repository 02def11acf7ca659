"""
What numbering and resuming cost: ``SeqBook.stamp`` per tick, and reading a resume from Redis.

* **stamp**: the pipeline numbers every tick once (``mdgate._seq.SeqBook.stamp``):
  batches of 100 ticks over 1,000 instruments, nanoseconds per tick (best of 5).
* **resume read**: a throw-away ``redis-server`` holds N ticks of one
  instrument written by the store (``RedisStore.write``); a resume reads the
  ticks after a ``seq`` (``RedisStore.ticks_after``, ``XREVRANGE`` pages of
  1,000, decoded to ticks). Ticks per second for a resume of 1,000, 10,000 and
  100,000 ticks (best of 3).

Usage: ``.venv/bin/python benchmarks/bench_resume.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import anyio

from mdgate._config import RedisSettings
from mdgate._model import Tick
from mdgate._seq import SeqBook
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.testing.redis import RedisServer

T0 = 1_700_000_000_000


def bench_stamp() -> float:
    """Nanoseconds per tick of SeqBook.stamp (best of 5 runs of 1,000,000 ticks)."""
    names = [f"NSE:S{i}" for i in range(1000)]
    batches = [[Tick(names[(b * 100 + i) % 1000], 1.0, T0, T0, "X") for i in range(100)] for b in range(100)]
    best = float("inf")
    for _ in range(5):
        book = SeqBook()
        t = time.perf_counter_ns()
        for _ in range(100):
            for batch in batches:
                book.stamp(batch)
        best = min(best, (time.perf_counter_ns() - t) / 1_000_000)
    return best


async def bench_read(url: str, sizes: list[int]) -> dict[int, float]:
    """Ticks per second of ``ticks_after`` for resumes of each size (best of 3)."""
    store = RedisStore(url, RedisSettings(batch_max=5000, stream_maxlen=1_000_000))
    book = SeqBook()
    total = max(sizes)
    out: dict[int, float] = {}
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        for start in range(0, total, 5000):
            ticks = [Tick("NSE:RELIANCE", 2885.35 + i % 7, T0 + i, T0 + i, "DHAN", size=10, volume=i)
                     for i in range(start, start + 5000)]
            store.write(book.stamp(ticks))
            await store.settled(30)
        for n in sizes:
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                got, complete = await store.ticks_after("NSE:RELIANCE", total - n, total, n)
                best = min(best, time.perf_counter() - t)
                assert complete and len(got) == n and got[0].seq == total - n + 1
            out[n] = n / best
        await store.aclose()
        tg.cancel_scope.cancel()
    return out


def main() -> None:
    """Run both and print the tables."""
    print(f"SeqBook.stamp: {bench_stamp():.0f} ns per tick (batches of 100, 1,000 instruments, best of 5)")
    with tempfile.TemporaryDirectory(prefix="mdgate-bench-resume-") as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            rates = anyio.run(bench_read, server.url, [1_000, 10_000, 100_000])
        finally:
            server.stop()
    print("| resume of | read from Redis (ticks/s) | time |")
    print("| ---: | ---: | ---: |")
    for n, rate in rates.items():
        print(f"| {n:,} | {rate:,.0f} | {n / rate * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
