"""
``mdgate doctor`` against real components: a throw-away redis-server, the
fake Yahoo and Dhan feeds, real sockets and an in-process gateway; one test
per failure each check detects. Some run the installed ``mdgate`` as a
subprocess, the rest in-process through click's CliRunner (in a worker
thread: the fakes run on the test's event loop, the doctor runs its own).

PostgreSQL cases are in tests/pg/test_doctor_pg.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from mdgate._cli.context import CommandContext
from mdgate._cli.root import build_cli
from mdgate.testing import running_gateway, settings_from_toml
from mdgate.testing.redis import RedisServer, free_port
from mdgate_dhan.testing import FakeDhanServer
from mdgate_yahoo.testing import FakeYahooServer

pytestmark = pytest.mark.anyio

#: The installed command (``.venv/bin/mdgate``).
MDGATE = str(Path(sys.executable).with_name("mdgate"))
FAULTY_PACKAGE = Path(__file__).parents[1] / "faulty_plugin"
CHECKS = ["config", "plugins", "credentials", "redis", "postgres", "routes", "port", "clock"]

DHAN_TOKEN = "dhan-secret-token-7c1e5a9b"
DHAN_CLIENT = "1000000001"
REDIS_PASSWORD = "redis-pw-4f8d2b6e"


@dataclass
class Result:
    """What one ``mdgate doctor`` run printed and returned."""

    code: int
    out: str
    err: str

    def lines(self) -> dict[str, str]:
        """Check name -> its line (text output)."""
        found = {}
        for line in self.out.splitlines():
            name = line[2:].split(":", 1)[0]
            if name in CHECKS:
                found[name] = line
        return found

    def marks(self) -> dict[str, str]:
        """Check name -> its sign (``✓``, ``✗``, ``-``)."""
        return {name: line[0] for name, line in self.lines().items()}


def environ(**extra: str) -> dict[str, str]:
    """This process's environment without mdgate's and Dhan's variables, plus ``extra``."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MDGATE_", "DHAN_"))}
    e.update({"MDGATE_LOAD_PLUGINS": "yahoo,dhan", **extra})
    return e


def write_config(tmp_path: Path, text: str, port: int | None = None) -> Path:
    """A config file with ``text`` and ``[server] port`` (a free one unless given)."""
    path = tmp_path / "mdgate.toml"
    path.write_text(f"[server]\nport = {port or free_port()}\n{text}")
    return path


async def doctor_inprocess(env: dict[str, str], *argv: str) -> Result:
    """``mdgate ARGV`` through CliRunner, in a worker thread."""

    logs: list[dict[str, Any]] = []

    def call() -> Any:
        obj = CommandContext(env)
        obj._logging = "test"  # the test process keeps its logging; the log lines are captured
        with capture_logs() as captured:
            res = CliRunner().invoke(build_cli(), list(argv), obj=obj)
        logs.extend(captured)
        return res

    res = await anyio.to_thread.run_sync(call)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr + "".join(f"{line!r}\n" for line in logs))


async def doctor_subprocess(env: dict[str, str], *argv: str) -> Result:
    """``.venv/bin/mdgate ARGV`` as a subprocess."""
    with anyio.fail_after(60):
        proc = await anyio.run_process([MDGATE, *argv], env=env, check=False)
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def now_ms() -> int:
    return time.time_ns() // 1_000_000




@pytest.fixture
async def dhan() -> AsyncIterator[FakeDhanServer]:
    async with FakeDhanServer(token=DHAN_TOKEN, client_id=DHAN_CLIENT) as server:
        yield server


def healthy_config(yahoo: FakeYahooServer, dhan: FakeDhanServer) -> str:
    return (
        f'[providers.yahoo]\nurl = "{yahoo.url}"\n'
        f'[providers.dhan]\nurl = "{dhan.url}"\n'
        '[subscriptions]\nalways = ["NASDAQ:AAPL", "NSE:RELIANCE"]\n'
    )


def dhan_env(**extra: str) -> dict[str, str]:
    return environ(DHAN_CLIENT_ID=DHAN_CLIENT, DHAN_ACCESS_TOKEN=DHAN_TOKEN, **extra)


