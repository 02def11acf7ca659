"""
What ``mdgate export`` does, apart from its command line: read stored ticks or
bars page by page and write them as CSV or Parquet.

Reading goes through the store's own reads (:meth:`~mdgate.Store.history` and
:meth:`~mdgate.Store.bars`, what ``GET /history`` answers from). Those return
the *newest* ``limit`` rows of a time range, so :func:`pages` walks the range
forward in windows of stream-ID time small enough to come back whole: a window
that comes back full is halved and read again, a sparse one doubles the next,
an empty one is followed by a binary search (one-row reads) for the next row.
The windows partition the range, so the pages, concatenated, are exactly
what one unbounded read would return, in the same order, while no more than
one page is held at a time.

Writers take rows (:class:`~mdgate.Tick` or :class:`~mdgate.Bar`) a page at a
time: :class:`CsvRows` (stdlib :mod:`csv`) and :class:`ParquetRows` (pyarrow,
the optional ``mdgate[parquet]`` extra, imported only when asked for).
"""

from __future__ import annotations

import csv
import importlib
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import IO, Any, Final, Protocol, Union, get_args, get_origin

import msgspec

from mdgate._errors import MdgateError
from mdgate._model import Bar, Tick
from mdgate.plugins.stores.protocol import BAR_INTERVALS, HistoryReader

__all__ = [
    "PAGE_ROWS",
    "CsvRows",
    "ExportError",
    "ParquetRows",
    "RowWriter",
    "bar_pages",
    "columns",
    "load_pyarrow",
    "pages",
    "tick_pages",
]

#: Rows asked of the store per read (and so held in memory at most, in the common case).
PAGE_ROWS: Final = 10_000
#: Stream-ID times are epoch ms; this is later than any of them ("until the end").
_END: Final = 2**62
#: The first window of a tick read (it adapts from there).
_FIRST_SPAN_MS: Final = 60_000
_MINUTE_MS: Final = 60_000

PARQUET_HINT: Final = 'pip install "mdgate[parquet]"'

#: (lo, hi, limit) -> the rows with stream-ID time in [lo, hi], at most the newest ``limit``.
Fetch = Callable[[int, int, int], Awaitable[Sequence[Any]]]
#: (lo, hi) -> whether any row has a stream-ID time in [lo, hi].
Probe = Callable[[int, int], Awaitable[bool]]


class ExportError(MdgateError):
    """An export that cannot be done as asked (a missing optional package...)."""


