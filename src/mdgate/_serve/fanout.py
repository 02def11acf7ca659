"""
Fan-out of tick batches to WebSocket clients.

Encode once: for every batch, each distinct *subscription set* gets its
ticks encoded in one msgspec call into one ``ticks`` frame, and every client
with that set receives the very same ``bytes`` object. With ``framed=True``
(no permessage-deflate: the default) the frame already carries its RFC 6455
header, so a client costs one ``transport.write`` and no copy. With 200
clients watching the same instruments a batch costs one encode, not 200.

Never block the feed: :meth:`Fanout.publish` is synchronous and only
appends to per-client outboxes. What is queued is written once per event-loop
iteration by a flusher, or by the client's own writer task while its socket
lags (``writer.py`` in this package). A ``snapshot`` frame is built once for
every client asking for the same instruments (``snapshots.py``), and clients
with equal subscription sets hold one set object.

Every outbox is bounded twice:

* ticks: when a client still has ticks waiting from an earlier batch and
  its outbox holds more than ``client_queue`` ticks, it is *conflated*: only
  the latest tick per instrument is kept (one large batch reaching an idle
  client is not);
* bytes: what is queued for the client (ticks and replies) plus what its
  writer has handed to the socket and is not sent yet (:attr:`ClientOutbox.in_flight`)
  may not exceed ``client_buffer_bytes``. Past it the ticks are conflated;
  if that is not enough (replies alone over budget), everything queued is
  dropped and the outbox is marked :attr:`~ClientOutbox.over_budget`: the
  writer closes the client with 1008.

The byte count costs one addition per queued chunk: a batch's frames are
measured once in :meth:`Fanout.publish` and shared by every client. A
client whose socket has not drained for ``drain_timeout`` seconds is closed
with code 1008 too (see ``server.py`` in this package).
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec

from mdgate._model import Tick

__all__ = ["Barrier", "ClientOutbox", "Fanout", "Shared", "text_header", "ticks_frame"]

_HEAD: Final = b'{"type":"ticks","ticks":'
#: Default byte budget of an outbox (``[server] client_buffer_bytes``).
DEFAULT_BUDGET: Final = 8 * 1024 * 1024
_encode_list: Final = msgspec.json.Encoder().encode


def text_header(n: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame of ``n`` payload bytes."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


def ticks_frame(ticks: list[Tick]) -> bytes:
    """Encode a ``{"type":"ticks","ticks":[...]}`` frame payload in one call."""
    return _HEAD + _encode_list(ticks) + b"}"


def _frames(ticks: list[Tick], per_frame: int, framed: bool) -> list[bytes]:
    out = []
    for i in range(0, len(ticks), per_frame):
        payload = ticks_frame(ticks[i:i + per_frame])
        out.append(text_header(len(payload)) + payload if framed else payload)
    return out


class Shared:
    """
    A control frame built once and queued for many clients (a snapshot): the
    bytes go to each socket as they are, framed if the fan-out frames.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _size(payload: bytes | Shared) -> int:
    return len(payload.data if isinstance(payload, Shared) else payload)


class _Chunk:
    """
    Ticks queued for a client: shared, prebuilt frames (None once conflated),
    the ticks and the frames' size in bytes (an estimate once conflated).
    """

    __slots__ = ("frames", "gaps", "nbytes", "ticks")

    def __init__(self, frames: list[bytes] | None, ticks: list[Tick], nbytes: int,
                 gaps: dict[str, list[int]] | None = None) -> None:
        self.frames = frames
        self.ticks = ticks
        self.nbytes = nbytes
        #: Once conflated: instrument -> [first, last] ``ts`` of the ticks dropped for it.
        self.gaps = gaps


class Barrier:
    """
    A place in a client's queue that holds back everything behind it (a resume:
    the replayed ticks go here, the live ones queue behind) until released.
    """

    __slots__ = ("done", "frames", "nbytes")

    def __init__(self) -> None:
        #: Payloads passed through so far and not yet taken, and their size in bytes.
        self.frames: deque[bytes | Shared] = deque()
        self.nbytes = 0
        #: Released: once its frames are taken, what is behind it flows.
        self.done = False


