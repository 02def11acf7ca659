"""
A client's last frame is not kept after it is handled (memory per client flat): against a real
gateway, over real sockets, with requests that arrive whole, fragmented and split mid-frame.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from websockets.frames import Frame, Opcode

from mdgate._serve.limits import RELEASE_AFTER
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio

NAMES = ["EXAMPLE:ACME", "EXAMPLE:BOLT"] * 400  # one request of ~12 KB


def _frames_held(gw: Any) -> list[int]:
    """Sizes of the frames the gateway's connections still hold in their parsers (>= RELEASE_AFTER)."""
    held = []
    for conn in gw.gateway.server.server.connections:
        gen: Any = conn.protocol.parser
        while gen is not None:
            for value in (gen.gi_frame.f_locals if gen.gi_frame else {}).values():
                if isinstance(value, Frame) and len(value.data) >= RELEASE_AFTER:
                    held.append(len(value.data))
            gen = getattr(gen, "gi_yieldfrom", None)
    return held


async def _settle() -> None:
    await anyio.sleep(0.05)


async def test_a_large_request_is_not_kept_after_it_is_handled(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        request = json.dumps({"op": "subscribe", "instruments": NAMES})
        assert len(request) > 2 * RELEASE_AFTER
        await c.send(request)
        assert (await c.recv())["instruments"] == ["EXAMPLE:ACME", "EXAMPLE:BOLT"]
        await _settle()
        assert _frames_held(gw) == []
        # the connection goes on parsing: a small request and a large one after it
        await c.send({"op": "unsubscribe", "instruments": ["EXAMPLE:BOLT"]})
        while (m := await c.recv())["type"] != "unsubscribed":
            pass
        await c.send(request)
        while (m := await c.recv())["type"] != "subscribed":
            pass
        assert m["instruments"] == ["EXAMPLE:ACME", "EXAMPLE:BOLT"]


async def test_a_fragmented_request_survives_a_release_between_its_fragments(feed, make_settings):
    text = json.dumps({"op": "subscribe", "instruments": NAMES})
    cut = RELEASE_AFTER * 2

    async def fragments() -> AsyncIterator[str]:
        yield text[:cut]
        await anyio.sleep(0.1)  # the first fragment is read (and released) on its own
        yield text[cut:]

    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.ws.send(fragments())
        assert (await c.recv())["instruments"] == ["EXAMPLE:ACME", "EXAMPLE:BOLT"]
        assert gw.status()["server"]["internal_errors"] == 0


def _handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    return sock


def _messages(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """Unmasked text frames from the server, decoded (small frames, no fragmentation)."""
    buf = b""
    while True:
        while len(buf) < 4 or len(buf) < _frame_len(buf):
            buf += sock.recv(65536)
        n = _frame_len(buf)
        length, start = buf[1] & 0x7F, 2
        if length == 126:
            start = 4
        elif length == 127:
            start = 10
        yield json.loads(buf[start:n])
        buf = buf[n:]


def _frame_len(buf: bytes) -> int:
    length = buf[1] & 0x7F
    if length == 126:
        return 4 + int.from_bytes(buf[2:4], "big")
    if length == 127:
        return 10 + int.from_bytes(buf[2:10], "big")
    return 2 + length


async def test_a_read_that_ends_inside_a_frame_keeps_the_parser(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw:
        sock = await anyio.to_thread.run_sync(_handshake, gw.port)
        try:
            request = json.dumps({"op": "subscribe", "instruments": NAMES}).encode()
            data = Frame(Opcode.TEXT, request).serialize(mask=True, extensions=[])
            first = RELEASE_AFTER + 100  # one read larger than RELEASE_AFTER, the frame not complete
            await anyio.to_thread.run_sync(sock.sendall, data[:first])
            await anyio.sleep(0.2)
            await anyio.to_thread.run_sync(sock.sendall, data[first:])
            reply = await anyio.to_thread.run_sync(next, _messages(sock))
            assert reply["type"] == "subscribed", reply
            assert reply["instruments"] == ["EXAMPLE:ACME", "EXAMPLE:BOLT"]
        finally:
            sock.close()