# -- all well ------------------------------------------------------------------------------


async def test_healthy_setup_passes_every_check_and_exits_0(tmp_path, redis_server, yahoo, dhan):
    config = write_config(tmp_path, healthy_config(yahoo, dhan))
    env = dhan_env(MDGATE_REDIS_URL=redis_server.url)
    res = await doctor_subprocess(env, "doctor", "--config", str(config))
    assert res.code == 0, res.out + res.err
    assert res.marks() == {**dict.fromkeys(CHECKS, "✓"), "postgres": "-"}, res.out
    lines = res.lines()
    assert lines["config"] == f"✓ config: {config}; environment: MDGATE_REDIS_URL"
    assert "yahoo (mdgate-yahoo" in lines["plugins"] and "route sources: pg_routes" in lines["plugins"]
    present = "dhan: credentials present (environment: DHAN_CLIENT_ID, DHAN_ACCESS_TOKEN)"
    assert present in lines["credentials"]
    assert lines["redis"].startswith(f"✓ redis: redis://127.0.0.1:{redis_server.port}/0: Redis ")
    assert lines["redis"].endswith(", writable")
    assert lines["postgres"] == "- postgres: not configured: built-in routes"
    assert "NASDAQ:AAPL -> yahoo, NSE:RELIANCE -> dhan" in lines["routes"]
    assert lines["port"].endswith(" is free")
    assert "(yahoo, tick of NASDAQ:AAPL" in lines["clock"]


async def test_redis_check_leaves_no_key_behind(tmp_path, redis_server):
    import redis

    config = write_config(tmp_path, "")
    env = environ(MDGATE_REDIS_URL=redis_server.url)
    res = await doctor_inprocess(env, "doctor", "--config", str(config))
    assert res.marks()["redis"] == "✓", res.out
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.dbsize() == 0
        assert client.info("commandstats")["cmdstat_set"]["calls"] == 1  # it did write
    finally:
        client.close()