def _widen(gaps: dict[str, list[int]], instrument: str, first: int, last: int) -> None:
    """Extend ``instrument``'s dropped range to cover ``first``..``last``."""
    span = gaps.get(instrument)
    if span is None:
        gaps[instrument] = [first, last]
    else:
        span[0], span[1] = min(span[0], first), max(span[1], last)


class ClientOutbox:
    """What is waiting to be sent to one client: control frames and ticks, in order."""

    def __init__(
        self, limit: int, max_per_frame: int, *, framed: bool = False, budget: int = DEFAULT_BUDGET,
    ) -> None:
        self.limit = limit
        self.max_per_frame = max_per_frame
        #: Frames come out of :meth:`take` with their WebSocket header.
        self.framed = framed
        #: Bytes this client may hold in user space (:attr:`nbytes` + :attr:`in_flight`).
        self.budget = budget
        self.queue: deque[bytes | Shared | _Chunk | Barrier] = deque()
        self.pending_ticks = 0
        #: Bytes queued here (payloads; conflated ticks estimated).
        self.nbytes = 0
        #: Bytes the writer handed to the socket that are not sent yet (as the writer last saw).
        self.in_flight = 0
        self.conflated = 0
        #: ``gap`` frames (reason ``conflated``) sent: one per instrument per conflated chunk.
        self.gaps_sent = 0
        #: Ticks dropped because the client was closed over budget (or when it closed).
        self.dropped = 0
        #: Set once the budget cannot be kept: nothing is queued any more, the writer closes.
        self.over_budget = False
        self.instruments: frozenset[str] = frozenset()
        #: Bytes :meth:`take` handed out (to the client's socket), since the client came.
        self.sent = 0
        #: ``recv_ts`` of the oldest tick the last :meth:`take` handed out (None: no tick in it).
        self.oldest: int | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: Set while the client's writer sleeps and a flusher writes for it
        #: (:class:`mdgate._serve.writer.Flusher`): called instead of waking the writer.
        self.direct: Callable[[ClientOutbox], None] | None = None

    def _wakeup(self) -> None:
        direct = self.direct
        if direct is not None:
            direct(self)
            return
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def hand_back(self) -> None:
        """Stop :attr:`direct` writes and wake the writer (a socket to wait for, a client to close)."""
        self.direct = None
        self._wakeup()

    def control(self, payload: bytes | Shared) -> None:
        """Queue a control frame (subscribed, snapshot, error...); ignored once over budget."""
        if self.over_budget:
            return
        self.queue.append(payload)
        self.nbytes += _size(payload)
        if self.nbytes + self.in_flight > self.budget:
            self._relieve()
        self._wakeup()

    def hold(self) -> Barrier:
        """Queue a :class:`Barrier`: what is queued after it waits until :meth:`release`."""
        barrier = Barrier()
        self.queue.append(barrier)
        return barrier

    def pass_through(self, barrier: Barrier, payloads: list[bytes | Shared]) -> None:
        """Queue control frames at ``barrier`` (sent before what waits behind it)."""
        if self.over_budget:
            return
        barrier.frames.extend(payloads)
        size = sum(map(_size, payloads))
        barrier.nbytes += size
        self.nbytes += size
        if self.nbytes + self.in_flight > self.budget:
            self._relieve()
        self._wakeup()

    def release(self, barrier: Barrier) -> None:
        """Let what waits behind ``barrier`` flow (once its own frames are sent)."""
        barrier.done = True
        self._wakeup()

    def ready(self) -> bool:
        """Something can be taken now (nothing held back by a resume's barrier)."""
        queue = self.queue
        if not queue:
            return False
        head = queue[0]
        return head.__class__ is not Barrier or bool(head.frames) or head.done

    def push(self, frames: list[bytes], ticks: list[Tick], nbytes: int) -> None:
        """
        Queue shared tick frames (``nbytes`` long in all); conflate when the
        client lags past the tick limit or the byte budget.
        """
        if self.over_budget:
            return
        lagging = self.pending_ticks > 0
        self.queue.append(_Chunk(frames, ticks, nbytes))
        self.pending_ticks += len(ticks)
        self.nbytes += nbytes
        if lagging and (self.pending_ticks > self.limit or self.nbytes + self.in_flight > self.budget):
            self._relieve()
        self._wakeup()

    def _relieve(self) -> None:
        if self.pending_ticks > self.limit or self.nbytes + self.in_flight > self.budget:
            self._conflate()
        if self.nbytes + self.in_flight > self.budget:
            self.dropped += self.pending_ticks
            self.drop()
            self.over_budget = True

    def _conflate(self) -> None:
        latest: dict[str, Tick] = {}
        gaps: dict[str, list[int]] = {}
        kept: deque[bytes | Shared | _Chunk | Barrier] = deque()
        total = 0
        tick_bytes = 0
        for entry in self.queue:
            if isinstance(entry, _Chunk):
                total += len(entry.ticks)
                tick_bytes += entry.nbytes
                for inst, (first, last) in (entry.gaps or {}).items():
                    _widen(gaps, inst, first, last)
                for tick in entry.ticks:
                    dropped = latest.pop(tick.instrument, None)
                    if dropped is not None:
                        _widen(gaps, tick.instrument, dropped.ts, dropped.ts)
                    latest[tick.instrument] = tick
            else:
                kept.append(entry)
        if not total:
            return
        ticks = list(latest.values())
        estimate = -(-tick_bytes * len(ticks) // total)
        kept.append(_Chunk(None, ticks, estimate, gaps))
        self.conflated += total - len(ticks)
        self.pending_ticks = len(ticks)
        self.nbytes += estimate - tick_bytes
        self.queue = kept

    def _gap_frames(self, gaps: dict[str, list[int]]) -> list[bytes]:
        self.gaps_sent += len(gaps)
        out = []
        for inst, (first, last) in gaps.items():
            payload = _encode_list({"type": "gap", "instrument": inst, "from_ts": first, "to_ts": last,
                                    "reason": "conflated"})
            out.append(text_header(len(payload)) + payload if self.framed else payload)
        return out

    def drop(self) -> None:
        """Forget everything queued (the client is being closed)."""
        self.queue.clear()
        self.pending_ticks = 0
        self.nbytes = 0

    async def wait(self) -> None:
        """Wait until something is queued (asyncio: the server runs on websockets.asyncio)."""
        if self.ready() or self.over_budget:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, max_bytes: int | None = None) -> list[bytes]:
        """
        Return queued frames, in order (framed if :attr:`framed`), and remove them.

        With ``max_bytes``, stop after the entry that reaches it (at least one
        entry is taken): the rest stays queued, where it can still be conflated
        or dropped. The list may be shared with other clients: do not change it.
        """
        queue = self.queue
        if len(queue) == 1:  # the idle client's usual case: one batch's shared frames, as they are
            entry = queue[0]
            if type(entry) is _Chunk and entry.frames is not None:  # (a conflated one has none)
                queue.clear()
                held = entry.ticks
                self.nbytes -= entry.nbytes
                self.pending_ticks -= len(held)
                self.sent += entry.nbytes
                self.oldest = held[0].recv_ts if held else None
                return entry.frames
        out: list[bytes] = []
        framed, per_frame = self.framed, self.max_per_frame
        room = float("inf") if max_bytes is None else max_bytes
        taken = ticks = 0
        oldest = None
        while queue and (taken < room or not out):
            entry = queue[0]
            if entry.__class__ is Barrier:
                assert isinstance(entry, Barrier)
                if entry.frames:
                    payload = entry.frames.popleft()
                    if isinstance(payload, Shared):
                        out.append(payload.data)
                        size = len(payload.data)
                    else:
                        out.append(text_header(len(payload)) + payload if framed else payload)
                        size = len(payload)
                    taken += size
                    entry.nbytes -= size
                    continue
                if not entry.done:
                    break  # a resume is being prepared: what is behind it waits
                queue.popleft()
                continue
            queue.popleft()
            if isinstance(entry, _Chunk):
                if oldest is None and entry.ticks:
                    oldest = entry.ticks[0].recv_ts  # a batch is in arrival order: its first is the oldest
                if entry.gaps:  # what conflation dropped, before the ticks that replaced it
                    out.extend(self._gap_frames(entry.gaps))
                frames = entry.frames
                out.extend(frames if frames is not None else _frames(entry.ticks, per_frame, framed))
                taken += entry.nbytes
                ticks += len(entry.ticks)
            elif isinstance(entry, Shared):
                out.append(entry.data)
                taken += len(entry.data)
            else:
                assert isinstance(entry, bytes)
                out.append(text_header(len(entry)) + entry if framed else entry)
                taken += len(entry)
        self.nbytes -= taken
        self.pending_ticks -= ticks
        self.sent += taken
        self.oldest = oldest
        return out


