"""
A third provider serves an exchange from the config file alone: the example
provider takes a new exchange (LSE) and one the Yahoo spec declares (NYSE)
through ``[exchanges]`` + ``[instruments]``, no database, end to end through
``mdgate run`` and ``mdgate tail``; ``mdgate routes`` shows the same table;
SIGHUP's reload re-reads ``[exchanges]``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest

from mdgate.testing import GatewayClient, running_gateway
from tests.integration.test_cli import MDGATE, Daemon, env, free_port

pytestmark = pytest.mark.anyio

PLUGINS = "yahoo,example"


def _config(feed_url: str, exchanges: str) -> str:
    return f"""
[providers.example]
url = "{feed_url}"
[providers.yahoo]
url = "ws://127.0.0.1:9"
[runtime]
backoff_initial = 0.05
backoff_max = 0.2
[subscriptions]
linger = 0
[logging]
format = "json"
[exchanges]
{exchanges}
[instruments."LSE:VOD"]
example = "VOD"
[instruments."NYSE:IBM"]
example = "IBM"
"""


async def test_example_provider_serves_lse_and_nyse_from_the_config_file(feed, tmp_path: Path) -> None:
    config = tmp_path / "mdgate.toml"
    config.write_text(_config(feed.url, 'LSE = ["example"]\nNYSE = ["example", "yahoo"]'))
    e = env(MDGATE_LOAD_PLUGINS=PLUGINS)
    routes = await anyio.run_process([*MDGATE, "--config", str(config), "routes"], env=e, check=False)
    lines = [line.split() for line in routes.stdout.decode().splitlines()]
    assert ["LSE", "0", "example", "EX", "yes", "yes"] in lines
    assert ["NYSE", "0", "example", "EX", "yes", "yes"] in lines
    assert ["NYSE", "10", "yahoo", "YF", "no", "yes"] in lines
    assert ["NASDAQ", "0", "yahoo", "YF", "yes", "yes"] in lines  # from Yahoo's spec, untouched

    daemon = Daemon(config, free_port(), e)
    try:
        await daemon.ready(15)
        url = f"http://127.0.0.1:{daemon.port}"
        result: dict[str, subprocess.CompletedProcess[bytes]] = {}

        async def tail() -> None:
            result["tail"] = await anyio.run_process(
                [*MDGATE, "tail", "LSE:VOD", "NYSE:IBM", "--url", url, "--count", "2"], env=e, check=False
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            await feed.wait_until(lambda f: {"VOD", "IBM"} <= f.subscribed, timeout=15)
            await feed.send_tick("VOD", 71.25)
            await feed.send_tick("IBM", 190.5)
    finally:
        daemon.stop()
    out = result["tail"].stdout.decode()
    assert result["tail"].returncode == 0, result["tail"].stderr.decode()
    assert "LSE:VOD" in out and "71.25" in out and "NYSE:IBM" in out and "190.5" in out and " EX " in out


async def test_reload_re_reads_the_exchanges_section(feed, make_settings, tmp_path: Path) -> None:
    extra = '[exchanges]\nLSE = ["example"]\n[instruments."LSE:VOD"]\nexample = "VOD"\n'
    settings = make_settings(feed.url, extra)
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        subscribed, _ = await c.subscribe("LSE:VOD")
        assert subscribed["instruments"] == ["LSE:VOD"]
        await feed.wait_until(lambda f: "VOD" in f.subscribed, timeout=10)
        cfg = tmp_path / "reload.toml"
        cfg.write_text(f'[providers.example]\nurl = "{feed.url}"\n[exchanges]\nLSE = ["nosuch"]\n')
        gw.gateway.config_path = str(cfg)
        assert gw.gateway.reload()
        assert [r.provider for r in gw.gateway.router.table.exchanges["LSE"]] == ["nosuch"]
        await c.send({"op": "subscribe", "instruments": ["LSE:BP"]})
        err = await c.recv_type("error")
        assert err["code"] == "no_route" and "nosuch not installed" in err["message"]
