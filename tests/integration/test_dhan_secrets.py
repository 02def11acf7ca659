"""
The Dhan token end to end, through the real ``mdgate run`` executable against
the fake Dhan feed (:class:`mdgate_dhan.testing.FakeDhanServer`):

* with plugin tracing on (every hook call and result logged at debug), the
  token and the client id appear nowhere in the log;
* token rotation as documented: the feed refuses the old token (807), the
  token file is rewritten, SIGHUP, and the gateway connects with the new one
  (``auth_retry`` is 10 minutes: nothing but the SIGHUP can have done it).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mdgate_dhan.testing import FakeDhanServer
from tests.integration.test_front_door import GatewayProcess, clean_env, free_port

pytestmark = pytest.mark.anyio

CLIENT = "1100998877"
TOKEN = "eyJhbGciOiJIUzUxMiJ9.TRACE-TOKEN-7f3a.sig"
OLD, NEW, STALE = "eyJ.OLD-TOKEN-41c2.sig", "eyJ.NEW-TOKEN-93be.sig", "eyJ.STALE-ENV-TOKEN-5d1e.sig"
RELIANCE = "NSE_EQ:2885"


def write_config(path: Path, dhan: FakeDhanServer, port: int, *, level: str, auth_retry: float) -> Path:
    path.write_text(
        f'[server]\nport = {port}\n[providers.dhan]\nurl = "{dhan.url}"\n'
        f'[subscriptions]\nalways = ["NSE:RELIANCE"]\n'
        f"[runtime]\nbackoff_initial = 0.05\nbackoff_max = 0.2\nauth_retry = {auth_retry}\n"
        f'[logging]\nlevel = "{level}"\nformat = "json"\n'
    )
    return path


async def wait_status(gw: GatewayProcess, port: int, check: Callable[[dict[str, Any]], bool],
                      timeout: float = 15.0) -> dict[str, Any]:
    """Poll the gateway's /status until ``check`` holds (the gateway answering is part of it)."""
    last: Any = None
    async with httpx.AsyncClient() as http:
        with anyio.move_on_after(timeout):
            while True:
                assert gw.proc.poll() is None, gw.log.read_text()
                try:
                    last = (await http.get(f"http://127.0.0.1:{port}/status", timeout=2.0)).json()
                    if check(last):
                        return dict(last)
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.05)
    raise AssertionError(f"status never matched; last: {last}\n{gw.log.read_text()}")


def dhan_state(status: dict[str, Any]) -> str:
    return str(status["providers"]["dhan"]["state"])


async def test_plugin_trace_never_logs_the_dhan_token(tmp_path: Path) -> None:
    async with FakeDhanServer(token=TOKEN, client_id=CLIENT) as dhan:
        port = free_port()
        cfg = write_config(tmp_path / "mdgate.toml", dhan, port, level="debug", auth_retry=0.2)
        env = clean_env(MDGATE_LOAD_PLUGINS="dhan", MDGATE_TRACE_PLUGINS="1",
                        DHAN_CLIENT_ID=CLIENT, DHAN_ACCESS_TOKEN=TOKEN)
        gw = GatewayProcess(cfg, env)
        try:
            await wait_status(gw, port, lambda s: dhan_state(s) == "connected")
            with anyio.fail_after(10):
                await dhan.wait_subscribed(RELIANCE)
            await dhan.send_quote(RELIANCE, 2456.75)
            # the error paths log too: an expired-token disconnect, then a reconnect
            await dhan.disconnect(807)
            with anyio.fail_after(10):
                await dhan.wait_until(lambda _: len(dhan.history) >= 2 and RELIANCE in dhan.subscribed)
            status = await wait_status(gw, port, lambda s: dhan_state(s) == "connected")
        finally:
            assert gw.stop() == 0, gw.log.read_text()
    log = gw.log.read_text()
    # the trace really ran: hook calls, their config argument and the Endpoint they returned
    trace = ("plugin_trace", "mdgate_connect", "Endpoint(url=", "DhanConfig(", "provider_auth_failed")
    for expected in trace:
        assert expected in log, expected
    assert TOKEN not in log and CLIENT not in log
    assert TOKEN not in str(status) and CLIENT not in str(status)


async def test_token_rotation_through_the_token_file_and_sighup(tmp_path: Path) -> None:
    token_file = tmp_path / "dhan.token"
    token_file.write_text(OLD + "\n")
    async with FakeDhanServer(token=NEW, client_id=CLIENT, auth_failure_code=807) as dhan:
        port = free_port()
        cfg = write_config(tmp_path / "mdgate.toml", dhan, port, level="info", auth_retry=600)
        # a leftover DHAN_ACCESS_TOKEN in the environment: the token file wins over it
        env = clean_env(MDGATE_LOAD_PLUGINS="dhan", DHAN_CLIENT_ID=CLIENT,
                        DHAN_ACCESS_TOKEN_FILE=str(token_file), DHAN_ACCESS_TOKEN=STALE)
        gw = GatewayProcess(cfg, env)
        try:
            refused = await wait_status(gw, port, lambda s: dhan_state(s) == "auth_failed")
            dhan_status = refused["providers"]["dhan"]
            assert "807" in dhan_status["last_error"]
            assert "token file" in dhan_status["hint"] and "SIGHUP" in dhan_status["hint"]
            attempts = dhan.connection_attempts
            # rotate: write the new token beside the file, rename it over (atomic), SIGHUP
            staged = token_file.with_suffix(".new")
            staged.write_text(NEW + "\n")
            staged.replace(token_file)
            t0 = time.monotonic()
            gw.proc.send_signal(signal.SIGHUP)
            with anyio.fail_after(10):
                await dhan.wait_subscribed(RELIANCE)
            reconnect_s = time.monotonic() - t0
            status = await wait_status(gw, port, lambda s: dhan_state(s) == "connected")
            assert dhan.connection_attempts > attempts
            assert reconnect_s < 5  # at once, not after auth_retry (600 s)
        finally:
            assert gw.stop() == 0, gw.log.read_text()
    log = gw.log.read_text()
    assert "config_reloaded" in log and "provider_config_reloaded" in log
    for secret in (OLD, NEW, STALE, CLIENT):
        assert secret not in log and secret not in str(status) and secret not in str(refused)