async def with_dhan_tick(dhan: FakeDhanServer, run: Any) -> Result:
    """Run ``run()`` while feeding one Dhan quote to the next subscription it makes (the clock check's)."""
    seen = len(dhan.subscribe_requests)
    result: list[Result] = []

    async def doctor() -> None:
        result.append(await run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(doctor)
        await dhan.wait_until(lambda s: len(s.subscribe_requests) > seen, timeout=20)
        await dhan.send_quote("NSE_EQ:2885", 2885.05)
    return result[0]


async def test_json_document_and_a_secret_from_the_environment_never_printed(tmp_path, dhan):
    server = RedisServer(tmp_path / "redis-auth", extra=["--requirepass", REDIS_PASSWORD])
    server.start()
    try:
        env = dhan_env(MDGATE_REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0")
        config = write_config(tmp_path, f'[providers.dhan]\nurl = "{dhan.url}"\n'
                                        '[subscriptions]\nalways = ["NSE:RELIANCE"]\n')
        text = await with_dhan_tick(dhan, lambda: doctor_inprocess(env, "doctor", "--config", str(config)))
        doc = await with_dhan_tick(
            dhan, lambda: doctor_inprocess(env, "--config", str(config), "doctor", "--json"))
        missing = await doctor_inprocess({**env, "DHAN_CLIENT_ID": ""}, "doctor", "--config", str(config))
    finally:
        server.stop()
    assert text.code == 0 and doc.code == 0, text.out
    parsed = json.loads(doc.out)
    assert parsed["ok"] is True
    assert [c["name"] for c in parsed["checks"]] == CHECKS
    assert all(set(c) == {"name", "ok", "detail", "hint"} for c in parsed["checks"])
    assert [c["ok"] for c in parsed["checks"]] == [True, True, True, True, None, True, True, True]
    assert f"redis://:***@127.0.0.1:{server.port}/0" in text.lines()["redis"]
    # the token was used: the fake accepts no other, and the clock check read Dhan's tick with it
    assert "(dhan, tick of NSE:RELIANCE" in text.lines()["clock"] and dhan.auth_failures == 0
    assert missing.code == 1 and "missing credentials (DHAN_CLIENT_ID)" in missing.lines()["credentials"]
    for res in (text, doc, missing):
        for secret in (DHAN_TOKEN, REDIS_PASSWORD):
            assert secret not in res.out and secret not in res.err


# -- one failure per check ---------------------------------------------------------------


async def test_bad_config_names_the_key_and_the_later_checks_do_not_run(tmp_path):
    config = write_config(tmp_path, '[subscriptions]\nalways = ["AAPL"]\n')
    after = await doctor_subprocess(environ(), "doctor", "--config", str(config))
    before = await doctor_subprocess(environ(), "--config", str(config), "doctor")
    for res in (after, before):
        assert res.code == 1
        expected = f"✗ config: {config}: subscriptions.always[0]: bad instrument 'AAPL'"
        assert res.lines()["config"].startswith(expected)
        assert "— fix subscriptions.always[0]" in res.lines()["config"]
        assert res.marks()["plugins"] == "✓"
        assert {res.lines()[n] for n in CHECKS[2:]} == {
            f"- {n}: not run: the configuration did not load" for n in CHECKS[2:]
        }


async def test_missing_config_file(tmp_path):
    res = await doctor_inprocess(environ(), "doctor", "--config", str(tmp_path / "nope.toml"), "--json")
    assert res.code == 1
    first = json.loads(res.out)["checks"][0]
    assert first["ok"] is False and "--config: file not found" in first["detail"] and first["hint"]



async def test_a_plugin_that_fails_to_load(tmp_path, faulty_site):
    env = environ(MDGATE_LOAD_PLUGINS="yahoo,faulty_import_error,faulty_providers")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(faulty_site), env.get("PYTHONPATH")]))
    res = await doctor_subprocess(env, "doctor", "--config", str(write_config(tmp_path, "")))
    assert res.code == 1
    line = res.lines()["plugins"]
    assert line.startswith("✗ plugins: 2 failed: plugin 'faulty_import_error' failed to load: RuntimeError: "
                           "mdgate_faulty.import_error: broken at import; plugin 'faulty_providers' failed")
    assert "providers: yahoo (mdgate-yahoo" in line and "— fix or uninstall the plugin" in line
    assert all(res.marks()[n] != "✗" for n in CHECKS if n != "plugins")


async def test_missing_credentials_of_a_configured_provider(tmp_path):
    config = write_config(tmp_path, f'[providers.dhan]\nclient_id = "{DHAN_CLIENT}"\n')
    res = await doctor_inprocess(environ(), "doctor", "--config", str(config))
    assert res.code == 1
    line = res.lines()["credentials"]
    assert line.startswith("✗ credentials: dhan: missing credentials (DHAN_ACCESS_TOKEN)")
    assert "yahoo: ready" in line and "— set the missing credentials" in line
    assert DHAN_CLIENT not in res.out


async def test_redis_unreachable(tmp_path):
    port = free_port()  # nothing listens there
    res = await doctor_inprocess(environ(MDGATE_REDIS_URL=f"redis://127.0.0.1:{port}/0"), "doctor",
                                 "--config", str(write_config(tmp_path, "")))
    assert res.code == 1
    assert res.lines()["redis"].startswith(f"✗ redis: cannot reach redis://127.0.0.1:{port}/0: ")
    assert "— start Redis" in res.lines()["redis"]


async def test_redis_not_writable(tmp_path):
    # a replica (of a primary that is not there) refuses writes: READONLY
    server = RedisServer(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(free_port())])
    server.start()
    try:
        res = await doctor_inprocess(environ(MDGATE_REDIS_URL=server.url), "doctor",
                                     "--config", str(write_config(tmp_path, "")))
    finally:
        server.stop()
    assert res.code == 1
    line = res.lines()["redis"]
    assert line.startswith(f"✗ redis: {server.url} is read-only (a replica?): ")
    assert "— point [redis] url at the primary" in line


