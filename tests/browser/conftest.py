"""
Fixtures of the status page's browser tests: a gateway fed by both fake
providers, and Debian's Chromium driven by Playwright.

The browser is Debian's ``/usr/bin/chromium`` (``apt-get install chromium``);
Playwright never downloads one. Every Chromium process a test starts gets a
private ``HOME`` (the marker by which the teardown finds them): once the
browser is closed, any of them still alive is killed by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from mdgate.testing import GatewayHandle, running_gateway, settings_from_toml
from mdgate_dhan.testing import FakeDhanServer
from mdgate_yahoo.testing import FakeYahooServer

CHROMIUM = Path("/usr/bin/chromium")
#: --no-zygote: without zygotes no Chromium child is orphaned (left a zombie) when the browser exits.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--no-zygote",
    "--disable-crash-reporter", "--disable-breakpad",
]
#: The gateway's access token and Dhan's fake credentials.
TOKEN = "page-test-token"
DHAN_TOKEN, DHAN_CLIENT = "dhan-page-token", "1100002222"
#: Dhan's code of NSE:RELIANCE and its previous close (the fake sends it after the subscribe).
RELIANCE, RELIANCE_PREV_CLOSE = "NSE_EQ:2885", 2400.0


@dataclass
class Stack:
    """The gateway and the two fakes feeding it."""

    gateway: GatewayHandle
    yahoo: FakeYahooServer
    dhan: FakeDhanServer

    def page_url(self, token: str | None = TOKEN) -> str:
        """The status page's URL (with ``token`` unless None)."""
        return self.gateway.http_url + "/" + (f"?token={token}" if token is not None else "")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A gateway with a token, ``always`` NASDAQ:AAPL (yahoo) and NSE:RELIANCE (dhan), both subscribed."""
    env = {"MDGATE_LOAD_PLUGINS": "yahoo,dhan",
           "DHAN_CLIENT_ID": DHAN_CLIENT, "DHAN_ACCESS_TOKEN": DHAN_TOKEN}
    async with (
        FakeYahooServer() as yahoo,
        FakeDhanServer(token=DHAN_TOKEN, client_id=DHAN_CLIENT,
                       prev_close={RELIANCE: RELIANCE_PREV_CLOSE}) as dhan,
    ):
        settings = settings_from_toml(
            f"""
[server]
tokens = ["{TOKEN}"]
[runtime]
backoff_initial = 0.05
backoff_max = 0.2
[subscriptions]
always = ["NASDAQ:AAPL", "NSE:RELIANCE"]
[providers.dhan]
url = "{dhan.url}"
[providers.yahoo]
url = "{yahoo.url}"
""",
            env,
            tmp_path,
        )
        async with running_gateway(settings) as gw:
            await yahoo.wait_subscribed("AAPL")
            await dhan.wait_subscribed(RELIANCE)
            yield Stack(gw, yahoo, dhan)


def _processes_with(marker: str) -> list[int]:
    """PIDs of the live processes whose environment holds ``marker`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def _stop_leftovers(marker: str) -> list[int]:
    """Wait up to 5 s for the marked processes to end; kill (by PID) and return those that did not."""
    deadline = time.monotonic() + 5
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium; every process it started is gone after the test."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
                    "(apt-get install chromium); Playwright must not download a browser")
    home = tempfile.mkdtemp(prefix="mdgate-browser-home-")
    marker = f"HOME={home}"
    env: dict[str, Any] = {**os.environ, "HOME": home}
    playwright = await async_playwright().start()
    try:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, env=env,
        )
        try:
            yield chromium
        finally:
            await chromium.close()
    finally:
        await playwright.stop()
        left = _stop_leftovers(marker)
        shutil.rmtree(home, ignore_errors=True)
    assert not left, f"Chromium processes outlived the browser and were killed: {left}"


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$MDGATE_TEST_ARTIFACTS`` if set, else the test's tmp_path."""
    folder = Path(os.environ.get("MDGATE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
