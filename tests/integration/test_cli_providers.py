"""
The issues' "done when", as a user runs it: `mdgate run` (its own process) with
[providers.yahoo|dhan] url pointed at local servers speaking the real
protocols, and `mdgate tail` printing NASDAQ:AAPL / NSE:RELIANCE ticks.
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

from mdgate_dhan.testing import FakeDhanServer
from mdgate_yahoo.testing import FakeYahooServer
from tests.integration.test_cli import MDGATE, Daemon, env, free_port

pytestmark = pytest.mark.anyio

TOKEN, CLIENT = "cli-token", "1234567890"


async def tail(port: int, instrument: str, count: int) -> list[dict]:
    res = await anyio.run_process(
        [*MDGATE, "tail", instrument, "--url", f"http://127.0.0.1:{port}", "--count", str(count), "--json"],
        env=env(),
        check=False,
    )
    assert res.returncode == 0, res.stderr
    msgs = [json.loads(line) for line in res.stdout.decode().splitlines()]
    return [t for m in msgs if m["type"] in ("ticks", "snapshot") for t in m["ticks"]]


async def test_mdgate_run_yahoo_streams_aapl_to_tail(tmp_path):
    async with FakeYahooServer() as yahoo:
        cfg = tmp_path / "mdgate.toml"
        cfg.write_text(f'[providers.yahoo]\nurl = "{yahoo.url}"\n[runtime]\nbackoff_initial = 0.05\n')
        d = Daemon(cfg, free_port(), env(MDGATE_LOAD_PLUGINS="yahoo"))
        try:
            await d.ready()
            got: list[dict] = []

            async def run_tail() -> None:
                got.extend(await tail(d.port, "NASDAQ:AAPL", 3))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_tail)
                await yahoo.wait_subscribed("AAPL", timeout=15)
                now = int(time.time()) * 1000
                for i in range(3):
                    await yahoo.send_pricing("AAPL", price=189.91 + i, time=now + i, day_volume=1000 + i)
            assert [(t["instrument"], t["provider"], t["price"], t["ts"]) for t in got] == [
                ("NASDAQ:AAPL", "YF", round(189.91 + i, 2), now + i) for i in range(3)
            ]
            # the gateway survives a drop: tail again after the server dropped us
            yahoo.drop()
            await yahoo.wait_connections(2, timeout=10)
        finally:
            d.stop()


async def test_mdgate_run_dhan_streams_reliance_with_utc_ts(tmp_path):
    async with FakeDhanServer(token=TOKEN, client_id=CLIENT) as dhan:
        cfg = tmp_path / "mdgate.toml"
        cfg.write_text(f'[providers.dhan]\nurl = "{dhan.url}"\n[runtime]\nbackoff_initial = 0.05\n')
        d = Daemon(
            cfg, free_port(), env(MDGATE_LOAD_PLUGINS="dhan", DHAN_CLIENT_ID=CLIENT, DHAN_ACCESS_TOKEN=TOKEN)
        )
        port = d.port
        try:
            await d.ready()
            got: list[dict] = []

            async def run_tail() -> None:
                got.extend(await tail(port, "NSE:RELIANCE", 1))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_tail)
                await dhan.wait_subscribed("NSE_EQ:2885")
                true_utc_ms = int(time.time()) * 1000
                await dhan.send_quote("NSE_EQ:2885", 2456.75, ts_ms=true_utc_ms)
            t = got[0]
            assert (t["instrument"], t["provider"], t["price"]) == ("NSE:RELIANCE", "DHAN", 2456.75)
            assert t["ts"] == true_utc_ms  # the IST-shifted LTT was corrected to true UTC
            assert abs(t["recv_ts"] - t["ts"]) < 5_000
            assert TOKEN not in d.log.read_text()
        finally:
            d.stop()