class Fanout:
    """Routes tick batches to the outboxes of the clients that want them."""

    def __init__(self, max_per_frame: int = 1000, *, framed: bool = False) -> None:
        self.max_per_frame = max_per_frame
        #: Build frames with their WebSocket header (no permessage-deflate).
        self.framed = framed
        # subscription set -> clients having exactly that set
        self._groups: dict[frozenset[str], set[ClientOutbox]] = {}
        # instrument -> subscription sets containing it
        self._by_instrument: dict[str, set[frozenset[str]]] = {}
        self.published = 0
        #: Moves on with every batch published: what was read from the latest-tick table before
        #: it moved may be stale (the pipeline advances the table, then publishes).
        self.generation = 0

    def shared(self, payload: bytes) -> Shared:
        """``payload`` as a :class:`Shared` control frame (framed once if this fan-out frames)."""
        return Shared(text_header(len(payload)) + payload if self.framed else payload)

    def set_instruments(self, client: ClientOutbox, instruments: frozenset[str]) -> None:
        """
        Change the set of instruments ``client`` receives. Clients with equal
        sets hold the one set object (the first registered).
        """
        old = client.instruments
        if old == instruments:
            return
        group = self._groups.get(instruments)
        if group:
            instruments = next(iter(group)).instruments  # the one set object of this group
        if old:
            group = self._groups.get(old)
            if group is not None:
                group.discard(client)
                if not group:
                    del self._groups[old]
                    for inst in old:
                        sigs = self._by_instrument.get(inst)
                        if sigs is not None:
                            sigs.discard(old)
                            if not sigs:
                                del self._by_instrument[inst]
        client.instruments = instruments
        if instruments:
            group = self._groups.get(instruments)
            if group is None:
                group = self._groups[instruments] = set()
                for inst in instruments:
                    self._by_instrument.setdefault(inst, set()).add(instruments)
            group.add(client)

    def announce(self, instrument: str, payload: bytes) -> int:
        """Queue a control frame for every client subscribed to ``instrument``; return how many."""
        n = 0
        for sig in self._by_instrument.get(instrument, ()):
            for client in self._groups[sig]:
                client.control(payload)
                n += 1
        return n

    def publish(self, batch: list[Tick]) -> None:
        """Queue ``batch`` for every client that wants some of it (never blocks)."""
        self.generation += 1
        by_instrument = self._by_instrument
        if not by_instrument:
            return
        per_sig: dict[frozenset[str], list[Tick]] = {}
        for tick in batch:
            sigs = by_instrument.get(tick.instrument)
            if not sigs:
                continue
            for sig in sigs:
                lst = per_sig.get(sig)
                if lst is None:
                    per_sig[sig] = [tick]
                else:
                    lst.append(tick)
        n, framed = self.max_per_frame, self.framed
        for sig, ticks in per_sig.items():
            frames = _frames(ticks, n, framed)
            size = sum(map(len, frames))
            for client in self._groups[sig]:
                client.push(frames, ticks, size)
            self.published += len(ticks)
