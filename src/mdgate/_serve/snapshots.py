"""
Snapshot frames shared by the clients that ask for the same instruments.

A client subscribing to 1,000 instruments gets a ``snapshot`` frame of about
200 KB. Built per client, 200 such clients cost 200 reads of the latest-tick
table, 200 encodes and 40 MB of frames. :class:`SnapshotFrames` builds the
frame once per list of instruments (same names, same order) and hands the
very same :class:`~mdgate._serve.fanout.Shared` frame to every client that
asks for that list while it is current.

Current means: no batch was published since it was read. The pipeline
advances the latest-tick table and then publishes the batch
(:attr:`~mdgate._serve.fanout.Fanout.generation` moves with every batch), so a
frame read before the table moved is never handed out after it moved: every
client gets the latest tick of each instrument as of its registration, and
the live ticks behind it (none lost in between). A read that waited (the
store was asked) while a batch was published is used for its own client and
not kept.

Kept at most :data:`MAX_BYTES` of frames (the oldest go first), and none
once the next batch is published.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from mdgate._model import Tick, encode
from mdgate._serve.fanout import Fanout, Shared

__all__ = ["MAX_BYTES", "SnapshotFrames"]

#: Bytes of snapshot frames kept between two batches, at most.
MAX_BYTES: Final = 8 * 1024 * 1024


class SnapshotFrames:
    """
    ``snapshot`` frames built once per list of instruments while the table stands still.

    Args:
        fanout: whose :attr:`~mdgate._serve.fanout.Fanout.generation` says when the table moved,
            and which frames the bytes (:meth:`~mdgate._serve.fanout.Fanout.shared`).
        read: the latest tick of each of some instruments, in that order (``Backends.snapshot``).
        max_bytes: frames kept at most (the oldest are forgotten first).
    """

    def __init__(self, fanout: Fanout, read: Callable[[Sequence[str]], Awaitable[list[Tick]]],
                 max_bytes: int = MAX_BYTES) -> None:
        self.fanout = fanout
        self.read = read
        self.max_bytes = max_bytes
        self._frames: dict[tuple[str, ...], Shared] = {}
        self._generation = -1
        self._bytes = 0
        #: Frames built, and frames handed out again without a read.
        self.built = 0
        self.reused = 0

    async def frame(self, instruments: Sequence[str]) -> Shared:
        """The ``snapshot`` frame of ``instruments`` (latest tick of each that has one, in that order)."""
        key = tuple(instruments)
        generation = self.fanout.generation
        if generation != self._generation:
            self._frames.clear()
            self._bytes = 0
            self._generation = generation
        else:
            hit = self._frames.get(key)
            if hit is not None:
                self.reused += 1
                return hit
        ticks = await self.read(key)
        frame = self.fanout.shared(encode({"type": "snapshot", "ticks": ticks}))
        self.built += 1
        if self.fanout.generation == generation == self._generation and key not in self._frames:
            self._keep(key, frame)
        return frame

    def _keep(self, key: tuple[str, ...], frame: Shared) -> None:
        size = len(frame.data)
        if size > self.max_bytes:
            return
        frames = self._frames
        while frames and self._bytes + size > self.max_bytes:
            oldest = next(iter(frames))
            self._bytes -= len(frames.pop(oldest).data)
        frames[key] = frame
        self._bytes += size
