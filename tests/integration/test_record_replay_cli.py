"""``mdgate record`` and ``mdgate replay PATH`` as an operator runs them."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import anyio
import pytest

from mdgate._recording.format import read_index
from mdgate.testing import GatewayClient
from tests.integration.test_cli import MDGATE, env, free_port

pytestmark = pytest.mark.anyio


def write_config(tmp_path: Path, feed_url: str) -> Path:
    p = tmp_path / "mdgate.toml"
    p.write_text(f'[providers.example]\nurl = "{feed_url}"\n[runtime]\nbackoff_initial = 0.05\n'
                 '[subscriptions]\nalways = ["EXAMPLE:ACME"]\n[logging]\nformat = "json"\n')
    return p


async def run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(60):
        return await anyio.run_process(argv, env=env(), check=False)


async def wait_port(port: int) -> None:
    with anyio.fail_after(15):
        while True:
            try:
                async with await anyio.connect_tcp("127.0.0.1", port):
                    return
            except OSError:
                await anyio.sleep(0.05)


async def test_record_then_replay_from_the_command_line(feed, tmp_path):
    config, rec, port = write_config(tmp_path, feed.url), tmp_path / "rec", free_port()
    argv = [*MDGATE, "--config", str(config), "record", "--dir", str(rec), "--port", str(port)]
    proc = await anyio.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    try:
        await wait_port(port)
        await feed.wait_subscribed("ACME")
        async with GatewayClient.connect(f"ws://127.0.0.1:{port}/ws") as c:
            await c.subscribe("EXAMPLE:ACME")
            for i in range(10):
                await feed.send_tick("ACME", 50.0 + i, ts=1_700_000_000_000 + i)
            await feed.send_malformed()
            assert [t["price"] for t in await c.ticks(10)] == [50.0 + i for i in range(10)]
    finally:
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            await proc.wait()
    assert proc.stderr is not None
    err = (await proc.stderr.receive(1 << 20)).decode()
    assert proc.returncode == 0, err[-2000:]
    assert f"recording into {rec}" in err
    assert read_index(rec)["frames"] >= 11

    again = await run([*MDGATE, "--config", str(config), "record", "--dir", str(rec)])
    assert again.returncode == 2 and "already holds a recording" in again.stderr.decode()

    out = await run([*MDGATE, "--config", str(config), "replay", str(rec), "--speed", "max", "--port", "0"])
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    summary = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert summary["ticks"] == {"example": 10}
    assert summary["decode_errors"] == {"example": {"bad_json": 1}}


@pytest.mark.parametrize(("args", "message"), [
    (["--speed", "0"], "must be above 0"),
    (["--speed", "fast"], "expected a number"),
])
async def test_replay_refuses_a_bad_speed(tmp_path, args, message):
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "000001.mdrec").write_bytes(b"")
    out = await run([*MDGATE, "replay", str(rec), *args])
    assert out.returncode == 2 and message in out.stderr.decode()


async def test_replay_of_something_that_is_not_a_recording(tmp_path):
    out = await run([*MDGATE, "replay", str(tmp_path)])
    assert out.returncode == 2
    assert "not a recording" in out.stderr.decode()
