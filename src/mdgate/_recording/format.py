"""
The recording format: what ``mdgate record`` writes and ``mdgate replay`` reads.

A recording is a directory::

    index.json              what is in it (rewritten at every rotation and at close)
    000001.mdrec            segments, in order
    000002.mdrec
    ...

A segment is a sequence of *chunks*; a chunk is a 4-byte big-endian length
followed by that many bytes of one zstandard frame, which holds one msgpack
array of :class:`Record` values (each an array, see ``array_like``). Chunks
are independent: a segment cut short by a crash is readable up to its last
whole chunk. Nothing here does I/O but :class:`RecordingWriter` and the
readers, which touch only the recording's own directory.

Record kinds (``Record.kind``):

``open``   a provider connection opened; ``data`` = its URL (secrets masked)
``track``  the connection maps code ``data`` to instrument ``extra``
``untrack`` the connection forgot code ``data``
``send``   a frame the gateway sent on the connection (subscribe, heartbeat...)
``frame``  a frame received; ``t`` is the receive time the decoder was given
``close``  the connection ended; ``data`` = why, ``extra`` = the close code if any

Times are epoch milliseconds (UTC). Every record names its provider and the
connection index (0, 1, ...), so that one file holds all connections.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

__all__ = [
    "FORMAT",
    "KINDS",
    "Record",
    "RecordingError",
    "RecordingWriter",
    "read_index",
    "read_records",
    "segment_paths",
]

#: Written into ``index.json``; a reader refuses another major version.
FORMAT: Final = "mdgate-recording/1"
KINDS: Final = frozenset({"open", "track", "untrack", "send", "frame", "close"})
_LEN: Final = struct.Struct(">I")
#: Largest chunk a reader accepts (compressed), so a corrupt length cannot ask for gigabytes.
_MAX_CHUNK: Final = 256 * 1024 * 1024
SUFFIX: Final = ".mdrec"


class RecordingError(Exception):
    """A recording that cannot be read (missing, another format, corrupt)."""


class Record(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One recorded event (see the module docstring for the kinds)."""

    t: int
    kind: str
    provider: str
    conn: int
    #: bytes or str (a frame as it came: binary or text), or None.
    data: Any = None
    #: str, int or None.
    extra: Any = None


_encode: Final = msgspec.msgpack.Encoder().encode
_decode_chunk: Final = msgspec.msgpack.Decoder(list[Record]).decode


@dataclass
class _Segment:
    name: str
    first_t: int | None = None
    last_t: int | None = None
    records: int = 0
    frames: int = 0
    raw_bytes: int = 0
    bytes: int = 0


