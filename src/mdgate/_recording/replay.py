"""
``mdgate replay``: a recording played back through the real decoders and the whole pipeline.

:class:`Replayer` is a session *tap* (:class:`mdgate._providers.transport.Tap`)
that opens no connection: each provider connection gets a
:class:`_ReplayTransport` that hands out the recorded frames of that
provider and connection index, and a decoder wrapper that decodes each one
with its *recorded* receive time (shifted by a fixed offset with ``now``),
so that a replay gives the ticks the recording session gave, byte for byte.

Order and timing:

* one cursor walks the recording for every connection: a frame is handed
  out only when every earlier record has been, so ticks come out in the
  recorded order across connections too;
* a frame is held until the decoder tracks the codes the recorded
  connection had tracked at that point (the session subscribes on its own
  schedule), at most :data:`CLAIM_TIMEOUT` seconds;
* frame ``t`` is due at ``start + (t - t0) / speed`` on the monotonic clock
  (absolute, so the pace never drifts); ``speed=None`` is as fast as the
  pipeline takes them;
* a recorded ``close`` ends the replayed connection at the same point with
  the recorded reason, so the session reconnects as it did;
* a frame of a connection the replay never opens is skipped after
  :data:`CLAIM_TIMEOUT` seconds (counted in :attr:`Replayer.skipped`);
* at the end, with ``loop``, the recording starts again with every receive
  time shifted past the previous pass; without, each connection is
  disabled ("replay finished") and :attr:`Replayer.finished` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import msgspec

from mdgate._errors import ProviderConnectionError, ProviderDisabled, ProviderError
from mdgate._model import Tick
from mdgate._provider import Decoder, Frame, Transport
from mdgate._recording.format import Record, read_records

__all__ = ["CLAIM_TIMEOUT", "Replayer", "recorded_instruments"]

#: Seconds a frame waits for its connection to open (and track its codes) before it is skipped.
CLAIM_TIMEOUT: Final = 3.0
#: As fast as possible: hand the loop back after this many frames.
_YIELD_EVERY: Final = 64
#: Milliseconds between the end of one pass and the start of the next (``loop``).
LOOP_GAP_MS: Final = 1000

_Key = tuple[str, int]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def recorded_instruments(directory: str | Path) -> dict[str, list[str]]:
    """Every provider in the recording -> the instruments its connections tracked, in first-seen order."""
    return _survey(directory)[0]


def _survey(directory: str | Path) -> tuple[dict[str, list[str]], dict[_Key, int]]:
    """
    One pass over a recording: :func:`recorded_instruments`, and per connection
    the position (among frames and closes) of its last record.
    """
    out: dict[str, dict[str, None]] = {}
    final: dict[_Key, int] = {}
    pos = -1
    for r in read_records(directory):
        names = out.setdefault(r.provider, {})
        if r.kind == "track" and isinstance(r.extra, str):
            names[r.extra] = None
        elif r.kind in ("frame", "close"):
            pos += 1
            final[(r.provider, r.conn)] = pos
    return {p: list(names) for p, names in out.items()}, final


class Replayer:
    """Plays one recording back to the provider sessions it is tapped into."""

    def __init__(
        self, directory: str | Path, *, speed: float | None = 1.0, loop: bool = False, now: bool = False,
        clock: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        """
        Args:
            directory: the recording.
            speed: 1 = as recorded, N = N times faster, None = as fast as possible.
            loop: start again at the end, for ever.
            now: shift receive times so that the recording's first frame is "now".
            clock: monotonic seconds (tests pass a fake).
            wall_ms: epoch milliseconds (``now``).
        """
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None: as fast as possible)")
        self.directory = Path(directory)
        #: Provider name -> instruments tracked, for every provider in the recording; and per
        #: connection, the position (among frames and closes) of its last record.
        self.instruments, self._final = _survey(self.directory)
        self.providers = frozenset(self.instruments)
        self._pos = -1
        self.speed, self.loop, self.now = speed, loop, now
        self.clock, self.wall_ms = clock, wall_ms
        self.finished = anyio.Event()
        #: Frames handed out, and frames skipped (their connection never opened in the replay).
        self.frames = 0
        self.skipped = 0
        #: Completed passes over the recording.
        self.passes = 0
        self._records: Iterator[Record] = iter(())
        self._head: Record | None = None
        self._changed = anyio.Event()
        self._open: dict[_Key, _ReplayTransport] = {}
        self._expected: dict[_Key, set[str]] = {}
        self._t0: int | None = None
        self._start: float | None = None
        self._pass_ms = 0
        self._last_t = 0
        self._restart()

    # -- the cursor ------------------------------------------------------------

    def _restart(self) -> None:
        self._records = read_records(self.directory)
        self._pos = -1
        self._expected.clear()
        self._advance()

    def _advance(self) -> None:
        """Move to the next record a transport must claim (frames and closes); apply the others."""
        for r in self._records:
            key = (r.provider, r.conn)
            if r.kind == "track":
                self._expected.setdefault(key, set()).add(str(r.data))
            elif r.kind == "untrack":
                self._expected.get(key, set()).discard(str(r.data))
            elif r.kind == "open":
                self._expected[key] = set()
            elif r.kind in ("frame", "close"):
                self._pos += 1
                self._head = r
                self._last_t = max(self._last_t, r.t)
                break
        else:
            self._head = None
            if not self.loop:
                self.finished.set()  # nothing left to claim: even a final close ends the replay
        self.notify()

    def notify(self) -> None:
        """Wake every connection waiting for its turn (something changed)."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _next_pass(self) -> bool:
        """At the end of the recording: start the next pass (``loop``) or finish."""
        if not self.loop or self._t0 is None:
            self.finished.set()
            return False
        self.passes += 1
        self._pass_ms = self._last_t - self._t0 + LOOP_GAP_MS + self._pass_ms
        self._restart()
        return self._head is not None

    def _due(self, t: int) -> float:
        """Monotonic time frame ``t`` is due at (speed None: now)."""
        if self._t0 is None or self._start is None:
            self._t0, self._start = t, self.clock()
        if self.speed is None:
            return 0.0
        return self._start + (t - self._t0 + self._pass_ms) / 1000 / self.speed

    def shift(self, t: int) -> int:
        """
        Milliseconds added to the times of the ticks of the frame recorded at
        ``t``: with ``now``, what makes its receipt now; else 0 in the first
        pass and the length of the earlier passes after it (``loop``).
        """
        if self.now:
            return self.wall_ms() - t
        return self._pass_ms

    def recv_ts(self, t: int) -> int:
        """The receive time the ticks of the frame recorded at ``t`` carry."""
        return t + self.shift(t)

    async def claim(self, transport: _ReplayTransport) -> Record:
        """Wait for the next record of ``transport``'s connection and take it (frames and closes)."""
        key = transport.key
        while True:
            head = self._head
            if head is None and not self._next_pass():
                raise ProviderDisabled(key[0], "replay finished")
            head = self._head
            assert head is not None
            if (head.provider, head.conn) == key and self._ready(transport, head):
                delay = self._due(head.t) - self.clock()
                if delay > 0:
                    await anyio.sleep(delay)
                elif self.speed is None and self.frames % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
                if self._head is head:  # nobody took it meanwhile
                    final = self._final.get(key) == self._pos
                    self._advance()
                    if final and head.kind == "close" and not self.loop:
                        # the connection's recorded end (the recording session stopped): no reconnect
                        raise ProviderDisabled(key[0], "replay finished")
                    return head
                continue
            changed = self._changed
            with anyio.move_on_after(CLAIM_TIMEOUT) as scope:
                await changed.wait()
            if scope.cancelled_caught and self._head is head:
                self._skip(head)

    def _ready(self, transport: _ReplayTransport, head: Record) -> bool:
        """A frame waits until the connection tracks what the recorded one tracked."""
        if head.kind != "frame":
            return True
        expected = self._expected.get(transport.key, set())
        return expected <= transport.tracked or transport.waited(self.clock())

    def _skip(self, head: Record) -> None:
        owner = self._open.get((head.provider, head.conn))
        if owner is not None and self._ready(owner, head):
            return  # its connection is open and will take it
        if head.kind == "frame":
            self.skipped += 1
        self._advance()

    # -- the tap ---------------------------------------------------------------

    async def open(
        self, provider: str, connect: Callable[..., object], config: object, index: int,
    ) -> tuple[Transport, object, str]:
        """A replayed connection (the plugin's ``mdgate_connect`` is not called)."""
        if self.finished.is_set():
            raise ProviderDisabled(provider, "replay finished")
        transport = _ReplayTransport(self, (provider, index))
        self._open[transport.key] = transport
        self.notify()
        return transport, None, f"replay:{self.directory}"

    def wrap(self, provider: str, index: int, transport: Transport, decoder: Decoder,
             fault: Callable[[], BaseException | None] | None = None) -> tuple[Transport, Decoder]:
        """Decode with the recorded receive times; note the codes tracked."""
        assert isinstance(transport, _ReplayTransport)
        transport.decoder = decoder
        return transport, _ReplayDecoder(self, transport, decoder)


