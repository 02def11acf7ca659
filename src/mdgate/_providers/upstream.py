"""
The provider WebSocket, on picows (a WebSocket protocol written in Cython).

Receiving is the first step of every tick, and at a real provider's rate
every frame arrives alone: what it costs per frame is what the gateway
costs per tick. picows parses frames in C inside the event loop's read
callback and hands each one to a listener, without a task, a future or a
copy in between; this module turns its frames into the messages of
:class:`mdgate._provider.Transport`, two ways:

* pulled: :meth:`UpstreamWebSocket.recv` returns the next message (what
  wrappers such as the recorder use);
* pushed: :meth:`UpstreamWebSocket.set_sink` hands every message to a
  function called right inside the read callback. The connection loop uses
  it: one frame is decoded and queued without a task switch (see
  ``docs/architecture.md``, "Receive path").

Either way reading pauses (TCP back-pressure on the provider) while the
consumer is behind: above :data:`PULL_HIGH` messages waiting in pull mode,
and when the sink's owner calls :meth:`~UpstreamWebSocket.pause_reading`.
Fragmented messages are reassembled (bounded by ``max_size``), pings
answered, and a silent peer pinged every ``ping_interval`` seconds of
silence. Every way a connection ends becomes one typed
:class:`~mdgate._errors.ProviderConnectionError` with the peer's close code
and reason when it sent one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Final

import anyio
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from mdgate._errors import ProviderConnectionError
from mdgate._provider import Frame

__all__ = ["PULL_HIGH", "PULL_LOW", "UpstreamWebSocket"]

#: Messages waiting for :meth:`UpstreamWebSocket.recv` above which reading pauses, and below
#: which it resumes.
PULL_HIGH: Final = 256
PULL_LOW: Final = 64
#: Close codes of the WebSocket protocol this side sends.
CLOSE_OK: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009

_TEXT, _BINARY, _CONT, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.CLOSE


class UpstreamWebSocket(WSListener):
    """
    A connected provider WebSocket implementing :class:`mdgate._provider.Transport`
    (``str`` messages are text frames, ``bytes`` binary ones).

    Made by picows as the connection's listener (:func:`mdgate._providers.transport.open_websocket`).

    Args:
        provider: the provider's name, for errors.
        max_size: the largest message accepted, in bytes (a larger one closes the connection with 1009).
    """

    def __init__(self, provider: str, max_size: int) -> None:
        super().__init__()
        self.provider = provider
        self.max_size = max_size
        self._ws: WSTransport | None = None
        self._pending: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[Frame], None] | None = None
        self._on_end: Callable[[], None] | None = None
        self._burst: Callable[[], None] | None = None
        self._burst_due = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Fragments of a message being reassembled, and its type.
        self._parts: list[bytes] | None = None
        self._kind = _TEXT
        self._size = 0
        #: (code, reason) of the peer's close frame, once received.
        self._peer_close: tuple[int, str] | None = None
        #: Why this side is closing (a protocol fault of the peer), if it is.
        self._fault: str | None = None
        self._paused = False
        #: True once the connection is gone.
        self.ended = False

    # ----------------------------------------------------------------- picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._ws = transport
        self._loop = asyncio.get_running_loop()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if self._parts is None and frame.fin:  # the usual case: a whole message in one frame
            if kind is _TEXT:
                try:
                    self._deliver(frame.get_payload_as_utf8_text())
                except UnicodeDecodeError:
                    self._protocol_fault(CLOSE_INVALID_DATA, "invalid UTF-8 in a text frame")
            elif kind is _BINARY:
                self._deliver(frame.get_payload_as_bytes())
            else:
                self._control(kind, frame)
        else:
            self._control(kind, frame)
        if frame.last_in_buffer:
            self._burst_due = False
            burst = self._burst
            if burst is not None:
                burst()
        elif not self._burst_due and self._burst is not None and self._loop is not None:
            # picows answers a PING (and takes its own ping's PONG) without this listener: a
            # read that ends with one has no last frame here, so its burst comes from the loop
            self._burst_due = True
            self._loop.call_soon(self._late_burst)

    def _late_burst(self) -> None:
        if self._burst_due:  # else the read's last frame came here and burst already
            self._burst_due = False
            burst = self._burst
            if burst is not None:
                burst()

    def _control(self, kind: WSMsgType, frame: WSFrame) -> None:
        if kind is _CLOSE:
            self._closed_by_peer(frame.get_payload_as_bytes())
        elif kind is _TEXT or kind is _BINARY:
            if self._parts is not None:
                self._protocol_fault(CLOSE_PROTOCOL_ERROR, "a new message began inside a fragmented one")
            else:
                self._parts, self._kind, self._size = [], kind, 0
                self._fragment(frame)
        elif kind is _CONT:
            if self._parts is None:
                self._protocol_fault(CLOSE_PROTOCOL_ERROR, "continuation outside a fragmented message")
            else:
                self._fragment(frame)
        # PING is answered by picows (auto pong), PONG consumed by its auto ping

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.ended = True
        self._wake()
        on_end = self._on_end
        if on_end is not None:
            on_end()

    # ----------------------------------------------------------------- messages

    def _fragment(self, frame: WSFrame) -> None:
        parts = self._parts
        assert parts is not None
        self._size += frame.payload_size
        if self._size > self.max_size:
            self._protocol_fault(CLOSE_TOO_BIG, f"message over max_size ({self.max_size} bytes)")
            return
        parts.append(frame.get_payload_as_bytes())
        if frame.fin:
            data, self._parts = b"".join(parts), None
            if self._kind is _BINARY:
                self._deliver(data)
                return
            try:
                self._deliver(data.decode())
            except UnicodeDecodeError:
                self._protocol_fault(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")

    def _deliver(self, message: Frame) -> None:
        sink = self._sink
        if sink is not None:
            sink(message)
            return
        pending = self._pending
        pending.append(message)
        if len(pending) >= PULL_HIGH and not self._paused:
            self.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _closed_by_peer(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self._peer_close = (code, payload[2:].decode(errors="replace"))
        ws = self._ws
        if ws is not None:  # answer the close (RFC 6455 5.5.1), then the peer drops the TCP connection
            ok = 1000 <= code < 5000 and code not in (1005, 1006, 1015)
            ws.send_close(WSCloseCode(code if ok else CLOSE_OK))
            ws.disconnect()

    def _protocol_fault(self, code: int, why: str) -> None:
        self._parts = None
        if self._fault is not None:  # closing already: the first fault tells why
            return
        self._fault = why
        ws = self._ws
        if ws is not None:
            ws.send_close(WSCloseCode(code))
            ws.disconnect()

    # ----------------------------------------------------------------- Transport

    def set_sink(
        self, sink: Callable[[Frame], None], on_end: Callable[[], None],
        burst: Callable[[], None] | None = None,
    ) -> None:
        """
        Hand every message, from now on, to ``sink`` (called inside the read callback:
        it must not block; what it raises closes the connection), call ``burst`` after the
        last message of each socket read (in the read callback, or at the loop's next
        iteration when picows took the read's last frame itself), and ``on_end`` once the
        connection is gone. Messages already received go to ``sink`` first, then ``burst``.
        """
        self._on_end = on_end
        self._burst = burst
        # resumed first: what the sink does with the messages below (pause, if its queue is
        # full) stands, and nothing new arrives before they are handed over
        self.resume_reading()
        pending = self._pending
        if pending:
            while pending:
                sink(pending.popleft())
            if burst is not None:
                burst()
        self._sink = sink
        if self.ended:
            on_end()

    def pause_reading(self) -> None:
        """Stop reading from the socket (the provider's sends back up in TCP) until :meth:`resume_reading`."""
        ws = self._ws
        if ws is not None and not self._paused and not self.ended:
            self._paused = True
            ws.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again."""
        ws = self._ws
        if ws is not None and self._paused:
            self._paused = False
            if not self.ended:
                ws.underlying_transport.resume_reading()

    async def send(self, frame: Frame) -> None:
        """Send one message (text for ``str``, binary for ``bytes``)."""
        ws = self._ws
        if ws is None or self.ended or ws.is_close_frame_sent:
            raise self.end_error()
        if isinstance(frame, str):
            ws.send(_TEXT, frame.encode())
        else:
            ws.send(_BINARY, frame)

    async def recv(self) -> Frame:
        """Return the next message (raise :class:`ProviderConnectionError` once the connection is gone)."""
        pending = self._pending
        while not pending:
            if self.ended:
                raise self.end_error()
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            await waiter
        if self._paused and len(pending) <= PULL_LOW:
            self.resume_reading()
        return pending.popleft()

    def end_error(self) -> ProviderConnectionError:
        """The typed error that tells how the connection ended (or is ending)."""
        peer, provider = self._peer_close, self.provider
        if self._fault is not None:
            return ProviderConnectionError(provider, f"protocol error: {self._fault}")
        if peer is None:
            return ProviderConnectionError(provider, "connection dropped (no close frame)")
        code, reason = peer
        if code in (1000, 1001, 1005) and not reason:
            return ProviderConnectionError(provider, f"server closed the connection (code {code})")
        why = f"{code}, {reason}" if reason else str(code)
        return ProviderConnectionError(provider, f"connection closed (code {why})")

    async def aclose(self) -> None:
        """Close with 1000, giving up (dropping the TCP connection) after one second."""
        ws = self._ws
        if ws is None:
            return
        if not self.ended:
            if not ws.is_close_frame_sent:
                ws.send_close(WSCloseCode(CLOSE_OK))
            with anyio.move_on_after(1.0, shield=True):
                with contextlib.suppress(Exception):  # any end will do
                    await ws.wait_disconnected()
        ws.disconnect(graceful=False)