@dataclass
class RecordingWriter:
    """
    Appends records to a recording directory, compressed, rotated by size and time.

    Records are buffered and written as one chunk per :meth:`flush` (the
    recorder flushes every ``flush_interval`` seconds and when the buffer
    holds ``chunk_bytes``), so a frame costs one list append and, at flush
    time, its share of one msgpack encode and one zstandard call.
    """

    directory: Path
    #: Start a new segment past this many compressed bytes...
    max_bytes: int = 64 * 1024 * 1024
    #: ... or past this many seconds of recording.
    max_seconds: float = 3600.0
    #: zstandard level (3: fast, about 4-8x on market data).
    level: int = 3
    #: Monotonic seconds (rotation by time; tests pass a fake).
    clock: Callable[[], float] = time.monotonic
    segments: list[_Segment] = field(default_factory=list)
    _buffer: list[Record | tuple[Any, ...]] = field(default_factory=list)
    _buffered_bytes: int = 0
    _file: Any = None
    _opened_at: float = 0.0
    _compressor: Any = None

    def __post_init__(self) -> None:
        import zstandard

        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if any(self.directory.glob(f"*{SUFFIX}")):
            raise RecordingError(f"{self.directory} already holds a recording: choose another directory")
        self._compressor = zstandard.ZstdCompressor(level=self.level)

    def add(self, record: Record) -> None:
        """Buffer one record (written at the next :meth:`flush`)."""
        self._buffer.append(record)
        data = record.data
        if data is not None:
            self._buffered_bytes += len(data)

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes waiting for the next flush."""
        return self._buffered_bytes

    @property
    def append(self) -> Callable[[Record | tuple[Any, ...]], None]:
        """The buffer's ``append``, for the hot path: a ``(t, kind, provider, conn, data)`` tuple
        is encoded as the ``Record`` it spells (not counted in :attr:`buffered_bytes`)."""
        return self._buffer.append

    def take(self) -> list[Record | tuple[Any, ...]]:
        """Hand over what is buffered (to :meth:`write_chunk`, possibly in another thread)."""
        records = self._buffer.copy()
        self._buffer.clear()  # the same list: :attr:`append` stays valid
        self._buffered_bytes = 0
        return records

    def flush(self) -> None:
        """Write what is buffered as one chunk."""
        self.write_chunk(self.take())

    def write_chunk(self, records: list[Record | tuple[Any, ...]]) -> None:
        """Write ``records`` as one chunk; rotate first when the segment is full. One caller at a time."""
        if not records:
            return
        if self._file is None or self._full():
            self._rotate()
        raw = _encode(records)
        packed = self._compressor.compress(raw)
        self._file.write(_LEN.pack(len(packed)) + packed)
        self._file.flush()
        seg = self.segments[-1]
        seg.records += len(records)
        seg.frames += sum(1 for r in records if (r[1] if isinstance(r, tuple) else r.kind) == "frame")
        seg.raw_bytes += len(raw)
        seg.bytes += _LEN.size + len(packed)
        if seg.first_t is None:
            seg.first_t = _t(records[0])
        seg.last_t = _t(records[-1])

    def _full(self) -> bool:
        seg = self.segments[-1]
        return seg.bytes >= self.max_bytes or self.clock() - self._opened_at >= self.max_seconds

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self.write_index()
        name = f"{len(self.segments) + 1:06d}{SUFFIX}"
        self.segments.append(_Segment(name))
        self._file = (self.directory / name).open("wb")
        self._opened_at = self.clock()

    def write_index(self) -> None:
        """(Re)write ``index.json`` atomically."""
        tmp = self.directory / "index.json.tmp"
        tmp.write_text(json.dumps(self.index(), indent=1) + "\n")
        os.replace(tmp, self.directory / "index.json")

    def index(self) -> dict[str, Any]:
        """What ``index.json`` holds."""
        return {
            "format": FORMAT,
            "segments": [vars(s) for s in self.segments],
            "records": sum(s.records for s in self.segments),
            "frames": sum(s.frames for s in self.segments),
            "first_t": next((s.first_t for s in self.segments if s.first_t is not None), None),
            "last_t": next((s.last_t for s in reversed(self.segments) if s.last_t is not None), None),
        }

    def close(self) -> None:
        """Flush, close the segment and write the index."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self.write_index()


def _t(record: Record | tuple[Any, ...]) -> int:
    return int(record[0] if isinstance(record, tuple) else record.t)


def read_index(directory: str | Path) -> dict[str, Any]:
    """The recording's ``index.json`` (rebuilt from the segments' names when it is missing)."""
    path = Path(directory)
    if not path.is_dir():
        raise RecordingError(f"{path}: no such recording directory")
    try:
        index: dict[str, Any] = json.loads((path / "index.json").read_text())
    except FileNotFoundError:
        names = sorted(p.name for p in path.glob(f"*{SUFFIX}"))
        if not names:
            raise RecordingError(f"{path}: not a recording (no index.json, no *{SUFFIX} segment)") from None
        return {"format": FORMAT, "segments": [{"name": n} for n in names]}
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}/index.json: {exc}") from None
    if index.get("format") != FORMAT:
        raise RecordingError(f"{path}: format {index.get('format')!r}, expected {FORMAT}")
    return index


def segment_paths(directory: str | Path) -> list[Path]:
    """The recording's segment files, in order."""
    path = Path(directory)
    return [path / s["name"] for s in read_index(path)["segments"]]


def read_records(directory: str | Path) -> Iterator[Record]:
    """Every record of a recording, in order (a segment cut short ends at its last whole chunk)."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    for seg in segment_paths(directory):
        try:
            fh = seg.open("rb")
        except OSError as exc:
            raise RecordingError(f"{seg}: {exc}") from None
        with fh:
            while True:
                head = fh.read(_LEN.size)
                if len(head) < _LEN.size:
                    break
                (n,) = _LEN.unpack(head)
                if n > _MAX_CHUNK:
                    raise RecordingError(f"{seg}: corrupt chunk length {n}")
                packed = fh.read(n)
                if len(packed) < n:
                    break  # cut short (the recorder was killed mid-write)
                try:
                    yield from _decode_chunk(decompressor.decompress(packed))
                except (zstandard.ZstdError, msgspec.DecodeError) as exc:
                    raise RecordingError(f"{seg}: corrupt chunk: {exc}") from None
