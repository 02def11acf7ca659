"""
Delivered ticks per second with one and with two fan-out instances (``mdgate run --role fanout``).

A throw-away ``redis-server`` and PostgreSQL (``mdgate db upgrade``); a producer in this
process stores numbered ticks of ``--instruments`` instruments through the Redis store
(``RedisStore.write``: instrument streams plus the shared feed, as an ingest instance does),
paced at ``--rate`` ticks/s; the fan-out instances follow the feed; ``--clients`` WebSocket
clients (split evenly over the instances, each in its own process group of clients) subscribe
to every instrument and count what they receive. For each configuration it reports:

* delivered ticks/s: ticks received by all clients per second (steady state, ``--seconds``);
* the fan-out instances' CPU seconds per million delivered ticks (``/proc/PID/stat``);
* the p50/p99 age of a tick on arrival (client clock minus the tick's ``recv_ts``, one host).

``--redis cluster`` runs it on a Redis Cluster (3 primaries + 3 replicas on loopback).

Usage::

    .venv/bin/python benchmarks/bench_fleet.py                     # 1 and 2 fan-out instances
    .venv/bin/python benchmarks/bench_fleet.py --rate 20000 --clients 20 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chaos_procs import MDGATE, GatewayProcess, status
from websockets.asyncio.client import connect

from mdgate._config import RedisSettings
from mdgate._model import Tick, now_ms
from mdgate._seq import SeqBook
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.testing.postgres import free_port, init_pristine, new_server
from mdgate.testing.redis import RedisServer
from mdgate.testing.redis_cluster import RedisClusterNodes

TICKS_HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_HZ


def config(port: int, redis_url: str, dsn: str, token: str, name: str) -> str:
    return "\n".join([
        "[server]", 'host = "127.0.0.1"', f"port = {port}", f"tokens = [{json.dumps(token)}]",
        "max_instruments_per_client = 10000", "", "[redis]", f'url = "{redis_url}"', "",
        "[database]", f'url = "{dsn}"', "", "[fleet]", f'instance = "{name}"', "",
        "[logging]", 'level = "warning"', 'format = "json"', "", "[backfill]", "enabled = false", "",
    ])


class Counter:
    def __init__(self) -> None:
        self.ticks = 0
        self.ages: list[int] = []
        self.counting = False


async def client(url: str, instruments: list[str], counter: Counter) -> None:
    decode = msgspec.json.Decoder().decode
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "instruments": instruments}))
        async for raw in ws:
            msg = decode(raw)
            if msg.get("type") == "ticks" and counter.counting:
                ticks = msg["ticks"]
                counter.ticks += len(ticks)
                if len(counter.ages) < 200_000:
                    now = now_ms()
                    counter.ages.append(now - ticks[-1]["recv_ts"])


async def produce(store: RedisStore, names: list[str], rate: float, stop: asyncio.Event) -> int:
    book = SeqBook()
    sent, t0, batch = 0, time.monotonic(), max(1, int(rate / 200))
    while not stop.is_set():
        now = now_ms()
        ticks = [Tick(names[(sent + i) % len(names)], 100.0 + (sent + i) % 50, now, now, "BENCH", size=1)
                 for i in range(batch)]
        store.write(book.stamp(ticks))
        sent += batch
        ahead = t0 + sent / rate - time.monotonic()
        await asyncio.sleep(max(0.0, ahead))
    return sent


async def run_config(
    fanouts: int, opts: argparse.Namespace, redis_url: str, dsn: str, tmp: Path,
) -> dict[str, Any]:
    token = secrets.token_hex(8)
    names = [f"NASDAQ:B{i:04d}" for i in range(opts.instruments)]
    procs: list[GatewayProcess] = []
    ports: list[int] = []
    for i in range(fanouts):
        port = free_port()
        name = f"fanout{fanouts}-{i}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MDGATE_")}
        env["MDGATE_LOAD_PLUGINS"] = "yahoo"  # routes NASDAQ (a fan-out instance opens no connection)
        p = GatewayProcess(config(port, redis_url, dsn, token, name), tmp, env, name=name,
                           args=("--role", "fanout"))
        p.start()
        procs.append(p)
        ports.append(port)
    store = RedisStore(redis_url, RedisSettings(batch_max=2000))
    stop = asyncio.Event()
    counters = [Counter() for _ in range(opts.clients)]
    try:
        for port in ports:
            for _ in range(100):
                try:
                    await status(port, token)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
        store_task = asyncio.create_task(store.run())
        urls = [f"ws://127.0.0.1:{port}/ws?token={token}" for port in ports]
        tasks = [asyncio.create_task(client(urls[i % fanouts], names, c)) for i, c in enumerate(counters)]
        producer = asyncio.create_task(produce(store, names, opts.rate, stop))
        await asyncio.sleep(opts.warmup)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        produced0 = store.written
        for c in counters:
            c.counting = True
        t0 = time.monotonic()
        await asyncio.sleep(opts.seconds)
        for c in counters:
            c.counting = False
        elapsed = time.monotonic() - t0
        cpu = sum(cpu_seconds(p.pid) - c0 for p, c0 in zip(procs, cpu0, strict=True))
        produced_window = store.written - produced0
        stop.set()
        produced = await producer
        for t in tasks:
            t.cancel()
        store_task.cancel()
    finally:
        await store.aclose()
        for p in procs:
            p.stop(10)
    delivered = sum(c.ticks for c in counters)
    ages = sorted(a for c in counters for a in c.ages)
    return {
        "redis": opts.redis, "fanout_instances": fanouts, "clients": opts.clients,
        "instruments": opts.instruments, "rate": opts.rate, "produced": produced,
        "delivered_per_s": round(delivered / elapsed),
        "expected_per_s": round(opts.rate * opts.clients),
        "feed_per_s": round(produced_window / elapsed),
        "fanout_cpu_share": round(cpu / elapsed, 3),
        "fanout_cpu_us_per_delivered": round(cpu / delivered * 1e6, 2) if delivered else None,
        "age_p50_ms": ages[len(ages) // 2] if ages else None,
        "age_p99_ms": ages[int(len(ages) * 0.99)] if ages else None,
    }


async def main_async(opts: argparse.Namespace) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="mdgate-bench-fleet-"))
    redis: Any = RedisClusterNodes(tmp / "redis") if opts.redis == "cluster" else RedisServer(tmp / "redis")
    pristine = init_pristine()
    pg = new_server(pristine)
    try:
        redis.start()
        dsn = pg.create_database()
        cfg = tmp / "db.toml"
        cfg.write_text(f'[database]\nurl = "{dsn}"\n')
        for step in ("upgrade", "seed"):
            await asyncio.to_thread(subprocess.run, [MDGATE, "--config", str(cfg), "db", step],
                                    check=True, capture_output=True)
        out = []
        for n in opts.fanouts:
            result = await run_config(n, opts, redis.url, dsn, tmp)
            print(json.dumps(result), flush=True)
            out.append(result)
        return out
    finally:
        redis.stop()
        pg.stop()
        pg.remove()
        pristine.remove()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench_fleet.py")
    p.add_argument("--rate", type=float, default=5000.0, help="ticks/s stored by the producer")
    p.add_argument("--instruments", type=int, default=100)
    p.add_argument("--clients", type=int, default=20, help="clients in all, split over the instances")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per configuration")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--fanouts", type=int, nargs="+", default=[1, 2])
    p.add_argument("--redis", choices=["single", "cluster"], default="single",
                   help="one redis-server, or a Redis Cluster of 3 primaries + 3 replicas")
    opts = p.parse_args(argv)
    asyncio.run(main_async(opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
