"""
A naive gateway in the style of the original system, for comparison.

Small and honest, not a strawman: it uses the same libraries as mdgate
(websockets, redis-py asyncio with hiredis, protobuf upb) and decodes only
what a tick needs, but it does everything *per tick*, awaited, as the
original did:

* decode each provider frame into a dict (Yahoo: JSON envelope, base64,
  ``PricingData.ParseFromString``; Dhan: ``struct.unpack`` of the Quote packet);
* ``await redis.xadd(...)`` then ``await redis.hset(...)`` for the tick;
* for every client subscribed to the instrument, ``json.dumps`` the tick and
  ``await ws.send(...)`` (frames ``{"type": "ticks", "ticks": [tick]}``, so the
  same measuring clients read it).

Usage: ``python benchmarks/_e2e_naive.py --port P --redis URL --yahoo URL
--yahoo-symbols A,B --dhan URL --dhan-codes NSE_EQ:1,... --names ...`` (names:
``code=INSTRUMENT`` pairs). Prints ``READY`` once both feeds are subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
import sys
import time
from typing import Any, cast

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from mdgate_yahoo.pricing_pb2 import PricingData

_QUOTE = struct.Struct("<BHBIfHIfIIIffff")
_SEGMENTS = {1: "NSE_EQ", 4: "BSE_EQ"}
_IST = 19_800


class Naive:
    """Provider sockets -> per-tick Redis writes -> per-client sends."""

    def __init__(self, redis_url: str, names: dict[str, str]) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.names = names
        self.clients: dict[str, set[ServerConnection]] = {}
        self.ticks = 0

    async def publish(self, tick: dict[str, Any]) -> None:
        inst: str = tick["instrument"]
        fields = cast("dict[FieldT, EncodableT]", tick)
        await self.redis.xadd(f"naive:{{{inst}}}:ticks", fields, maxlen=100_000, approximate=True)
        await self.redis.hset(f"naive:{{{inst}}}:last", mapping=fields)
        self.ticks += 1
        for ws in list(self.clients.get(inst, ())):
            try:
                await ws.send(json.dumps({"type": "ticks", "ticks": [tick]}))
            except Exception:
                self.clients[inst].discard(ws)

    async def yahoo(self, url: str, symbols: list[str], ready: asyncio.Event) -> None:
        msg = PricingData()
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"subscribe": symbols}))
            ready.set()
            async for frame in ws:
                env = json.loads(frame)
                msg.ParseFromString(base64.b64decode(env["message"]))
                inst = self.names.get(msg.id)
                if inst is None:
                    continue
                await self.publish({
                    "instrument": inst, "price": round(msg.price, 2), "size": msg.last_size,
                    "volume": msg.day_volume, "ts": msg.time, "recv_ts": time.time_ns() // 1_000_000,
                    "provider": "YF",
                })

    async def dhan(self, url: str, codes: list[str], ready: asyncio.Event) -> None:
        full = f"{url}?version=2&token=test-token&clientId=1000000001&authType=2"
        async with connect(full, max_size=None) as ws:
            for i in range(0, len(codes), 100):
                batch = codes[i:i + 100]
                await ws.send(json.dumps({
                    "RequestCode": 17, "InstrumentCount": len(batch),
                    "InstrumentList": [{"ExchangeSegment": c.split(":")[0], "SecurityId": c.split(":")[1]}
                                       for c in batch],
                }))
            ready.set()
            async for frame in ws:
                if not isinstance(frame, bytes) or len(frame) < 50 or frame[0] != 4:
                    continue
                (_, _, seg, sid, ltp, ltq, ltt, _, volume, *_rest) = _QUOTE.unpack_from(frame)
                inst = self.names.get(f"{_SEGMENTS.get(seg, seg)}:{sid}")
                if inst is None:
                    continue
                await self.publish({
                    "instrument": inst, "price": round(ltp, 2), "size": ltq, "volume": volume,
                    "ts": (ltt - _IST) * 1000, "recv_ts": time.time_ns() // 1_000_000,
                    "provider": "DHAN",
                })

    async def handle(self, ws: ServerConnection) -> None:
        mine: list[str] = []
        try:
            async for message in ws:
                req = json.loads(message)
                if req.get("op") == "subscribe":
                    mine = [str(i).upper() for i in req["instruments"]]
                    await ws.send(json.dumps({"type": "subscribed", "instruments": mine}))
                    await ws.send(json.dumps({"type": "snapshot", "ticks": []}))
                    for inst in mine:
                        self.clients.setdefault(inst, set()).add(ws)
        finally:
            for inst in mine:
                self.clients.get(inst, set()).discard(ws)


async def _main(args: argparse.Namespace) -> None:
    names = dict(pair.split("=", 1) for pair in args.names.split(","))
    naive = Naive(args.redis, names)
    y_ready, d_ready = asyncio.Event(), asyncio.Event()
    async with serve(naive.handle, "127.0.0.1", args.port, compression=None):
        tasks = [asyncio.create_task(naive.yahoo(args.yahoo, args.yahoo_symbols.split(","), y_ready)),
                 asyncio.create_task(naive.dhan(args.dhan, args.dhan_codes.split(","), d_ready))]
        await y_ready.wait()
        await d_ready.wait()
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await asyncio.gather(*tasks)


def main() -> None:
    """Run the naive gateway until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--yahoo", required=True)
    parser.add_argument("--yahoo-symbols", required=True)
    parser.add_argument("--dhan", required=True)
    parser.add_argument("--dhan-codes", required=True)
    parser.add_argument("--names", required=True, help="code=INSTRUMENT,...")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
