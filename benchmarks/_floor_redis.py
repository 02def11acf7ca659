"""
The floor of storing ticks in Redis at a paced rate (``bench_floors.py``'s Redis rows).

One tick every ``1/rate`` seconds is handed to a store, on an asyncio loop timer (as a provider
socket read would hand it), for ``seconds``; each variant runs in a fresh process against a
throw-away ``redis-server`` and reports CPU µs per tick of the whole process:

* ``pacing``: the timer alone (the tick is dropped): what every variant pays anyway;
* ``minimal``: the least a batching client can do: the batch packed by
  :class:`~mdgate.plugins.stores.redis_store._codec.BatchPacker` and sent as one ``EVALSHA``
  every ``batch_interval`` (5 ms) over a plain asyncio stream, the reply parsed by hiredis;
* ``minimal, libraries``: the same loop on the writer's libraries: a redis-py connection
  (``send_packed_command``, ``read_response``), anyio events, ``move_on_after`` for the batch
  wait and one cancel scope whose deadline moves before each send and read;
* ``writer``: the gateway's :class:`~mdgate.plugins.stores.redis_store._writer.BatchWriter`
  (buffer, bars, latest table, retries, timeouts, counters);
* ``writer, no bars``: the same with ``[redis] bars = false`` (what building one-minute bars
  costs per tick).

``minimal`` minus ``pacing`` is the floor of the Redis step at that rate on this machine: a
wake-up of the loop for the batch timer, one for the reply, a ``send`` and a ``recv`` per batch
plus the packing. Start-up objects are frozen out of the collector first, as the gateway does.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

INSTRUMENTS = 1000
INTERVAL = 0.005


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _minimal(url: str) -> tuple[Any, Any]:
    import hiredis

    from mdgate.plugins.stores.redis_store._codec import BatchPacker
    from mdgate.plugins.stores.redis_store._lua import WRITE_BATCH

    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    parser = hiredis.Reader()

    async def reply() -> Any:
        while (got := parser.gets()) is False:
            parser.feed(await reader.read(65536))
        return got

    writer.write(hiredis.pack_command(("SCRIPT", "LOAD", WRITE_BATCH)))
    await reply()
    packer = BatchPacker(100_000, 100_000, 100_000)
    for i in range(INSTRUMENTS):
        packer.seed(f"NSE:S{i}", "0-0")
    buf: list[Any] = []
    due = asyncio.Event()
    done = {"ticks": 0}

    def write(ticks: list[Any]) -> None:
        if not buf:
            due.set()
        buf.extend(ticks)

    async def run() -> None:
        while True:
            await due.wait()
            due.clear()
            await asyncio.sleep(INTERVAL)
            batch = buf[:]
            buf.clear()
            writer.write(packer.pack(batch))
            await reply()
            done["ticks"] += len(batch)

    return write, (run, done)


async def _minimal_libraries(url: str) -> tuple[Any, Any]:
    """``_minimal`` on the writer's libraries: a redis-py connection, anyio events and deadlines."""
    import anyio
    from redis.asyncio import ConnectionPool

    from mdgate.plugins.stores.redis_store._codec import BatchPacker
    from mdgate.plugins.stores.redis_store._lua import WRITE_BATCH

    conn = ConnectionPool.from_url(url, socket_timeout=None).make_connection()  # type: ignore[no-untyped-call]
    await conn.connect()
    await conn.send_packed_command(conn.pack_command("SCRIPT", "LOAD", WRITE_BATCH), check_health=False)
    await conn.read_response()
    packer = BatchPacker(100_000, 100_000, 100_000)
    for i in range(INSTRUMENTS):
        packer.seed(f"NSE:S{i}", "0-0")
    buf: list[Any] = []
    state = {"due": anyio.Event(), "ticks": 0}

    def write(ticks: list[Any]) -> None:
        if not buf:
            state["due"].set()
        buf.extend(ticks)

    async def run() -> None:
        scope = anyio.CancelScope()
        while True:
            await state["due"].wait()
            state["due"] = anyio.Event()
            with anyio.move_on_after(INTERVAL):  # the writer's batch wait: its wake event or the interval
                await state["due"].wait()
            batch = buf[:]
            buf.clear()
            with scope:  # one scope, its deadline moved before the send and the read
                scope.deadline = anyio.current_time() + 10
                await conn.send_packed_command(packer.pack(batch), check_health=False)
                scope.deadline = anyio.current_time() + 10
                await conn.read_response()
            state["ticks"] += len(batch)

    return write, (run, state)


