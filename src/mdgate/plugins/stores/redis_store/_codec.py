"""
Pure encoding and decoding for the Redis tick store (no I/O).

* key names (the only place they are built): ``mdgate:{INSTR}:ticks``,
  ``mdgate:{INSTR}:last``, ``mdgate:{INSTR}:bars:1m`` and ``mdgate:feed``;
* :class:`BatchPacker`: turns ticks and closed bars into one packed
  ``EVALSHA`` of :data:`~mdgate.plugins.stores.redis_store._lua.WRITE_BATCH`, assigning every tick
  a strictly increasing stream ID per instrument (``<ms>-<seq>``, ``ms`` =
  the tick's ``ts``, or the previous ID's ms when ``ts`` went backwards);
* :func:`decode_tick_fields` / :func:`decode_bar_fields`: stream entries and
  hashes back to :class:`~mdgate._model.Tick` / :class:`~mdgate._model.Bar`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import hiredis
import msgspec
from msgspec.structs import astuple

from mdgate._fleet.shards import shard_of  # the feed partition of an instrument
from mdgate._model import Bar, Tick
from mdgate.plugins.stores.redis_store._lua import WRITE_BATCH_FENCED_SHA, WRITE_BATCH_SHA

__all__ = [
    "FEED_KEY",
    "BatchPacker",
    "SlotCall",
    "bars_key",
    "decode_bar_fields",
    "decode_tick_fields",
    "feed_key",
    "feed_seqs_key",
    "fence_key",
    "last_key",
    "parse_id",
    "shard_of",
    "ticks_key",
]

FEED_KEY: Final = "mdgate:feed"


def ticks_key(instrument: str) -> str:
    """Return the tick stream key of ``instrument`` (hash-tagged)."""
    return f"mdgate:{{{instrument}}}:ticks"


def last_key(instrument: str) -> str:
    """Return the latest-tick hash key of ``instrument`` (hash-tagged)."""
    return f"mdgate:{{{instrument}}}:last"


def gaps_key(instrument: str) -> str:
    """Return the gap stream key of ``instrument`` (hash-tagged): where its possible holes are kept."""
    return f"mdgate:{{{instrument}}}:gaps"


def bars_key(instrument: str) -> str:
    """Return the one-minute bar stream key of ``instrument`` (hash-tagged)."""
    return f"mdgate:{{{instrument}}}:bars:1m"


def fence_key(instrument: str) -> str:
    """Return the fencing token key of ``instrument`` (hash-tagged): the highest token that wrote it."""
    return f"mdgate:{{{instrument}}}:fence"


def feed_key(partition: int) -> str:
    """Return the feed stream of ``partition`` (Redis Cluster mode): ``mdgate:feed:{N}``."""
    return f"mdgate:feed:{{{partition}}}"


def feed_seqs_key(partition: int) -> str:
    """Return the hash instrument -> last stream ID appended to ``partition``'s feed (same slot)."""
    return f"mdgate:feed:{{{partition}}}:seqs"


@dataclass(slots=True)
class SlotCall:
    """One script call of a cluster batch: the groups of one hash slot (re-sent until done)."""

    slot: int
    #: The command (``EVALSHA sha numkeys keys... args...``).
    args: tuple[object, ...]
    #: The instrument of each group (group g is ``groups[g - 1]``).
    groups: list[str]
    ticks: int
    #: The reply once stored and replicated (``None`` until then).
    reply: list[Any] | None = None
    refused: set[str] = field(default_factory=set)