class _ReplayTransport:
    """One replayed connection: recorded frames in, sent frames ignored."""

    def __init__(self, replayer: Replayer, key: _Key) -> None:
        self.replayer = replayer
        self.key = key
        self.tracked: set[str] = set()
        self.decoder: Decoder | None = None
        #: The recorded receive time of the frame handed out last.
        self.t = 0
        self._waiting_since: float | None = None

    def waited(self, now: float) -> bool:
        """Whether a frame has waited :data:`CLAIM_TIMEOUT` for the codes to be tracked."""
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since >= CLAIM_TIMEOUT

    async def send(self, frame: Frame) -> None:
        """Frames to the provider go nowhere in a replay."""

    async def recv(self) -> Frame:
        record = await self.replayer.claim(self)
        self._waiting_since = None
        if record.kind == "close":
            self.replayer._open.pop(self.key, None)
            raise ProviderConnectionError(self.key[0], f"replayed close: {record.data}")
        self.replayer.frames += 1
        self.t = record.t
        data: Frame = record.data
        return data

    async def aclose(self) -> None:
        if self.replayer._open.get(self.key) is self:
            del self.replayer._open[self.key]


def _shifted(ticks: Any, shift: int) -> Any:
    """``ticks`` with ``ts`` and ``recv_ts`` moved by ``shift`` ms (anything else is left to the checks)."""
    if not isinstance(ticks, list | tuple):
        return ticks
    return [msgspec.structs.replace(t, ts=t.ts + shift, recv_ts=t.recv_ts + shift)
            if isinstance(t, Tick) else t for t in ticks]


class _ReplayDecoder:
    """The plugin's decoder, given each frame's recorded receive time."""

    __slots__ = ("inner", "replayer", "transport")

    def __init__(self, replayer: Replayer, transport: _ReplayTransport, inner: Decoder) -> None:
        self.replayer, self.transport, self.inner = replayer, transport, inner

    def track(self, code: str, instrument: str) -> None:
        self.inner.track(code, instrument)
        self.transport.tracked.add(code)
        self.replayer.notify()

    def untrack(self, code: str) -> None:
        self.inner.untrack(code)
        self.transport.tracked.discard(code)

    def feed(self, frame: Frame, recv_ts: int) -> Any:
        t = self.transport.t
        shift = self.replayer.shift(t)
        if not shift:
            return self.inner.feed(frame, t)  # as recorded: the same ticks, byte for byte
        # Decoded as recorded, then every time moved by the same amount: a looped or "now"
        # replay keeps each tick's latency and stays newer than the pass before.
        try:
            ticks = self.inner.feed(frame, t)
        except ProviderError as exc:
            exc.ticks = _shifted(exc.ticks, shift)
            raise
        return _shifted(ticks, shift)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
