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
from typing import Final

import hiredis
import msgspec
from msgspec.structs import astuple

from mdgate._model import Bar, Tick
from mdgate.plugins.stores.redis_store._lua import WRITE_BATCH_SHA

__all__ = [
    "FEED_KEY",
    "BatchPacker",
    "bars_key",
    "decode_bar_fields",
    "decode_tick_fields",
    "last_key",
    "parse_id",
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
        ids = self.ids
        providers = self._providers
        for t in ticks:
            inst = t.instrument
            g = groups.get(inst)
            if g is None:
                if not _safe(inst):
                    self.rejected += 1
                    continue
                g = self._group(inst, groups, keys)
            if t.provider not in providers:
                if not _safe(t.provider):
                    self.rejected += 1
                    continue
                providers.add(t.provider)
            st = ids.get(inst)
            if st is None:
                st = ids[inst] = [0, 0]
            ts = t.ts
            if ts > st[0]:
                st[0] = ts
                st[1] = 0
            else:
                st[1] += 1
            recs.append((g, f"{st[0]}-{st[1]}", *astuple(t)))
        args: list[object] = [_encode(recs), 0]
        m = 0
        rebuild = self.rebuild_until
        for b in bars:
            inst = b.instrument
            g = groups.get(inst)
            if g is None:
                g = self._group(inst, groups, keys)
            flag = 1 if b.start <= rebuild.get(inst, -1) else 0
            args += (
                g,
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
        return hiredis.pack_command(  # type: ignore[no-any-return]
            (head[0], head[1], len(keys), *keys, *head[2:], *args)  # type: ignore[arg-type]
        )


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
