"""
Writing clients' outboxes to their sockets.

Pre-framed clients (no permessage-deflate, the default) are written by a
:class:`Flusher`: :meth:`~mdgate._serve.fanout.Fanout.publish` only queues,
and once per event-loop iteration the flusher writes, for every client that
got something meanwhile, everything it got as one ``writelines`` (one
``send``); the pipeline's step holds it and flushes at its end, so that a
batch's clients are written in the step, without a loop call. No task is
woken per client per batch: a client's writer task sleeps while its socket
keeps up and is woken only for what takes waiting:

* the socket holds more than :data:`HIGH_WATER` bytes it has not sent, or
  more than :data:`TAKE_BYTES` is queued: the task writes on as the socket
  drains, and closes the client ("slow") when it has not drained for
  ``drain_timeout`` seconds;
* the outbox went over budget, or the connection is closing.

Every guarantee of the outbox holds as before: what a client is written
comes out of :meth:`~mdgate._serve.fanout.ClientOutbox.take` in order, at
most :data:`TAKE_BYTES` at a time, and what stays queued can still be
conflated or dropped.

With permessage-deflate websockets must build every frame:
:func:`write_ws` sends them one by one from the writer task.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from mdgate._serve.fanout import ClientOutbox

__all__ = ["DRAIN_POLL", "HIGH_WATER", "TAKE_BYTES", "Flusher", "write_framed", "write_ws"]

#: Bytes buffered in a client's socket transport before the writer waits for it to drain.
HIGH_WATER: Final = 64 * 1024
#: Bytes taken from an outbox at once (the rest stays where it can be conflated).
TAKE_BYTES: Final = 64 * 1024
#: How often a writer looks at a socket that has not drained.
DRAIN_POLL: Final = 0.005


class Flusher:
    """
    Writes the outboxes of idle pre-framed clients once per event-loop iteration.

    Args:
        observe_age: called with the age in ms of the oldest tick of each write.
    """

    def __init__(self, observe_age: Callable[[float], None]) -> None:
        self.observe_age = observe_age
        self._dirty: dict[ClientOutbox, ServerConnection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held = False
        #: Writes made by the flusher, and clients handed back to their writer task.
        self.writes = 0
        self.handed_back = 0

    def attach(self, ws: ServerConnection, outbox: ClientOutbox) -> None:
        """From now on, what is queued for ``outbox`` is written by the flusher (see :meth:`flush`)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        outbox.direct = functools.partial(self._mark, ws)

    def hold(self) -> None:
        """
        Make no loop call for what is queued from now until :meth:`flush`: the caller
        flushes before control goes back to the event loop (the pipeline's step).
        """
        self._held = True

    def _mark(self, ws: ServerConnection, outbox: ClientOutbox) -> None:
        dirty = self._dirty
        if not dirty and not self._held:
            assert self._loop is not None
            self._loop.call_soon(self.flush)
        dirty[outbox] = ws

    def flush(self) -> None:
        """Write what is queued for every client marked since the last flush (ends a :meth:`hold`)."""
        self._held = False
        dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        now = time.time() * 1000
        observe = self.observe_age
        for outbox, ws in dirty.items():
            if outbox.direct is None:
                continue  # handed back to its writer task meanwhile
            try:
                transport = ws.transport
                if outbox.over_budget or ws.protocol.state is not State.OPEN or transport.is_closing():
                    self._hand_back(outbox)
                    continue
                frames = outbox.take(TAKE_BYTES)
                if frames:
                    transport.writelines(frames)
                    self.writes += 1
                    if outbox.oldest is not None:
                        observe(now - outbox.oldest)
                outbox.in_flight = transport.get_write_buffer_size()
                if outbox.in_flight > HIGH_WATER or outbox.ready():
                    self._hand_back(outbox)  # the socket lags or there is more: the task waits for it
            except Exception:  # never into the event loop: the writer task sees the state and acts
                self._hand_back(outbox)

    def _hand_back(self, outbox: ClientOutbox) -> None:
        self.handed_back += 1
        outbox.hand_back()


async def write_framed(ws: ServerConnection, outbox: ClientOutbox, flusher: Flusher,
                       drain: Callable[[asyncio.WriteTransport, ClientOutbox], Awaitable[str | None]],
                       ) -> str | None:
    """
    The writer task of a pre-framed client: writes while the flusher cannot, sleeps
    while it can. Returns why the client must be closed ("slow", "over_budget"), None
    when it is gone.

    Frames come pre-framed (unmasked, uncompressed text frames with their header) and
    shared by every client of a subscription set: they go straight to the socket.
    websockets itself writes only whole frames (ping, pong, close), so whole frames of
    ours interleave safely; nothing is written once the connection is closing.

    Args:
        flusher: writes for this client while this task sleeps.
        drain: waits until the socket is back under :data:`HIGH_WATER`; returns
            "drained" or why the client must be closed (an awaitable).
    """
    transport = ws.transport
    while True:
        if outbox.over_budget:
            return "over_budget"
        if ws.protocol.state is not State.OPEN or transport.is_closing():
            return None
        if outbox.in_flight > HIGH_WATER:
            why = await drain(transport, outbox)
            if why != "drained":
                return why
            continue
        if outbox.ready():
            transport.writelines(outbox.take(TAKE_BYTES))
            if outbox.oldest is not None:
                flusher.observe_age(time.time() * 1000 - outbox.oldest)
            outbox.in_flight = transport.get_write_buffer_size()
            continue
        flusher.attach(ws, outbox)
        try:
            await outbox.wait()
        finally:
            outbox.direct = None


async def write_ws(ws: ServerConnection, outbox: ClientOutbox, timeout: float,
                   observe_age: Callable[[float], None]) -> str | None:
    """
    The writer task of a client with permessage-deflate: websockets builds (compresses)
    every frame. Returns why the client must be closed, None when it is gone.
    """
    while True:
        await outbox.wait()
        if outbox.over_budget:
            return "over_budget"
        frames = outbox.take(TAKE_BYTES)
        try:
            with anyio.fail_after(timeout):
                for frame in frames:
                    await ws.send(frame, text=True)
        except TimeoutError:
            return "slow"
        except ConnectionClosed:
            return None
        if outbox.oldest is not None:
            observe_age(time.time() * 1000 - outbox.oldest)
        outbox.in_flight = ws.transport.get_write_buffer_size()
