"""
Plugin faults, end to end: the deliberately faulty plugins of
tests/faulty_plugin (pip-installed like any plugin, one entry point per
fault) run in a real ``mdgate run`` next to the healthy example provider.
The daemon starts, stays up (also through SIGHUP), the healthy provider keeps
streaming to a client, and ``/status``, ``mdgate plugins`` and the log name
every faulty plugin with its counts, never its secret.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mdgate_example.testing import FakeExampleServer as ExampleFeed
from websockets.asyncio.client import connect

from mdgate import Endpoint, ProviderSpec, hookimpl
from mdgate._config import Settings
from mdgate.testing import running_gateway
from tests.integration.test_cli import MDGATE, Daemon, env, free_port

pytestmark = pytest.mark.anyio

FAULTY_PACKAGE = Path(__file__).parents[1] / "faulty_plugin"
SECRET = "faulty-secret-token-1234"  # mdgate_faulty.plugin.SECRET

#: entry point -> the hooks it faults in (the ledger's ``by_hook`` keys)
EXPECTED: dict[str, set[str]] = {
    "faulty_import_exit": {"import"},
    "faulty_import_error": {"import"},
    "faulty_providers": {"mdgate_providers"},
    "faulty_code": {"mdgate_instrument_code"},
    "faulty_config": {"parse_config"},
    "faulty_store": {"mdgate_store"},
    "faulty_routes": {"mdgate_route_source"},
    "faulty_connect": {"mdgate_connect"},
    "faulty_connect_junk": {"mdgate_connect"},
    "faulty_normalize": {"mdgate_normalize"},
    "faulty_subscribe": {"mdgate_subscribe"},
    "faulty_decoder_junk": {"decoder"},
    "faulty_decoder_raise": {"decoder"},
}
#: faults that stop the plugin (or part of it) until a restart
LASTING = {"faulty_import_exit", "faulty_import_error", "faulty_providers", "faulty_config",
           "faulty_store", "faulty_routes"}
#: providers that connect to the faulty feed (the others never get that far)
CONNECTING = ("faulty_code", "faulty_connect", "faulty_connect_junk", "faulty_normalize",
              "faulty_subscribe", "faulty_decoder_junk", "faulty_decoder_raise")



def faulty_env(site: Path) -> dict[str, str]:
    e = env(MDGATE_LOAD_PLUGINS=",".join(["example", "faulty_commands", *EXPECTED]))
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), e.get("PYTHONPATH")]))
    return e


@pytest.fixture
async def faulty_feed() -> Any:
    async with ExampleFeed() as server:
        yield server


async def wait_status(
    port: int, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10,
) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        with anyio.fail_after(timeout):
            while True:
                doc: dict[str, Any] = (await http.get(f"http://127.0.0.1:{port}/status")).json()
                if predicate(doc):
                    return doc
                await anyio.sleep(0.05)


async def next_tick(ws: Any, price: float) -> None:
    with anyio.fail_after(5):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == "ticks" and any(t["price"] == price for t in msg["ticks"]):
                return


def faults_seen(doc: dict[str, Any]) -> bool:
    plugins = doc["plugins"]
    return all(name in plugins and set(plugins[name]["by_hook"]) == hooks for name, hooks in EXPECTED.items())


async def test_every_plugin_fault_contained_in_a_running_daemon(tmp_path, feed, faulty_feed, faulty_site):
    config = tmp_path / "mdgate.toml"
    always = ["F_CODE:X", "F_CODE:JUNK",
              *(f"F_{n.removeprefix('faulty_').upper()}:X" for n in CONNECTING[1:])]
    config.write_text(
        '[runtime]\nbackoff_initial = 0.05\nbackoff_max = 0.2\n'
        f'[subscriptions]\nlinger = 0\nalways = {json.dumps(always)}\n[logging]\nformat = "json"\n'
        f'[providers.example]\nurl = "{feed.url}"\n'
        + "".join(f'[providers.{n}]\nurl = "{faulty_feed.url}"\n' for n in CONNECTING)
    )
    d = Daemon(config, free_port(), faulty_env(faulty_site))
    try:
        await d.ready()  # started: import SystemExit, store, routes, instrument_code... all contained
        async with connect(f"ws://127.0.0.1:{d.port}/ws") as ws:
            await ws.send(json.dumps({"op": "subscribe", "instruments": ["EXAMPLE:ACME"]}))
            await feed.wait_until(lambda f: "ACME" in f.subscribed)
            # both decoder providers subscribed (the others fault before they can)
            await faulty_feed.wait_until(lambda f: f.subscribe_requests.count(["X"]) >= 2)
            for price in (1.0, 2.0, 3.0):
                await faulty_feed.send_tick("X", price)
                await feed.send_tick("ACME", price)
                await next_tick(ws, price)  # the healthy provider streams throughout
            doc = await wait_status(d.port, faults_seen)

            assert doc["status"] == "degraded"
            plugins = doc["plugins"]
            # the command line's plugins are the daemon's: its faulty mdgate_add_commands is on the ledger
            assert "example" not in plugins and set(plugins) == {*EXPECTED, "faulty_commands"}
            assert plugins["faulty_commands"]["by_hook"] == {"mdgate_add_commands": 1}
            for name in EXPECTED:
                assert plugins[name]["faults"] >= 1 and plugins[name]["last_error"], name
                assert plugins[name]["state"] == ("failed" if name in LASTING else "faulting"), name
            providers = doc["providers"]
            assert providers["example"]["state"] == "connected" and providers["example"]["ticks"] >= 3
            assert providers["faulty_config"]["state"] == "disabled"
            assert "parse_config" in providers["faulty_config"]["last_error"]
            junk = providers["faulty_decoder_junk"]
            assert junk["decode_errors_by_kind"].get("bad_tick", 0) >= 3 and junk["ticks"] >= 1
            assert doc["store"]["kind"] == "memory" and doc["routing"]["source"] == "defaults"
            assert SECRET not in json.dumps(doc)

            # SIGHUP re-resolves the always-on instruments (instrument_code raises again): still up
            before = plugins["faulty_code"]["faults"]
            d.proc.send_signal(signal.SIGHUP)
            doc = await wait_status(d.port, lambda s: s["plugins"]["faulty_code"]["faults"] > before)
            assert d.proc.poll() is None
            await feed.send_tick("ACME", 4.0)
            await next_tick(ws, 4.0)
        assert d.proc.poll() is None
        d.proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(d.proc.wait, 10) == 0
        log = d.log.read_text()
        assert "config_reloaded" in log and SECRET not in log
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        named = {e.get("plugin") for e in events if e["event"] in ("plugin_fault", "plugin_load_failed")}
        assert set(EXPECTED) <= named
        assert "faulty_commands" in log  # its add_commands raised SystemExit once `run` served
    finally:
        d.stop()


async def test_mdgate_plugins_lists_failed_plugins_and_exits_0(faulty_site):
    e = faulty_env(faulty_site)
    res = await anyio.run_process([*MDGATE, "plugins", "--json"], env=e, check=False)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    for name, stage in (("faulty_import_exit", "import"), ("faulty_import_error", "import"),
                        ("faulty_providers", "mdgate_providers")):
        assert rows[name]["status"] == "failed" and rows[name]["failed_in"] == [stage], rows[name]
        assert name in rows[name]["error"]
    assert "SystemExit" in rows["faulty_import_exit"]["error"]
    assert rows["example"]["status"] == "loaded" and rows["faulty_connect"]["status"] == "loaded"

    res = await anyio.run_process([*MDGATE, "plugins"], env=e, check=False)
    out = res.stdout.decode()
    assert res.returncode == 0 and out.startswith("PLUGIN")
    assert "faulty_import_exit failed" in " ".join(out.split()) and "example" in out
    # the plugins are loaded once per command: each failure is logged once
    assert res.stderr.decode().count("faulty_import_exit") == 1, res.stderr.decode()


# -- in-process: the gateway's own use of the ledger ----------------------------------


class _StoreBug:
    @hookimpl(tryfirst=True)
    def mdgate_store(self, settings: Any) -> Any:
        raise RuntimeError("store bug")


class _BrokenRouteSource:
    """A route source whose load raises and whose watch delivers junk once, then raises."""

    description = "broken"

    def __init__(self) -> None:
        self.watched = 0

    async def load(self) -> Any:
        raise RuntimeError("load bug")

    async def watch(self, on_change: Any, *, task_status: Any) -> None:
        self.watched += 1
        if self.watched == 1:
            on_change({"not": "a table"})
        raise ValueError("watch bug")


class _RoutesBug:
    @hookimpl
    def mdgate_route_source(self, settings: Any) -> Any:
        return _BrokenRouteSource()


async def test_gateway_with_a_failed_plugin_is_degraded_and_names_it():
    async with running_gateway(extra_plugins=[("store_bug", _StoreBug())], entry_points=False,
                               environ={"MDGATE_LOAD_PLUGINS": ""}) as gw:
        st = gw.status()
        assert st["status"] == "degraded" and st["store"]["kind"] == "memory"
        assert st["plugins"]["store_bug"]["state"] == "failed"
        assert st["plugins"]["store_bug"]["last_error"] == "RuntimeError: store bug"


async def test_gateway_without_plugin_faults_is_ok():
    async with running_gateway(entry_points=False, environ={"MDGATE_LOAD_PLUGINS": ""}) as gw:
        st = gw.status()
        assert st["plugins"] == {} and not gw.gateway.registry.faults.degraded()
        # no provider at all: the routing table is empty, and that is the only thing wrong
        assert st["status"] == "degraded" and st["routing"]["state"] == "degraded"
        assert len(st["routing"]["problems"]) == 1 and "empty" in st["routing"]["problems"][0]


async def test_route_source_bugs_at_load_and_watch_are_recorded_and_routes_stay():
    async with running_gateway(extra_plugins=[("routes_bug", _RoutesBug())], entry_points=False,
                               environ={"MDGATE_LOAD_PLUGINS": ""}) as gw:
        # the daemon retries a failed watch after 5 s: all three faults come before that
        st = await gw.wait_for(lambda s: s["plugins"].get("routes_bug", {}).get("faults", 0) >= 3, timeout=3)
        assert st["plugins"]["routes_bug"]["by_hook"] == {"route_source.load": 1, "route_source.watch": 2}
        assert gw.gateway.router.table.source == "defaults" and st["status"] == "degraded"


class _ReloadBug:
    """Provider ``cf``: its ``parse_config`` works at start and raises once ``fail`` is set."""

    def __init__(self) -> None:
        self.fail = False

    def parse_config(self, table: Any, environ: Any) -> Any:
        if self.fail:
            raise IndexError("parse bug")
        return {"v": table.get("v")}

    @hookimpl
    def mdgate_providers(self) -> Any:
        return [ProviderSpec("cf", "CF", ("CF",), parse_config=self.parse_config)]

    @hookimpl
    def mdgate_connect(self, provider: str, config: Any, connection: int) -> Any:
        return Endpoint(url="ws://127.0.0.1:9") if provider == "cf" else None


async def test_sighup_with_a_parse_config_bug_keeps_the_providers_running_config(tmp_path):
    plugin = _ReloadBug()
    settings = Settings(providers={"cf": {"v": 1}})
    async with running_gateway(settings, extra_plugins=[("cf_plugin", plugin)], entry_points=False,
                               environ={"MDGATE_LOAD_PLUGINS": ""}) as gw:
        cfg = tmp_path / "reload.toml"
        cfg.write_text("[providers.cf]\nv = 2\n")
        gw.gateway.config_path = str(cfg)
        plugin.fail = True
        assert gw.gateway.reload()
        session = gw.gateway.sessions["cf"]
        assert session.config == {"v": 1} and session.disabled_reason is None
        st = gw.status()
        assert st["plugins"]["cf_plugin"]["by_hook"] == {"parse_config": 1}
        assert st["plugins"]["cf_plugin"]["state"] == "faulting"
        plugin.fail = False
        assert gw.gateway.reload() and gw.gateway.sessions["cf"].config == {"v": 2}
