"""
The connection runtime in conditions nobody scripted: a provider unreachable
for ten thousand attempts (the daemon stays up and says so), ticks dated far
in the future (never stored nor sent), over real sockets.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from mdgate._model import now_ms
from mdgate.testing import GatewayClient, running_gateway
from tests.conftest import FACTOR

pytestmark = pytest.mark.anyio


def dead_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``mdgate run`` with the example provider, its log in ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
    env["MDGATE_LOAD_PLUGINS"] = "example"
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mdgate", "--config", str(cfg), "run", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )


async def test_provider_unreachable_for_10000_attempts_daemon_keeps_serving(tmp_path: Path):
    # Before the shared backoff helper, `backoff_initial * 2 ** attempt` raised
    # OverflowError at attempt 1,024 and `mdgate run` exited. backoff_max is 1 ms, the
    # event loop's timer resolution: 10,000 attempts take about 15 s.
    cfg = tmp_path / "mdgate.toml"
    cfg.write_text(
        f'[providers.example]\nurl = "ws://127.0.0.1:{dead_port()}"\n'
        "[runtime]\nbackoff_initial = 0.0005\nbackoff_max = 0.001\n"
        '[subscriptions]\nalways = ["EXAMPLE:ACME"]\n[logging]\nformat = "json"\n'
    )
    port = dead_port()
    log = tmp_path / "mdgate.log"
    proc = start_daemon(cfg, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        st: dict = {}
        # a fresh connection per request: no keep-alive race with the server's idle close
        async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            with anyio.fail_after(60 * FACTOR):
                while True:
                    assert proc.poll() is None, log.read_text()[-2000:]
                    try:
                        st = (await http.get(f"{base}/status")).json()
                    except httpx.HTTPError:
                        st = {}
                    if st.get("providers", {}).get("example", {}).get("attempts", 0) >= 10_000:
                        break
                    await anyio.sleep(0.5)
            ex = st["providers"]["example"]
            assert ex["state"] == "reconnecting" and ex["reconnects"] >= 9_999
            assert "cannot connect" in ex["last_error"] and st["status"] == "degraded"
            assert (await http.get(f"{base}/healthz")).status_code == 200
        assert proc.poll() is None
        text = log.read_text()
        assert "OverflowError" not in text and "Traceback" not in text
        # the disconnect log line is rate-limited: a handful of lines for 10,000 failures
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert sum(e.get("event") == "provider_disconnected" for e in lines) < 50
    finally:
        proc.kill()
        proc.wait()


async def test_far_future_ticks_are_not_stored_nor_sent(feed, make_settings):
    settings = make_settings(feed.url)
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        now = now_ms()
        await feed.send_tick("ACME", 1.0, ts=2**62)  # Yahoo-style garbage time
        await feed.send_tick("ACME", 2.0, ts=0xFFFFFFFF * 1000)  # Dhan LTT 0xFFFFFFFF: the year 2106
        await feed.send_tick("ACME", 3.0, ts=now)
        t = (await c.ticks(1))[0]
        assert (t["price"], t["ts"]) == (3.0, now)
        ex = gw.status()["providers"]["example"]
        assert ex["decode_errors_by_kind"] == {"bad_ts": 2} and ex["ticks"] == 1
        assert gw.gateway.latest["EXAMPLE:ACME"].price == 3.0
        history = await gw.gateway.store.history("EXAMPLE:ACME")
        assert [h.price for h in history] == [3.0]
        # the next good tick is not hidden behind a future one
        await feed.send_tick("ACME", 4.0, ts=now + 1)
        assert (await c.ticks(1))[0]["price"] == 4.0
        assert time.time() * 1000 - now < 60_000
