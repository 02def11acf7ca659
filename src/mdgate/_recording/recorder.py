"""
``mdgate record``: keep a copy of everything the provider connections see.

:class:`Recorder` is a session *tap* (:class:`mdgate._providers.transport.Tap`):
it opens the real upstream connection and wraps the transport and the
decoder, so that every frame received is recorded with the very receive
time the decoder is given, and every frame sent, every code tracked or
untracked, every open and every close (with why) is recorded too. Records
are buffered in memory and written once a second, encoded and compressed
in a worker thread (:class:`~mdgate._recording.format.RecordingWriter`);
the tick path pays one ``Record`` and one list append per frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from mdgate._errors import ProviderError
from mdgate._provider import Decoder, Frame, Transport
from mdgate._providers.faults import secret_values
from mdgate._providers.transport import open_upstream
from mdgate._recording.format import Record, RecordingWriter

__all__ = ["Recorder"]

log = structlog.get_logger(__name__)

#: Seconds between writes of the buffered records.
FLUSH_INTERVAL = 1.0
#: Payload bytes buffered before a write is due sooner.
CHUNK_BYTES = 4 * 1024 * 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Recorder:
    """Records every provider connection of a gateway into one recording directory."""

    def __init__(self, writer: RecordingWriter, *, clock: Callable[[], int] = _now_ms) -> None:
        self.writer = writer
        self.clock = clock
        self._due = anyio.Event()
        #: Per provider, the secret values of its configuration: masked in what is recorded.
        self._secrets: dict[str, list[str]] = {}
        #: Records written so far (frames included).
        self.records = 0
        self.frames = 0

    # -- the tap -------------------------------------------------------------

    def add(self, record: Record) -> None:
        """Buffer one record (written within :data:`FLUSH_INTERVAL`)."""
        self.writer.add(record)
        if self.writer.buffered_bytes >= CHUNK_BYTES:
            self._due.set()

    async def open(
        self, provider: str, connect: Callable[..., object], config: object, index: int,
    ) -> tuple[Transport, object, str]:
        """Open the real connection; record that it opened, or why it could not."""
        self._secrets[provider] = [v for v in secret_values(config) if len(v) >= 4]
        try:
            transport, ep, url = await open_upstream(provider, connect, config, index)
        except ProviderError as exc:
            self.add(Record(self.clock(), "close", provider, index, self.masked(provider, exc.message),
                            _code(exc)))
            raise
        self.add(Record(self.clock(), "open", provider, index, url))
        return transport, ep, url

    def masked(self, provider: str, data: Any) -> Any:
        """``data`` (a frame sent, a reason) with the provider's secrets replaced by ``***``."""
        for secret in self._secrets.get(provider, ()):
            if isinstance(data, str):
                data = data.replace(secret, "***")
            elif isinstance(data, bytes | bytearray | memoryview):
                data = bytes(data).replace(secret.encode(), b"***")
        return data

    def wrap(self, provider: str, index: int, transport: Transport, decoder: Decoder,
             fault: Callable[[], BaseException | None] | None = None) -> tuple[Transport, Decoder]:
        """Record what crosses this connection (``fault()``: what ended it, once it ends)."""
        return _RecordingTransport(self, provider, index, transport, fault), _RecordingDecoder(
            self, provider, index, decoder)

    # -- writing -------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write the buffered records every second (sooner when much is buffered) until cancelled."""
        task_status.started()
        log.info("recording_started", directory=str(self.writer.directory))
        while True:
            with anyio.move_on_after(FLUSH_INTERVAL):
                await self._due.wait()
            self._due = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Encode, compress and write what is buffered, in a worker thread."""
        records = self.writer.take()
        if records:
            await anyio.to_thread.run_sync(self.writer.write_chunk, records)

    def close(self) -> None:
        """Write the rest and the index (at shutdown)."""
        self.writer.close()
        index = self.writer.index()
        log.info("recording_closed", directory=str(self.writer.directory), records=index["records"],
                 frames=index["frames"], segments=len(index["segments"]))


def _code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int | str) else None


class _RecordingTransport:
    """
    Records frames sent, and why the connection ended when it is closed.
    Receiving is the inner transport's own ``recv`` (frames are recorded by
    the decoder wrapper, with their receive time): no extra await per frame.
    """

    __slots__ = ("_closed", "_fault", "_rec", "conn", "inner", "provider", "recv")

    def __init__(self, rec: Recorder, provider: str, conn: int, inner: Transport,
                 fault: Callable[[], BaseException | None] | None) -> None:
        self._rec, self.provider, self.conn, self.inner = rec, provider, conn, inner
        self._fault = fault
        self._closed = False
        self.recv = inner.recv

    async def send(self, frame: Frame) -> None:
        # a handshake frame may carry credentials: the provider's secrets never reach a recording
        rec = self._rec
        rec.add(Record(rec.clock(), "send", self.provider, self.conn, rec.masked(self.provider, frame)))
        await self.inner.send(frame)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            exc = self._fault() if self._fault is not None else None
            if isinstance(exc, ProviderError):
                why, code = exc.message, _code(exc)
            elif exc is not None:
                why, code = f"{type(exc).__name__}: {exc}"[:300], None
            else:
                why, code = "closed by the gateway", None
            why = self._rec.masked(self.provider, why)
            self._rec.add(Record(self._rec.clock(), "close", self.provider, self.conn, why, code))
        await self.inner.aclose()


class _RecordingDecoder:
    """Records every frame with the receive time it is decoded with, and the codes tracked."""

    __slots__ = ("_append", "_feed", "_rec", "conn", "inner", "provider")

    def __init__(self, rec: Recorder, provider: str, conn: int, inner: Decoder) -> None:
        self._rec, self.provider, self.conn, self.inner = rec, provider, conn, inner
        self._append = rec.writer.append
        self._feed = inner.feed

    def track(self, code: str, instrument: str) -> None:
        self._rec.add(Record(self._rec.clock(), "track", self.provider, self.conn, code, instrument))
        self.inner.track(code, instrument)

    def untrack(self, code: str) -> None:
        self._rec.add(Record(self._rec.clock(), "untrack", self.provider, self.conn, code))
        self.inner.untrack(code)

    def feed(self, frame: Frame, recv_ts: int) -> Any:
        self._append((recv_ts, "frame", self.provider, self.conn, frame))  # encoded as a Record
        return self._feed(frame, recv_ts)

    def __getattr__(self, name: str) -> Any:  # anything else a plugin's decoder offers
        return getattr(self.inner, name)
