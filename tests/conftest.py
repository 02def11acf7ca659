"""Shared fixtures of the core's tests."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mdgate._config import Settings
from mdgate.testing import settings_from_toml
from mdgate.testing.redis import RedisServer

if TYPE_CHECKING:
    from mdgate_example.testing import FakeExampleServer

    from mdgate_yahoo.testing import FakeYahooServer

EXAMPLE_PACKAGE = Path(__file__).parent / "example_provider"


_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    """``socket.getaddrinfo`` for the tests: loopback names only (no test may reach the internet)."""
    name = host.decode() if isinstance(host, bytes) else host
    try:
        ipaddress.ip_address(name)
        return _getaddrinfo(host, *args, **kwargs)  # a literal address: nothing is looked up
    except ValueError:
        pass
    if name not in (None, "", "localhost"):
        raise socket.gaierror(socket.EAI_NONAME, f"the tests reach loopback only, not {name!r}")
    return _getaddrinfo(host, *args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    """
    Install the example third-party provider (tests/example_provider, its own
    pyproject.toml and entry point) into a private site directory for this
    test run, the way an operator pip-installs a plugin. In-process tests see
    it through sys.path; subprocesses through PYTHONPATH.
    """
    site = Path(tempfile.mkdtemp(prefix="mdgate-example-site-"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(EXAMPLE_PACKAGE)],
        check=True,
    )
    socket.getaddrinfo = _loopback_only  # e.g. a provider's REST backfill with its default URL
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    config.stash[_SITE] = site


_SITE = pytest.StashKey[Path]()


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    site = config.stash.get(_SITE, None)
    if site is not None:
        shutil.rmtree(site, ignore_errors=True)


#: Timeouts scale with this (slow CI machines).
FACTOR = float(os.environ.get("MDGATE_TESTS_TIMEOUT_FACTOR", "1"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def feed() -> AsyncIterator[FakeExampleServer]:
    """The example provider's fake feed (installed by pytest_configure, hence imported here)."""
    from mdgate_example.testing import FakeExampleServer

    async with FakeExampleServer() as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Any) -> Callable[..., Settings]:
    """``make_settings(feed_url, extra_toml="", environ=None)`` -> Settings for the example provider."""

    def make(url: str, extra: str = "", environ: dict[str, str] | None = None,
             example: str = "") -> Settings:
        text = f"""
[runtime]
backoff_initial = 0.05
backoff_max = 0.2
auth_retry = 60
failover_after = 0.5
failback_after = 0.5

[providers.example]
url = "{url}"
{example}
{extra}
"""
        env = {"MDGATE_LOAD_PLUGINS": "example", "MDGATE_SUBSCRIPTIONS__LINGER": "0"}
        if environ is not None:
            env = environ
        return settings_from_toml(text, env, tmp_path)

    return make


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throw-away redis-server for this test (tests/redis has its own, built on a factory)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def yahoo() -> AsyncIterator[FakeYahooServer]:
    """A fake Yahoo streamer that sends AAPL's quote (dated now) as soon as it is subscribed."""
    from mdgate_yahoo.testing import FakeYahooServer

    async with FakeYahooServer(snapshots={"AAPL": {"price": 190.5}}) as server:
        yield server


FAULTY_PACKAGE = Path(__file__).parent / "faulty_plugin"


@pytest.fixture(scope="session")
def faulty_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/faulty_plugin pip-installed into a private directory (subprocesses only)."""
    site = tmp_path_factory.mktemp("faulty-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(FAULTY_PACKAGE)],
        check=True,
    )
    return site
