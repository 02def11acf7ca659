"""
The Redis store end to end on one redis-server and on a Redis Cluster: ticks/s stored and this
process's CPU per tick.

``RedisStore.write`` from the event loop (numbered ticks of ``--instruments`` instruments, as
the pipeline hands them), the background flush, until every tick is acknowledged
(``settled``). On a single Redis one ``EVALSHA`` per batch; on the cluster (3 primaries + 3
replicas on loopback, started here) one script call per hash slot pipelined per node, each
node's writes followed by ``WAIT 1``, then the feed partitions: the price of the cluster's
guarantees. Best of ``--rounds``.

Usage: ``.venv/bin/python benchmarks/bench_cluster_store.py [--ticks 200000] [--instruments 100]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from mdgate._config import RedisSettings
from mdgate._model import Tick
from mdgate._seq import SeqBook
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.testing.redis import RedisServer
from mdgate.testing.redis_cluster import RedisClusterNodes

T0 = 1_733_300_000_000


async def one_round(url: str, ticks: int, instruments: int, chunk: int = 500) -> tuple[float, float]:
    """(ticks/s, CPU µs per tick) of one store writing ``ticks`` ticks and waiting until they are stored."""
    names = [f"NSE:C{i:04d}" for i in range(instruments)]
    book = SeqBook()
    def tick(n: int) -> Tick:
        return Tick(names[n % instruments], 100.0 + n % 7, T0 + n, T0 + n, "BENCH", size=1)

    batches = [book.stamp([tick(b + i) for i in range(chunk)]) for b in range(0, ticks, chunk)]
    store = RedisStore(url, RedisSettings(stream_maxlen=1_000_000, feed_maxlen=1_000_000))
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.write([Tick("NSE:WARM", 1.0, T0, T0, "BENCH", seq=1)])  # connect, learn the mode
        await store.settled(30)
        w0, c0 = time.perf_counter(), time.process_time()
        for batch in batches:
            store.write(batch)
            await anyio.lowlevel.checkpoint()
        ok = await store.settled(120)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        tg.cancel_scope.cancel()
    await store.aclose()
    assert ok, "not every tick was stored in time"
    return ticks / wall, cpu / ticks * 1e6


async def main_async(opts: argparse.Namespace) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="mdgate-bench-cluster-"))
    out = []
    for kind in ("single", "cluster"):
        server: Any = RedisServer(tmp / kind) if kind == "single" else RedisClusterNodes(tmp / kind)
        server.start()
        try:
            runs = [await one_round(server.url, opts.ticks, opts.instruments) for _ in range(opts.rounds)]
        finally:
            server.stop()
        best = max(runs)
        row = {"redis": kind, "ticks": opts.ticks, "instruments": opts.instruments,
               "ticks_per_s": round(best[0]), "cpu_us_per_tick": round(min(r[1] for r in runs), 2)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench_cluster_store.py")
    p.add_argument("--ticks", type=int, default=200_000)
    p.add_argument("--instruments", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    anyio.run(main_async, p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
