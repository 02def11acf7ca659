"""
Subscribing without a hole, and resumable subscriptions (``"since": {"NSE:RELIANCE": 41}``).

Every subscribe registers the client for live ticks at once and holds them
behind the answer and the snapshot (read meanwhile), so that no tick is lost
between the two. For each instrument named in ``since`` that the client was not subscribed to,
the client gets the stored ticks numbered after that ``seq``, then the live
ones, each ``seq`` once and none missing in between:

1. a :class:`~mdgate._serve.fanout.Barrier` is queued in the client's outbox
   and the client is registered for live ticks at once; live ticks (and any
   other frame) queue behind the barrier;
2. ``upto``, the instrument's last number given at that moment, splits the
   two: every live tick queued behind the barrier is numbered above it;
3. once the store holds every tick numbered so far (:meth:`settled`), the
   ticks ``since < seq <= upto`` are read from it, and sent at the barrier
   after the ``subscribed`` answer, paced by the client's byte budget;
4. the barrier is released: the live ticks follow.

The answer says per instrument ``recovered: true`` when the replay reaches
back to ``since + 1``, else ``false`` and ``from_seq``: the first number that
follows (the history was trimmed, the store is down or reached its limit, or
the client saw numbers this gateway's history does not have). See
docs/client-protocol.md#resuming-after-a-disconnect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import structlog

from mdgate._model import Tick, encode, parse_instrument
from mdgate._serve.fanout import ClientOutbox, Fanout, Shared, ticks_frame

if TYPE_CHECKING:
    from mdgate._serve.fanout import Barrier

__all__ = ["SETTLE_TIMEOUT", "ResumeSource", "parse_since", "resume"]

log = structlog.get_logger(__name__)

#: Seconds a resume waits for the store to hold every tick numbered so far.
SETTLE_TIMEOUT: Final = 5.0
#: Seconds between two looks at a client's outbox while a replay waits for room.
_ROOM_POLL: Final = 0.005


class _SeqStore(Protocol):
    async def ticks_after(
        self, instrument: str, after: int, upto: int, limit: int,
    ) -> tuple[list[Tick], bool]: ...

    async def settled(self, timeout: float) -> bool: ...


class ResumeSource:
    """
    Where a resume reads: the gateway's last numbers and the store's ticks by number.

    Args:
        last_seq: instrument -> the last ``seq`` given (None: none yet).
        store: the tick store; one without ``ticks_after`` and ``settled`` cannot replay.
    """

    def __init__(self, last_seq: Callable[[str], int | None], store: object) -> None:
        self.last_seq = last_seq
        able = all(callable(getattr(store, m, None)) for m in ("ticks_after", "settled"))
        self.store: _SeqStore | None = store if able else None  # type: ignore[assignment]


def parse_since(value: object) -> dict[str, int] | str:
    """Return ``since`` as ``{INSTRUMENT: seq}``, or why it is not one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return "since must be an object: instrument -> the last seq seen"
    out: dict[str, int] = {}
    for key, seq in value.items():
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            return f"since: the seq of {str(key)[:64]!r} must be a non-negative integer"
        try:
            name, _, _ = parse_instrument(key)
        except Exception:
            continue  # a bad name is reported by the instruments check (or was not asked for)
        out[name] = seq
    return out


async def resume(
    source: ResumeSource, fanout: Fanout, outbox: ClientOutbox, wanted: frozenset[str], good: list[str],
    since: Mapping[str, int], errors: bytes | None,
    snapshot: Callable[[Sequence[str]], Awaitable[Shared]], limit: int,
) -> None:
    """
    Register ``outbox`` for ``wanted`` and answer a subscribe of ``good`` whose
    ``since`` names instruments to resume (see the module's docstring).

    Args:
        errors: the request's refusal frame, if any (sent after the answer).
        wanted: every instrument the client receives from now on (this request's included).
        snapshot: the ``snapshot`` frame of the instruments not resumed (sent after the answer;
            :meth:`~mdgate._serve.snapshots.SnapshotFrames.frame`).
        limit: ticks replayed at most for the whole request (the newest of each kept).
    """
    barrier = outbox.hold()
    upto = {name: source.last_seq(name) or 0 for name in since}
    fanout.set_instruments(outbox, wanted)  # live ticks from here on, behind the barrier
    try:
        recovered, from_seq, replay = await _read(source, since, upto, limit) if since else ({}, {}, [])
        answer: dict[str, Any] = {"type": "subscribed", "instruments": good}
        if since:
            answer["recovered"] = recovered
        if from_seq:
            answer["from_seq"] = from_seq
        outbox.pass_through(barrier, [encode(answer)])
        if errors is not None:
            outbox.pass_through(barrier, [errors])
        plain = [n for n in good if n not in since]
        if plain:
            outbox.pass_through(barrier, [await snapshot(plain)])
        await _send(outbox, barrier, replay)
    finally:
        outbox.release(barrier)


async def _read(source: ResumeSource, since: Mapping[str, int], upto: Mapping[str, int], limit: int,
                ) -> tuple[dict[str, bool], dict[str, int], list[list[Tick]]]:
    store = source.store
    settled = False
    if store is not None:
        try:
            settled = await store.settled(SETTLE_TIMEOUT)
        except Exception as exc:  # a store plugin's fault: no replay, said so
            log.warning("resume_store_failed", error=repr(exc)[:200])
    recovered: dict[str, bool] = {}
    from_seq: dict[str, int] = {}
    replay: list[list[Tick]] = []
    left = limit
    for name, after in since.items():
        last = upto[name]
        ticks: list[Tick] = []
        complete = after == last  # nothing missed
        if store is not None and after < last and left > 0:
            try:
                ticks, complete = await store.ticks_after(name, after, last, left)
            except Exception as exc:  # Redis down (StoreUnavailable) or a plugin's fault
                log.warning("resume_read_failed", instrument=name, error=repr(exc)[:200])
                ticks, complete = [], False
        left -= len(ticks)
        recovered[name] = ok = (complete and settled) or (after == last)
        if not ok:
            from_seq[name] = (ticks[0].seq or last + 1) if ticks else last + 1
            log.info("resume_not_recovered", instrument=name, since=after, last=last, replayed=len(ticks),
                     history_complete=complete, store_settled=settled, from_seq=from_seq[name])
        if ticks:
            replay.append(ticks)
    return recovered, from_seq, replay


async def _send(outbox: ClientOutbox, barrier: Barrier, replay: list[list[Tick]]) -> None:
    """Pass the replay through ``barrier`` in frames of at most a quarter of the client's budget."""
    quarter = outbox.budget // 4
    for ticks in replay:
        i, n = 0, outbox.max_per_frame
        while i < len(ticks):
            frame = ticks_frame(ticks[i:i + n])
            if len(frame) > quarter and n > 1:
                n //= 2  # a frame must fit the budget with room to spare
                continue
            # paced by the client's drain (what waits behind the barrier cannot drain yet)
            while barrier.nbytes + outbox.in_flight > 2 * quarter and not outbox.over_budget:
                await anyio.sleep(_ROOM_POLL)
            if outbox.over_budget:
                return
            outbox.pass_through(barrier, [frame])
            i += n