def parse_id(stream_id: str | bytes) -> tuple[int, int]:
    """Split a stream ID ``"<ms>-<seq>"`` into integers."""
    if isinstance(stream_id, bytes):
        stream_id = stream_id.decode()
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class BatchPacker:
    """
    Packs batches for ``WRITE_BATCH`` and owns the per-instrument ID counters.

    Args:
        stream_maxlen: ``MAXLEN ~`` of the per-instrument tick streams.
        feed_maxlen: ``MAXLEN ~`` of the shared feed (0 = no feed).
        bars_maxlen: ``MAXLEN ~`` of the bar streams.
    """

    def __init__(self, stream_maxlen: int, feed_maxlen: int, bars_maxlen: int) -> None:
        self._head: tuple[str, str, int, int, int] = (
            "EVALSHA",
            WRITE_BATCH_SHA,
            stream_maxlen,
            feed_maxlen,
            bars_maxlen,
        )
        #: instrument -> [ms, seq] of the last ID assigned (or seen in Redis).
        self.ids: dict[str, list[int]] = {}
        self._keys: dict[str, tuple[str, str, str]] = {}
        self._providers: set[str] = set()
        #: instrument -> start of the last minute whose bar the script rebuilds
        #: from the stored ticks (the minutes in which this process started
        #: seeing the instrument: a predecessor may have stored part of them).
        self.rebuild_until: dict[str, int] = {}
        #: instrument -> fencing token (absent: unfenced); see :meth:`RedisStore.fence`.
        self.tokens: dict[str, int] = {}
        self._maxlens = (stream_maxlen, feed_maxlen, bars_maxlen)
        #: Ticks left out because a string field cannot travel in the batch encoding.
        self.rejected = 0

    def unknown(self, instruments: Iterable[str]) -> list[str]:
        """Return the instruments (deduplicated) whose ID counter is not seeded yet."""
        ids = self.ids
        return list(dict.fromkeys(i for i in instruments if i not in ids))

    def seed(self, instrument: str, last_id: str | bytes) -> None:
        """Seed the ID counter of ``instrument`` with its stream's last ID."""
        ms, seq = parse_id(last_id)
        cur = self.ids.get(instrument)
        if cur is None or (ms, seq) > (cur[0], cur[1]):
            self.ids[instrument] = [ms, seq]

    def _group(self, instrument: str, groups: dict[str, int], keys: list[object]) -> int:
        g = len(groups) + 1
        groups[instrument] = g
        k = self._keys.get(instrument)
        if k is None:
            k = self._keys[instrument] = (
                ticks_key(instrument),
                last_key(instrument),
                bars_key(instrument),
            )
        keys.extend(k)
        return g

    def pack(self, ticks: Iterable[Tick], bars: Iterable[Bar] = ()) -> bytes:
        """
        Assign IDs to ``ticks`` and return the packed ``EVALSHA`` command.

        Ticks travel as one JSON argument (``[[g, "id", *tick fields], ...]``,
        encoded in one msgspec call: numbers keep their exact JSON text,
        which the script stores as is), bars as flat arguments. Every
        instrument of ``ticks`` should have been seeded (:meth:`seed`); an
        unseeded one starts from ``0-0``. A tick whose instrument or provider
        holds a character that cannot travel in that encoding (``,"[]\\``
        or a control character) is left out and counted in :attr:`rejected`.
        The returned bytes are kept by the caller and re-sent unchanged on
        retry.
        """
        groups: dict[str, int] = {}
        keys: list[object] = [FEED_KEY]
        recs: list[tuple[object, ...]] = []
        append = recs.append
        ids = self.ids
        providers = self._providers
        # instrument -> (group, its ID counter): one look-up per tick
        seen: dict[str, tuple[int, list[int]]] = {}
        for t in ticks:
            inst = t.instrument
            got = seen.get(inst)
            if got is None:
                if not _safe(inst):
                    self.rejected += 1
                    continue
                st = ids.get(inst)
                if st is None:
                    st = ids[inst] = [0, 0]
                got = seen[inst] = (self._group(inst, groups, keys), st)
            g, st = got
            if t.provider not in providers:
                if not _safe(t.provider):
                    self.rejected += 1
                    continue
                providers.add(t.provider)
            ts = t.ts
            if ts > st[0]:
                st[0] = ts
                st[1] = 0
                append((g, f"{ts}-0", *astuple(t)))
            else:
                st[1] += 1
                append((g, f"{st[0]}-{st[1]}", *astuple(t)))
        args: list[object] = [_encode(recs), 0]
        m = 0
        rebuild = self.rebuild_until
        for b in bars:
            inst = b.instrument
            bg = groups.get(inst)
            if bg is None:
                bg = self._group(inst, groups, keys)
            flag = 1 if b.start <= rebuild.get(inst, -1) else 0
            args += (
                bg,
                f"{b.start}-0",
                b.start,
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.count,
                flag,
            )
            m += 1
        args[1] = m
        head = self._head
        if self.tokens and not self.tokens.keys().isdisjoint(groups):
            return hiredis.pack_command(  # type: ignore[no-any-return]
                self._fenced(groups, keys, head[2:], args)  # type: ignore[arg-type]
            )
        return hiredis.pack_command(  # type: ignore[no-any-return]
            (head[0], head[1], len(keys), *keys, *head[2:], *args)  # type: ignore[arg-type]
        )

    def _fenced(
        self, groups: dict[str, int], keys: list[object], maxlens: tuple[object, ...], args: list[object],
    ) -> tuple[object, ...]:
        """The ``WRITE_BATCH_FENCED`` call: a fence key per group after the others, the tokens last."""
        tokens = self.tokens
        fences = [fence_key(i) for i in groups]
        tok = ",".join(str(tokens.get(i, 0)) for i in groups)
        n = len(keys) + len(fences)
        return ("EVALSHA", WRITE_BATCH_FENCED_SHA, n, *keys, *fences, *maxlens, *args, tok)

    def pack_slots(
        self, ticks: Iterable[Tick], bars: Iterable[Bar], slot_of: Mapping[str, int], partitions: int,
    ) -> tuple[list[SlotCall], dict[int, list[tuple[str, tuple[object, ...]]]]]:
        """
        Assign IDs as :meth:`pack` and split the batch by hash slot (Redis Cluster mode).

        Returns one :class:`SlotCall` per slot (``WRITE_BATCH`` with the feed off, or its fenced
        variant) and, per feed partition, the ``(instrument, record)`` of each tick for ``FEED_ADD``.
        ``slot_of`` maps every instrument of the batch to its slot.
        """
        by_slot: dict[int, tuple[dict[str, int], list[object], list[tuple[object, ...]], list[object]]] = {}
        feed: dict[int, list[tuple[str, tuple[object, ...]]]] = {}
        ids, rebuild = self.ids, self.rebuild_until
        counts: dict[int, int] = {}

        def part(inst: str) -> tuple[dict[str, int], list[object], list[tuple[object, ...]], list[object]]:
            slot = slot_of[inst]
            p = by_slot.get(slot)
            if p is None:
                p = by_slot[slot] = ({}, [ticks_key(inst)], [], [])
            if inst not in p[0]:
                p[0][inst] = len(p[0]) + 1
                p[1].extend((ticks_key(inst), last_key(inst), bars_key(inst)))
            return p

        for t in ticks:
            inst = t.instrument
            if not (_safe(inst) and _safe(t.provider)):
                self.rejected += 1
                continue
            groups, _keys, recs, _bars = part(inst)
            st = ids.get(inst)
            if st is None:
                st = ids[inst] = [0, 0]
            if t.ts > st[0]:
                st[0], st[1] = t.ts, 0
            else:
                st[1] += 1
            sid = f"{st[0]}-{st[1]}"
            fields = astuple(t)
            recs.append((groups[inst], sid, *fields))
            feed.setdefault(shard_of(inst, partitions), []).append((inst, (0, sid, *fields)))
            counts[slot_of[inst]] = counts.get(slot_of[inst], 0) + 1
        for b in bars:
            groups, _keys, _recs, bargs = part(b.instrument)
            flag = 1 if b.start <= rebuild.get(b.instrument, -1) else 0
            bargs += (groups[b.instrument], f"{b.start}-0", b.start, b.open, b.high, b.low, b.close,
                      b.volume, b.count, flag)
        smax, _fmax, bmax = self._maxlens
        calls: list[SlotCall] = []
        for slot, (groups, keys, recs, bargs) in by_slot.items():
            args: list[object] = [_encode(recs), len(bargs) // 10, *bargs]
            if self.tokens and not self.tokens.keys().isdisjoint(groups):
                cmd = self._fenced(groups, keys, (smax, 0, bmax), args)
            else:
                cmd = ("EVALSHA", WRITE_BATCH_SHA, len(keys), *keys, smax, 0, bmax, *args)
            calls.append(SlotCall(slot, cmd, list(groups), counts.get(slot, 0)))
        return calls, feed


_UNSAFE: Final = re.compile(r'[,"\[\]\\\x00-\x1f]')
_encode: Final = msgspec.json.Encoder().encode


def _safe(text: str) -> bool:
    return _UNSAFE.search(text) is None


def decode_tick_fields(fields: Mapping[str, str]) -> Tick:
    """
    Decode a stream entry's or ``:last`` hash's fields into a :class:`Tick`.

    Raises:
        msgspec.ValidationError: when a required field is missing or malformed.
    """
    return msgspec.convert(fields, Tick, strict=False)


def decode_bar_fields(instrument: str, fields: Mapping[str, str]) -> Bar:
    """
    Decode a bar stream entry's fields into a :class:`Bar`.

    Raises:
        KeyError, ValueError: when a field is missing or malformed.
    """
    return Bar(
        instrument,
        int(fields["start"]),
        float(fields["open"]),
        float(fields["high"]),
        float(fields["low"]),
        float(fields["close"]),
        int(fields["volume"]),
        int(fields["count"]),
    )