def columns(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    """The output columns of ``kind`` (:class:`Tick` or :class:`Bar`): its fields, in order."""
    return tuple(kind.__struct_fields__)


async def _first_row_time(probe: Probe, lo: int, end: int) -> int | None:
    """The smallest time ``x`` in ``[lo, end]`` with a row in ``[lo, x]``; None when there is none."""
    if lo > end or not await probe(lo, end):
        return None
    low, high = lo, end  # invariant: a row in [lo, high]; none in [lo, low - 1]
    while low < high:
        mid = (low + high) // 2
        if await probe(lo, mid):
            high = mid
        else:
            low = mid + 1
    return low


async def pages(
    fetch: Fetch,
    probe: Probe,
    since: int,
    until: int,
    *,
    page: int = PAGE_ROWS,
    unit: int = 1,
    max_span: int | None = None,
    first_span: int = _FIRST_SPAN_MS,
) -> AsyncIterator[list[Any]]:
    """
    Yield every row with a stream-ID time in ``[since, until]``, oldest first, page by page.

    Args:
        fetch: reads one window (see :data:`Fetch`).
        probe: whether a window holds a row (see :data:`Probe`).
        since: the first time (a multiple of ``unit``).
        until: the last time (``unit - 1`` past a multiple of ``unit``).
        page: the rows asked per read; a window that returns as many may be
            cut and is read again, halved (a single millisecond holding more
            is read with a doubled limit).
        unit: windows start and end on multiples of this (bars: the interval).
        max_span: the widest window (bars: ``page`` intervals, never cut).
        first_span: the first window's width (rounded to ``unit``).
    """
    span = max(unit, first_span - first_span % unit)
    if max_span is not None:
        span = min(span, max_span)
    limit = page
    lo = since
    while lo <= until:
        hi = min(lo + span - 1, until)
        rows = await fetch(lo, hi, limit)
        if len(rows) >= limit:  # perhaps cut: read a narrower window (or a wider page)
            if hi - lo + 1 > unit:
                span = max(unit, (hi - lo + 1) // 2 // unit * unit)
            else:
                limit *= 2
            continue
        limit = page
        if rows:
            yield list(rows)
        if hi >= until:
            return
        lo = hi + 1
        if len(rows) < page // 4:
            span *= 2
            if max_span is not None:
                span = min(span, max_span)
        if not rows:
            found = await _first_row_time(probe, lo, until)
            if found is None:
                return
            lo = found - found % unit


async def tick_pages(
    store: HistoryReader, instrument: str, since: int | None, until: int | None, *, page: int | None = None
) -> AsyncIterator[list[Tick]]:
    """
    Every stored tick of ``instrument`` in ``[since, until]`` (stream-ID time), oldest first.

    ``page``: rows per read (default :data:`PAGE_ROWS`).
    """

    async def fetch(lo: int, hi: int, limit: int) -> Sequence[Tick]:
        return await store.history(instrument, since_ms=lo, until_ms=hi, limit=limit)

    async def probe(lo: int, hi: int) -> bool:
        return bool(await store.history(instrument, since_ms=lo, until_ms=hi, limit=1))

    lo = max(0, since or 0)
    hi = _END if until is None else until
    async for rows in pages(fetch, probe, lo, hi, page=page or PAGE_ROWS):
        yield rows


async def bar_pages(
    store: HistoryReader,
    instrument: str,
    interval: str,
    since: int | None,
    until: int | None,
    *,
    page: int | None = None,
) -> AsyncIterator[list[Bar]]:
    """
    Every closed bar of ``interval`` of ``instrument`` starting in ``[since, until]``, oldest first.

    ``page``: bars per read (default :data:`PAGE_ROWS`).
    """
    size = BAR_INTERVALS[interval] * 1000
    page = page or PAGE_ROWS

    async def fetch(lo: int, hi: int, limit: int) -> Sequence[Bar]:
        return await store.bars(instrument, interval, since_ms=lo, until_ms=hi, limit=limit)

    async def probe(lo: int, hi: int) -> bool:  # the one-minute bars a bar is made of
        return bool(await store.bars(instrument, "1m", since_ms=lo, until_ms=hi, limit=1))

    lo = -(-max(0, since or 0) // size) * size  # whole intervals, as the store reads them
    hi = _END if until is None else until
    hi = hi - hi % size + size - 1
    # A window of `page` intervals holds at most `page` bars: asking page + 1 never cuts one.
    async for rows in pages(fetch, probe, lo, hi, page=page + 1, unit=size, max_span=page * size,
                            first_span=page * size):
        yield rows


# -- writers -------------------------------------------------------------------------


class RowWriter(Protocol):
    """Writes rows of one kind, a page at a time."""

    rows: int

    def write(self, rows: Sequence[msgspec.Struct]) -> None:
        """Write ``rows``."""

    def close(self) -> None:
        """Finish the output (Parquet: its footer); the stream itself stays open."""


class CsvRows:
    """
    CSV: a header of the columns, then one line per row; an absent field is empty.

    Floats are written as Python's shortest round-tripping text, so
    ``float(cell)`` gives back the stored value.
    """

    def __init__(self, stream: IO[str], kind: type[msgspec.Struct]) -> None:
        self._fields = columns(kind)
        self._csv = csv.writer(stream, lineterminator="\n")
        self._csv.writerow(self._fields)
        self.rows = 0

    def write(self, rows: Sequence[msgspec.Struct]) -> None:
        """Write ``rows``, one CSV line each."""
        fields = self._fields
        self._csv.writerows([getattr(r, f) for f in fields] for r in rows)  # None: an empty cell
        self.rows += len(rows)

    def close(self) -> None:
        """Nothing to finish: every line is complete."""


def load_pyarrow() -> tuple[Any, Any]:
    """
    ``(pyarrow, pyarrow.parquet)``.

    Raises:
        ExportError: pyarrow is not installed (the message says how to install it).
    """
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ExportError(f"--format parquet needs pyarrow, which is not installed: {PARQUET_HINT}") from None


def _arrow_type(pa: Any, annotation: Any) -> Any:
    """The Arrow type of a field annotated ``str``, ``int``, ``float`` or ``X | None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return {str: pa.string(), int: pa.int64(), float: pa.float64()}[annotation]


class ParquetRows:
    """
    Parquet: one row group per page, the columns typed from the struct
    (``str`` -> string, ``int`` -> int64, ``float`` -> float64, optional
    fields nullable). Times stay integer epoch milliseconds, as stored.
    """

    def __init__(self, stream: IO[bytes], kind: type[msgspec.Struct]) -> None:
        pa, pq = load_pyarrow()
        self._pa = pa
        self._fields = columns(kind)
        self.schema = pa.schema([
            pa.field(f.name, _arrow_type(pa, f.type), nullable=not f.required or f.default is None)
            for f in msgspec.structs.fields(kind)
        ])
        self._writer = pq.ParquetWriter(stream, self.schema)
        self.rows = 0

    def write(self, rows: Sequence[msgspec.Struct]) -> None:
        """Write ``rows`` as one row group."""
        if not rows:
            return
        data = {f: [getattr(r, f) for r in rows] for f in self._fields}
        self._writer.write_table(self._pa.Table.from_pydict(data, schema=self.schema))
        self.rows += len(rows)

    def close(self) -> None:
        """Write the footer (a file without it is not readable)."""
        self._writer.close()
