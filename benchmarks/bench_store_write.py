"""
The Redis store's ``write`` on its own: the part of the ingest path that runs in the
pipeline for every batch (buffer, bars, latest ticks). No Redis is contacted:
``write`` only buffers, and the background flush is not started.

Usage: ``.venv/bin/python benchmarks/bench_store_write.py [--batches 1000] [--repeat 25]``.

It also runs against an earlier tree (``PYTHONPATH=<worktree>/src``), whose module
paths may differ, so that before and after can be compared in turn.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any


def _writer() -> tuple[Any, Any]:
    """A BatchWriter (bars on) and the Tick class, from this tree or an older layout."""
    try:
        from mdgate._config import RedisSettings, RuntimeSettings
        from mdgate._latest import LatestTicks
        from mdgate._model import Tick
        from mdgate.plugins.stores.redis_store._url import RedisUrl
        from mdgate.plugins.stores.redis_store._writer import BatchWriter

        latest: Any = LatestTicks()
    except ImportError:  # the layout before the issue-11 redesign
        from mdgate.config import RedisSettings, RuntimeSettings  # type: ignore[no-redef, import-not-found, unused-ignore]
        from mdgate.model import Tick  # type: ignore[no-redef, import-not-found, unused-ignore]
        from mdgate.plugins.redis_store._url import RedisUrl  # type: ignore[no-redef, import-not-found, unused-ignore]
        from mdgate.plugins.redis_store._writer import BatchWriter  # type: ignore[no-redef, import-not-found, unused-ignore]

        latest = {}
    url = RedisUrl("redis://127.0.0.1:1")  # never connected: write() only buffers
    writer = BatchWriter(url, RedisSettings(buffer_max=10**9), RuntimeSettings(), latest)
    return writer, Tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=1000, help="batches per timed run")
    parser.add_argument("--repeat", type=int, default=25, help="timed runs; the best is reported")
    args = parser.parse_args()
    writer, tick = _writer()
    now = 1_700_000_000_000
    batch = [tick(instrument=f"NSE:S{i % 200}", provider="DHAN", ts=now + i, recv_ts=now + i,
                  price=100.0 + i % 7, volume=i) for i in range(100)]
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            writer.write(batch)
        best = min(best, (time.perf_counter() - t0) / args.batches / len(batch))
        writer._buf.clear()  # a benchmark may reach in: keep the buffer from growing without bound
    print(f"Python {platform.python_version()}: Redis store write, 100-tick batches, bars on: "
          f"{best * 1e9:.0f} ns/tick (best of {args.repeat} x {args.batches} batches)")


if __name__ == "__main__":
    main()
