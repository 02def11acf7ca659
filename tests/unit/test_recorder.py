"""The recorder tap: what it records around a connection, and that it records the refusals too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mdgate import Endpoint, ProviderConnectionError
from mdgate._config import Secret
from mdgate._recording.format import Record, RecordingWriter, read_records
from mdgate._recording.recorder import Recorder
from mdgate.testing.redis import free_port

pytestmark = pytest.mark.anyio


class Transport:
    def __init__(self, frames: list[Any]) -> None:
        self.frames, self.sent = frames, []

    async def send(self, frame: Any) -> None:
        self.sent.append(frame)

    async def recv(self) -> Any:
        if not self.frames:
            raise ProviderConnectionError("p", "connection closed (1011 internal error)", code=1011)
        return self.frames.pop(0)

    async def aclose(self) -> None:
        return None


class Decoder:
    def __init__(self) -> None:
        self.fed: list[tuple[Any, int]] = []

    def track(self, code: str, instrument: str) -> None: ...

    def untrack(self, code: str) -> None: ...

    def feed(self, frame: Any, recv_ts: int) -> list[Any]:
        self.fed.append((frame, recv_ts))
        return []


async def test_a_connection_recorded_from_track_to_close(tmp_path: Path) -> None:
    rec = Recorder(RecordingWriter(tmp_path / "r"), clock=lambda: 5)
    inner, decoder = Transport([b"\x01", "two"]), Decoder()
    ended: list[BaseException] = []
    transport, dec = rec.wrap("p", 1, inner, decoder, lambda: ended[0] if ended else None)
    dec.track("AAA", "X:AAA")
    await transport.send('{"subscribe": ["AAA"]}')
    for recv_ts in (100, 101):
        dec.feed(await transport.recv(), recv_ts)
    with pytest.raises(ProviderConnectionError) as err:
        await transport.recv()
    ended.append(err.value)  # what the session keeps as the connection's fault
    dec.untrack("AAA")
    await transport.aclose()
    await transport.aclose()  # recorded once
    rec.close()
    assert decoder.fed == [(b"\x01", 100), ("two", 101)]  # the decoder sees what it always saw
    assert list(read_records(tmp_path / "r")) == [
        Record(5, "track", "p", 1, "AAA", "X:AAA"),
        Record(5, "send", "p", 1, '{"subscribe": ["AAA"]}'),
        Record(100, "frame", "p", 1, b"\x01"),
        Record(101, "frame", "p", 1, "two"),
        Record(5, "untrack", "p", 1, "AAA"),
        Record(5, "close", "p", 1, "connection closed (1011 internal error)", 1011),
    ]


async def test_a_connection_the_gateway_closes(tmp_path: Path) -> None:
    rec = Recorder(RecordingWriter(tmp_path / "r"), clock=lambda: 5)
    transport, _ = rec.wrap("p", 0, Transport([]), Decoder(), lambda: None)
    await transport.aclose()
    rec.close()
    assert list(read_records(tmp_path / "r")) == [Record(5, "close", "p", 0, "closed by the gateway")]


async def test_a_refused_connection_is_recorded(tmp_path: Path) -> None:
    rec = Recorder(RecordingWriter(tmp_path / "r"), clock=lambda: 7)
    url = f"ws://127.0.0.1:{free_port()}/"  # nothing listens there

    def connect(**_: Any) -> Endpoint:
        return Endpoint(url=url, display_url=url, open_timeout=2)

    with pytest.raises(ProviderConnectionError):
        await rec.open("p", connect, None, 0)
    rec.close()
    [record] = list(read_records(tmp_path / "r"))
    assert (record.t, record.kind, record.provider, record.conn) == (7, "close", "p", 0)
    assert "127.0.0.1" in record.data


async def test_the_providers_secrets_never_reach_a_recording(tmp_path: Path) -> None:
    rec = Recorder(RecordingWriter(tmp_path / "r"), clock=lambda: 9)
    token = "tok-3f9a2c"
    url = f"ws://127.0.0.1:{free_port()}/?token={token}"

    def connect(**_: Any) -> Endpoint:
        return Endpoint(url=url, display_url=url.replace(token, "***"), open_timeout=2)

    with pytest.raises(ProviderConnectionError):
        await rec.open("p", connect, {"token": Secret(token)}, 0)
    transport, _ = rec.wrap("p", 0, Transport([]), Decoder(), lambda: None)
    await transport.send(f'{{"auth": "{token}"}}')
    await transport.send(f"AUTH {token}".encode())
    await transport.aclose()
    rec.close()
    recorded = b"".join(p.read_bytes() for p in (tmp_path / "r").iterdir())
    assert token.encode() not in recorded  # compressed or not, it is not there: check the records too
    texts = [str(r.data) for r in read_records(tmp_path / "r")]
    assert not any(token in t for t in texts)
    assert '{"auth": "***"}' in texts and "b'AUTH ***'" in texts