async def test_an_always_instrument_without_a_route(tmp_path, yahoo):
    config = write_config(tmp_path, f'[providers.yahoo]\nurl = "{yahoo.url}"\n'
                                    '[subscriptions]\nalways = ["NASDAQ:AAPL", "LSE:VOD"]\n')
    res = await doctor_inprocess(environ(), "doctor", "--config", str(config))
    assert res.code == 1
    line = res.lines()["routes"]
    assert line.startswith("✗ routes: 1 of 2 always instrument(s) have no route (defaults): LSE:VOD (")
    assert "NASDAQ:AAPL" not in line and "— add a route ([exchanges] / [instruments]" in line
    assert res.marks()["clock"] == "✓"  # AAPL still served: the clock was checked with it


async def test_port_taken_by_something_that_is_not_a_gateway(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        res = await doctor_inprocess(environ(), "doctor", "--timeout", "0.5",
                                     "--config", str(write_config(tmp_path, "", port)))
    assert res.code == 1
    line = res.lines()["port"]
    in_use = f"cannot listen on 127.0.0.1:{port}: address already in use"
    assert line.startswith(f"✗ port: 127.0.0.1:{port}: {in_use}")
    assert "not an mdgate gateway" in line and "— stop that process, or choose another [server] port" in line


async def test_a_gateway_running_on_the_port_passes(tmp_path):
    settings = settings_from_toml("", {"MDGATE_LOAD_PLUGINS": ""}, tmp_path)
    async with running_gateway(settings, entry_points=False) as gw:
        config = write_config(tmp_path, "", gw.port)
        res = await doctor_inprocess(environ(), "doctor", "--config", str(config))
    assert res.code == 0, res.out
    running = "a gateway is running there (/healthz answered ok)"
    assert res.lines()["port"] == f"✓ port: 127.0.0.1:{gw.port}: {running}"


@pytest.mark.parametrize("hours", [1, -1])
async def test_clock_skew_beyond_max_clock_skew(tmp_path, hours):
    dated = now_ms() + hours * 3_600_000
    async with FakeYahooServer(snapshots={"AAPL": {"price": 190.5, "time": dated}}) as yahoo:
        config = write_config(tmp_path, f'[providers.yahoo]\nurl = "{yahoo.url}"\n'
                                        '[subscriptions]\nalways = ["NASDAQ:AAPL"]\n')
        res = await doctor_inprocess(environ(), "doctor", "--config", str(config))
    line = res.lines()["clock"]
    if hours > 0:  # dated in the future: only a clock can do that
        assert res.code == 1
        assert re.match(r"✗ clock: yahoo's tick of NASDAQ:AAPL is dated \+(3599|3600)\.\d s ", line), line
        assert "local clock is behind" in line
    else:  # an hour old: a closed market's last trade, or our clock ahead; reported, not failed
        assert res.code == 0, res.out
        pattern = r"- clock: not conclusive: yahoo's tick of NASDAQ:AAPL is dated -36\d\d\.\d s "
        assert re.match(pattern, line), line
        assert "market closed?" in line
    assert "(limit: [runtime] max_clock_skew = 300 s)" in line and "NTP" in line


async def test_skew_within_the_limit_passes(tmp_path):
    async with FakeYahooServer(snapshots={"AAPL": {"price": 190.5, "time": now_ms() - 60_000}}) as yahoo:
        config = write_config(tmp_path, f'[providers.yahoo]\nurl = "{yahoo.url}"\n'
                                        '[subscriptions]\nalways = ["NASDAQ:AAPL"]\n'
                                        '[runtime]\nmax_clock_skew = 120\n')
        res = await doctor_inprocess(environ(), "doctor", "--config", str(config))
    assert res.code == 0, res.out
    assert res.lines()["clock"].startswith("✓ clock: skew -60.")


async def test_no_provider_reachable_is_not_a_failure(tmp_path):
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, f'[providers.yahoo]\nurl = "ws://127.0.0.1:{port}/"\n'
                                    '[subscriptions]\nalways = ["NASDAQ:AAPL"]\n')
    res = await doctor_inprocess(environ(), "doctor", "--timeout", "1", "--config", str(config), "--json")
    assert res.code == 0, res.out
    clock = json.loads(res.out)["checks"][-1]
    assert clock["name"] == "clock" and clock["ok"] is None
    assert clock["detail"].startswith("not checked: no provider reachable (no tick within 1 s: yahoo: ")
