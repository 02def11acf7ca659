"""
Reads by sequence number: the last ``seq`` of instruments, and the ticks after a ``seq``.

An instrument's stream holds its ticks in the order the gateway numbered them
(stream IDs and ``seq`` both grow with every tick), so the newest entries are
read backwards from the end until the wanted number is passed. Entries written
before numbering existed have no ``seq`` and count as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, cast

import msgspec
from redis.exceptions import RedisError

from mdgate._errors import StoreUnavailable
from mdgate._model import Tick
from mdgate.plugins.stores.redis_store._codec import decode_tick_fields, ticks_key
from mdgate.plugins.stores.redis_store._url import RedisUrl

__all__ = ["PAGE", "last_seqs", "ticks_after"]

#: Entries read per ``XREVRANGE`` while walking back.
PAGE: Final = 1000

_Rows = list[tuple[str, dict[str, str]]]


def _seq(fields: dict[str, str]) -> int:
    try:
        return int(fields.get("seq") or 0)
    except ValueError:
        return 0


async def last_seqs(redis: Any, url: RedisUrl, instruments: Sequence[str]) -> dict[str, int]:
    """
    Return the ``seq`` of each instrument's newest stored tick (absent: nothing stored).

    Raises:
        StoreUnavailable: when Redis cannot be read.
    """
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for inst in instruments:
                pipe.xrevrange(ticks_key(inst), "+", "-", count=1)
            rows = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {url.clean(str(exc))}") from exc
    out: dict[str, int] = {}
    for inst, found in zip(instruments, rows, strict=True):
        if found:
            out[inst] = _seq(found[0][1])
    return out


async def ticks_after(
    redis: Any, url: RedisUrl, instrument: str, after: int, upto: int, limit: int,
) -> tuple[list[Tick], bool]:
    """
    Return the stored ticks with ``after < seq <= upto``, oldest first, and whether
    they reach back to ``after + 1`` (at most the newest ``limit`` are returned;
    when more are needed the answer is ``False``).

    Raises:
        StoreUnavailable: when Redis cannot be read.
    """
    if upto <= after:
        return [], True
    key = ticks_key(instrument)
    out: list[Tick] = []
    hi = "+"
    reached = False
    while not reached and len(out) < limit:
        try:
            rows = cast("_Rows", await redis.xrevrange(key, hi, "-", count=min(PAGE, limit + 64)))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {url.clean(str(exc))}") from exc
        if not rows:
            break
        for _id, fields in rows:
            seq = _seq(fields)
            if seq > upto:
                continue  # stored after the client's live ticks began
            if seq <= after:
                reached = True
                break
            try:
                out.append(decode_tick_fields(fields))
            except msgspec.ValidationError:
                continue  # a damaged entry: the client sees its number skipped
            if len(out) == limit:
                break
        hi = "(" + rows[-1][0]
    out.reverse()
    complete = reached or (bool(out) and out[0].seq == after + 1)
    return out, complete