async def _main(mode: str, url: str, rate: float, seconds: float) -> float:
    from mdgate._config import RedisSettings, RuntimeSettings
    from mdgate._latest import LatestTicks
    from mdgate._model import Tick
    from mdgate.plugins.stores.redis_store._url import RedisUrl
    from mdgate.plugins.stores.redis_store._writer import BatchWriter

    loop = asyncio.get_running_loop()
    n = int(rate * seconds)
    now = int(time.time() * 1000)
    ticks = [Tick(f"NSE:S{i % INSTRUMENTS}", 100.0 + i % 7, now, now, "DHAN", volume=i) for i in range(n)]
    warm = [Tick(f"NSE:S{i}", 100.0, now, now, "DHAN") for i in range(INSTRUMENTS)]
    tasks: list[asyncio.Task[Any]] = []
    stored: Any
    if mode.startswith("writer"):
        settings = RedisSettings(bars=mode == "writer")
        w = BatchWriter(RedisUrl(url), settings, RuntimeSettings(), LatestTicks())
        tasks.append(asyncio.ensure_future(w.run()))
        write = w.write
        stored = lambda: w.settled_ticks  # noqa: E731
        total = n + len(warm)
    elif mode == "minimal":
        write, (run, done) = await _minimal(url)
        tasks.append(asyncio.ensure_future(run()))
        stored = lambda: done["ticks"]  # noqa: E731
        total = n + len(warm)
    elif mode == "minimal, libraries":
        write, (run, held) = await _minimal_libraries(url)
        tasks.append(asyncio.ensure_future(run()))
        stored = lambda: held["ticks"]  # noqa: E731
        total = n + len(warm)
    else:
        write = lambda ticks: None  # noqa: E731
        stored = lambda: 0  # noqa: E731
        total = 0
    write(warm)  # every instrument seen once (the writer seeds their IDs) before measuring
    await asyncio.sleep(0.5)
    gc.collect()
    gc.freeze()
    finished = loop.create_future()
    sent = 0
    t0 = loop.time()
    c0 = _cpu()

    def tick() -> None:
        nonlocal sent
        write(ticks[sent:sent + 1])
        sent += 1
        if sent == n:
            finished.set_result(None)
        else:
            loop.call_at(t0 + sent / rate, tick)

    loop.call_soon(tick)
    await finished
    while stored() < total:
        await asyncio.sleep(INTERVAL)
    spent = _cpu() - c0
    for t in tasks:
        t.cancel()
    return spent / n * 1e6


def _child(mode: str, url: str, rate: float, seconds: float, out: Any) -> None:
    import logging

    logging.disable(logging.INFO)
    out.put(asyncio.run(_main(mode, url, rate, seconds)))


def paced_store(rate: float = 10_000, seconds: float = 4.0, rounds: int = 3) -> dict[str, float]:
    """CPU µs per tick of each variant (median of ``rounds``, the variants in turn)."""
    from mdgate.testing.redis import RedisServer

    results: dict[str, list[float]] = {"pacing": [], "minimal": [], "minimal, libraries": [], "writer": [],
                                       "writer, no bars": []}
    with tempfile.TemporaryDirectory(prefix="mdgate-floor-redis-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            ctx = multiprocessing.get_context("spawn")
            for _ in range(rounds):
                for mode in results:
                    q = ctx.Queue()
                    p = ctx.Process(target=_child, args=(mode, server.url, rate, seconds, q))
                    p.start()
                    results[mode].append(q.get(timeout=seconds * 10 + 30))
                    p.join()
        finally:
            server.stop()
    return {mode: sorted(v)[len(v) // 2] for mode, v in results.items()}
