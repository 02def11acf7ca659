"""
The latest tick of each instrument, and the one rule that decides it.

**Newer wins**: a tick becomes its instrument's latest unless the latest
already held is newer (a larger ``ts``); with an equal ``ts`` the later
arrival wins. So "latest" only moves forward: a snapshot re-sent on a
resubscribe, or a batch from a slower connection, never takes it back in
time. :meth:`LatestTicks.advance` is where the rule is written; the
pipeline applies it to every batch and the snapshot applies it again when
it merges in what the store holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence

from mdgate._model import Tick

__all__ = ["LatestTicks", "StoredLatest"]

#: Reads the store's latest tick of some instruments (``Store.latest``).
StoredLatest = Callable[[Sequence[str]], Awaitable[Mapping[str, Tick]]]

#: Seconds a snapshot waits for the store before going on without it.
STORE_TIMEOUT = 1.0


class LatestTicks:
    """The latest tick per instrument (the pipeline's own table), moved on by :meth:`advance`."""

    __slots__ = ("_table",)

    def __init__(self, ticks: Iterable[Tick] = ()) -> None:
        self._table: dict[str, Tick] = {}
        self.advance(ticks)

    def advance(self, ticks: Iterable[Tick]) -> None:
        """
        Apply the rule to each tick in order: it becomes its instrument's
        latest unless the one held has a larger ``ts`` (equal ``ts``: the
        later arrival wins).

        Raises:
            Exception: a malformed tick (e.g. an unhashable instrument); the
                ticks before it are applied.
        """
        table = self._table
        get = table.get
        for t in ticks:  # the hot path: one batch at a time, locals only
            prev = get(t.instrument)
            if prev is None or t.ts >= prev.ts:
                table[t.instrument] = t

    @property
    def table(self) -> Mapping[str, Tick]:
        """The table itself, read-only (``in`` and lookups without a method call, for loops over ticks)."""
        return self._table

    def get(self, instrument: str) -> Tick | None:
        """The latest tick of ``instrument``, or None."""
        return self._table.get(instrument)

    def __getitem__(self, instrument: str) -> Tick:
        return self._table[instrument]

    def __contains__(self, instrument: object) -> bool:
        return instrument in self._table

    def __len__(self) -> int:
        return len(self._table)

    def items(self) -> Iterator[tuple[str, Tick]]:
        """``(instrument, tick)`` pairs."""
        return iter(self._table.items())

    def merged(self, instruments: Iterable[str], stored: Mapping[str, Tick]) -> list[Tick]:
        """
        The latest tick of each of ``instruments`` that has one, in that
        order: this table's, or ``stored``'s (what a store holds) where the
        rule prefers it.
        """
        names = list(instruments)
        out = LatestTicks(stored[i] for i in names if i in stored)
        out.advance(self._table[i] for i in names if i in self._table)
        return [t for t in map(out.get, names) if t is not None]

    async def snapshot(self, instruments: Sequence[str], stored: StoredLatest | None) -> list[Tick]:
        """
        Latest tick of each instrument: this table's, else the store's.

        Only instruments this table has no tick of are asked from the store
        (e.g. right after a restart), for at most :data:`STORE_TIMEOUT`
        seconds; a store that fails or is slow is logged and left out. A
        newer tick that *another* gateway wrote to the store for an
        instrument this one also ingests is not in the snapshot; the next
        tick brings it.

        Args:
            instruments: the names, in the order wanted.
            stored: reads the store's latest (``Store.latest``); None: this table alone.
        """
        import anyio  # here, not at the top: `import mdgate` (a decoder's only import) stays free of I/O
        import structlog

        missing = [i for i in instruments if i not in self._table]
        found: Mapping[str, Tick] = {}
        if missing and stored is not None:
            try:
                with anyio.fail_after(STORE_TIMEOUT):
                    found = await stored(missing)
            except Exception as exc:
                structlog.get_logger(__name__).warning("snapshot_store_failed", error=str(exc))
        return self.merged(instruments, found)
