"""
Plugin fault containment, unit by unit: the ledger, loading, the global
hooks (store, route source, commands, backfill), routing and provider
configuration. Whatever a plugin raises or returns, it is recorded under its
name and the rest goes on. (End to end, with every fault at once in a real
``mdgate run``: tests/integration/test_plugin_faults.py.)
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import click
import pytest
from structlog.testing import capture_logs

from mdgate import ConfigError, ProviderDisabled, ProviderSpec, hookimpl
from mdgate._config import Settings
from mdgate._errors import PluginError
from mdgate._model import Bar
from mdgate._providers import registry as registry_module
from mdgate._providers.calls import add_commands, backfill, select_route_source, select_store
from mdgate._providers.faults import PluginFaults, describe, scrub
from mdgate._providers.registry import MAX_PROVIDERS_PER_PLUGIN, load_registry
from mdgate._routing.router import Router, parse_provider_configs
from mdgate._routing.table import ExchangeRoute, RouteTable

EXAMPLE_ONLY = {"MDGATE_LOAD_PLUGINS": "example"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the ledger ---------------------------------------------------------------------


def test_passing_fault_makes_plugin_faulting_for_recent_seconds_then_ok():
    clock = Clock()
    faults = PluginFaults(clock=clock, recent=60.0)
    assert not faults.degraded()
    faults.record("p", "mdgate_connect", RuntimeError("boom"))
    assert faults.state("p") == "faulting" and faults.degraded()
    clock.now += 59.9
    assert faults.state("p") == "faulting"
    clock.now += 0.2
    assert faults.state("p") == "ok" and not faults.degraded()
    st = faults.status()["p"]
    assert st["faults"] == 1 and st["by_hook"] == {"mdgate_connect": 1}
    assert st["last_error"] == "RuntimeError: boom" and st["last_hook"] == "mdgate_connect"


def test_lasting_fault_stays_failed_until_recovered():
    clock = Clock()
    faults = PluginFaults(clock=clock, recent=1.0)
    faults.record("p", "parse_config", ValueError("x"), lasting=True, part="parse_config(a)")
    clock.now += 3600
    assert faults.state("p") == "failed" and faults.degraded()
    faults.recover("p", "parse_config(b)")  # another part: still failed
    assert faults.state("p") == "failed"
    faults.recover("p", "parse_config(a)")
    assert faults.state("p") == "ok" and faults.count("p") == 1


def test_fault_log_is_rate_limited_per_plugin_and_hook_with_suppressed_count():
    clock = Clock()
    faults = PluginFaults(clock=clock, log_interval=10.0)
    with capture_logs() as logs:
        for _ in range(5):
            faults.record("p", "decoder", RuntimeError("bad"))
        faults.record("p", "mdgate_connect", RuntimeError("other hook logs at once"))
        clock.now += 10.0
        faults.record("p", "decoder", RuntimeError("bad"))
    lines = [(e["hook"], e["suppressed"]) for e in logs if e["event"] == "plugin_fault"]
    assert lines == [("decoder", 0), ("mdgate_connect", 0), ("decoder", 4)]
    assert faults.count("p") == 7 and faults.count() == 7


def test_error_text_bounded_scrubbed_and_never_raises():
    long = describe(RuntimeError("x" * 100_000))
    assert len(long) == 300 and long.endswith("...")

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no")

    assert describe(Unprintable()) == "Unprintable: <unprintable message>"
    text = scrub("open wss://u:pw1@h/x?token=tk1&a=1 failed; Bearer abc.def password=hunter2 api_key: 'k1'")
    for secret in ("pw1", "tk1", "abc.def", "hunter2", "k1"):
        assert secret not in text
    assert "wss://u:***@h/x" in text


def test_hidden_values_masked_in_every_recorded_error():
    faults = PluginFaults()
    faults.hide(["s3cr3t-token-value", None, "abc"])  # too short to hide: ordinary words stay
    faults.record("p", "mdgate_connect", RuntimeError("refused s3cr3t-token-value for abc"))
    assert faults.status()["p"]["last_error"] == "RuntimeError: refused *** for abc"


# -- loading ------------------------------------------------------------------------


class _EP:
    def __init__(self, name: str, load: Any) -> None:
        self.name, self.value, self.dist, self._load = name, f"tests:{name}", None, load

    def load(self) -> Any:
        return self._load()


def _with_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: _EP) -> None:
    real = registry_module.find_entry_points
    monkeypatch.setattr(registry_module, "find_entry_points", lambda group: [*real(group=group), *eps])


def _raise(exc: BaseException) -> Any:
    def load() -> Any:
        raise exc
    return load


@pytest.mark.parametrize("exc", [SystemExit("bye"), SystemExit(3), GeneratorExit(), RuntimeError("boom"),
                                 ImportError("no module")])
def test_import_raising_anything_is_reported_failed_and_the_rest_loads(monkeypatch, exc):
    _with_entry_points(monkeypatch, _EP("broken", _raise(exc)))
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "example,broken"})
    info = next(i for i in reg.plugins if i.name == "broken")
    assert info.status == "failed" and type(exc).__name__ in (info.error or "")
    assert "example" in reg.providers
    st = reg.faults.status()["broken"]
    assert st["state"] == "failed" and st["by_hook"] == {"import": 1}


def test_keyboard_interrupt_at_import_is_not_contained(monkeypatch):
    _with_entry_points(monkeypatch, _EP("ctrl_c", _raise(KeyboardInterrupt())))
    with pytest.raises(KeyboardInterrupt):
        load_registry({"MDGATE_LOAD_PLUGINS": "ctrl_c"})


def test_entry_point_loading_none_is_failed(monkeypatch):
    _with_entry_points(monkeypatch, _EP("nothing", lambda: None))
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "nothing"})
    assert next(i for i in reg.plugins if i.name == "nothing").status == "failed"


def test_plugin_whose_name_is_taken_fails_without_unregistering_the_other(monkeypatch):
    class Store:
        @hookimpl
        def mdgate_store(self, settings):
            raise AssertionError("never called")

    _with_entry_points(monkeypatch, _EP("memory_store", Store))
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "memory_store"})
    infos = [i for i in reg.plugins if i.name == "memory_store"]
    assert [i.status for i in infos] == ["loaded", "failed"]
    assert select_store(reg, Settings()).kind == "memory"


def test_broken_distribution_metadata_loads_the_builtins_and_reports_it(monkeypatch):
    def broken(group: str) -> Any:
        raise SystemExit("corrupt METADATA")

    monkeypatch.setattr(registry_module, "find_entry_points", broken)
    reg = load_registry({})
    loaded = {i.name for i in reg.plugins if i.status == "loaded"}
    assert {"memory_store", "redis_store", "pg_routes"} <= loaded
    assert reg.faults.status()["entry_points"]["by_hook"] == {"discovery": 1}


def test_unreadable_distribution_of_an_entry_point_still_shows_the_plugin(monkeypatch):
    class Dist:
        @property
        def name(self) -> str:
            raise RuntimeError("unreadable")

    ep = _EP("odd", lambda: Providers([_spec("odd")]))
    ep.dist = Dist()
    _with_entry_points(monkeypatch, ep)
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "odd"})
    info = next(i for i in reg.plugins if i.name == "odd")
    assert info.status == "loaded" and info.distribution is None and "odd" in reg.providers


class Providers:
    """A plugin whose ``mdgate_providers`` returns ``result`` (called if callable)."""

    def __init__(self, result: Any) -> None:
        self.result = result

    @hookimpl
    def mdgate_providers(self) -> Any:
        return self.result() if callable(self.result) else self.result

    @hookimpl
    def mdgate_store(self, settings: Any) -> Any:
        raise AssertionError("a failed plugin must not be called")


def _spec(name: str = "junk", **kw: Any) -> ProviderSpec:
    return ProviderSpec(**{"name": name, "code": "JK", "exchanges": ("JUNK",), **kw})


def _half_then_raise():
    yield _spec("first")
    raise SystemExit("mid-way")


@pytest.mark.parametrize("result", [
    None, "yahoo", 42, {"name": "x"}, ["not a spec"], [_spec(), 42], _half_then_raise,
    [_spec(name="")], [_spec(name="two words")], [_spec(exchanges="NSE")], [_spec(exchanges=("nse",))],
    [_spec(max_per_message=0)], [_spec(max_connections=True)], [_spec(stall_timeout=float("nan"))],
    [_spec(heartbeat_interval=-1)], [_spec(settings={"url": 1})], [_spec(secrets="TOKEN")],
    [_spec(parse_config="not callable")], [ProviderSpec("junk", "", ("JUNK",))],
    [_spec(instrument_table="yes")],
    [_spec(), _spec()], [_spec("example")],
    lambda: itertools.repeat(_spec()),  # never ends: cut at the limit
    lambda: (_spec(f"p{i}") for i in range(MAX_PROVIDERS_PER_PLUGIN + 1)),
])
def test_providers_junk_fails_the_plugin_whole_and_keeps_the_others(result):
    reg = load_registry(EXAMPLE_ONLY, extra=[("junk", Providers(result))])
    info = next(i for i in reg.plugins if i.name == "junk")
    assert info.status == "failed" and info.error and info.providers == []
    assert set(reg.providers) == {"example"}  # nothing of the junk plugin, not even a first good spec
    assert reg.providers["example"].spec.code == "EX"
    assert reg.faults.status()["junk"]["failed"].keys() == {"mdgate_providers"}
    # a failed plugin is unregistered: none of its other hooks is ever called
    assert reg.pm.get_plugin("junk") is None
    assert select_store(reg, Settings()).kind == "memory"


def test_valid_providers_of_a_plugin_all_load():
    two = Providers([_spec("a"), _spec("b", heartbeat_interval=5)])
    reg = load_registry(EXAMPLE_ONLY, extra=[("two", two)])
    assert {"a", "b", "example"} == set(reg.providers)
    assert not reg.faults.degraded()


def test_declared_secret_values_are_hidden_in_fault_texts():
    spec = ProviderSpec("sec", "SC", ("SEC",), secrets=("SEC_TOKEN",))
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "", "SEC_TOKEN": "tok-0123456789"},
                        extra=[("sec", Providers([spec]))])
    reg.faults.record("sec", "mdgate_connect", RuntimeError("refused tok-0123456789"))
    assert "tok-0123456789" not in str(reg.faults.status())


# -- global hooks: store, route source, commands, backfill ------------------------


class StorePlugin:
    def __init__(self, result: Any) -> None:
        self.result = result

    @hookimpl(tryfirst=True)
    def mdgate_store(self, settings: Any) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.mark.parametrize("result", [RuntimeError("store bug"), SystemExit(1), "not a store", object()])
def test_faulty_store_falls_back_to_memory_loudly_and_lasting(result):
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("bad_store", StorePlugin(result))])
    with capture_logs() as logs:
        store = select_store(reg, Settings())
    assert store.kind == "memory"
    assert any(e["event"] == "store_fallback" and e["faulted"] == ["bad_store"] for e in logs)
    assert reg.faults.state("bad_store") == "failed" and reg.faults.degraded()


def test_store_fallback_even_when_the_memory_store_plugin_is_blocked():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "", "MDGATE_DISABLE_PLUGINS": "memory_store"},
                        extra=[("bad_store", StorePlugin(RuntimeError("bug")))])
    assert select_store(reg, Settings()).kind == "memory"


def test_no_store_and_no_fault_is_still_an_error():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "", "MDGATE_DISABLE_PLUGINS": "memory_store"})
    with pytest.raises(PluginError, match="no plugin provided a tick store"):
        select_store(reg, Settings())


def test_store_config_error_is_the_operators_and_stops_the_start():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""},
                        extra=[("cfg_store", StorePlugin(ConfigError("redis.url", "bad")))])
    with pytest.raises(ConfigError):
        select_store(reg, Settings())


def test_keyboard_interrupt_in_a_hook_is_not_contained():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("ki", StorePlugin(KeyboardInterrupt()))])
    with pytest.raises(KeyboardInterrupt):
        select_store(reg, Settings())


class RoutesPlugin:
    def __init__(self, result: Any) -> None:
        self.result = result

    @hookimpl
    def mdgate_route_source(self, settings: Any) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.mark.parametrize("result", [RuntimeError("routes bug"), GeneratorExit(), {"routes": 1}])
def test_faulty_route_source_means_builtin_routes_and_a_lasting_fault(result):
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("bad_routes", RoutesPlugin(result))])
    assert select_route_source(reg, Settings()) == (None, None)
    assert reg.faults.state("bad_routes") == "failed"


class Commands:
    def __init__(self, name: str, fail: BaseException | None) -> None:
        self.name, self.fail = name, fail

    @hookimpl
    def mdgate_add_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command(self.name, callback=lambda: None))
        if self.fail is not None:
            raise self.fail


@pytest.mark.parametrize("exc", [SystemExit(2), RuntimeError("cli bug")])
def test_faulty_add_commands_leaves_its_commands_out_and_keeps_the_others(exc):
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[
        ("good_cli", Commands("good-cmd", None)), ("bad_cli", Commands("half-cmd", exc)),
    ])
    cli = click.Group("mdgate")
    cli.add_command(click.Command("run"))
    add_commands(reg, cli)
    assert {"run", "good-cmd", "db"} <= set(cli.commands) and "half-cmd" not in cli.commands
    with click.Context(cli, info_name="mdgate") as ctx:
        assert "half-cmd" not in cli.get_help(ctx)
    assert reg.faults.status()["bad_cli"]["by_hook"] == {"mdgate_add_commands": 1}


class Backfiller:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    @hookimpl
    def mdgate_providers(self) -> Any:
        return [ProviderSpec("bf", "BF", ("BF",))]

    @hookimpl
    def mdgate_backfill(self, provider, config, instrument, code, start_ms, end_ms) -> Any:
        if self.behaviour == "raises":
            raise SystemExit("backfill bug")
        if self.behaviour == "not awaitable":
            return [1, 2]

        async def fetch() -> Any:
            if self.behaviour == "await raises":
                raise ZeroDivisionError("in the coroutine")
            if self.behaviour == "junk bars":
                return [{"open": 1}]
            return [Bar(instrument, 60_000, 1.0, 1.0, 1.0, 1.0, 1, 1)]

        return fetch()


def _backfill(reg: Any) -> Any:
    return backfill(reg, "bf", config={}, instrument="BF:X", code="X", start_ms=0, end_ms=120_000)


@pytest.mark.parametrize("behaviour", ["raises", "not awaitable", "await raises", "junk bars"])
def test_faulty_backfill_is_one_plugin_error_naming_the_plugin(behaviour):
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("bf_plugin", Backfiller(behaviour))])

    async def run() -> Any:
        pending = _backfill(reg)
        return await pending

    with pytest.raises(PluginError, match="plugin 'bf_plugin' faulted in mdgate_backfill"):
        anyio.run(run)
    assert reg.faults.status()["bf_plugin"]["by_hook"] == {"mdgate_backfill": 1}


def test_working_backfill_returns_its_bars():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("bf_plugin", Backfiller("ok"))])

    async def run() -> Any:
        return await _backfill(reg)

    assert [b.start for b in anyio.run(run)] == [60_000]
    assert reg.faults.count() == 0


# -- routing: mdgate_instrument_code ---------------------------------------------


class Coder:
    """Provider ``name`` on exchange SHARED; its derivation rule does ``behaviour``."""

    def __init__(self, name: str, behaviour: str) -> None:
        self.name, self.behaviour = name, behaviour

    @hookimpl
    def mdgate_providers(self) -> Any:
        return [ProviderSpec(self.name, self.name.upper()[:8], ("SHARED",))]

    @hookimpl
    def mdgate_instrument_code(self, provider, config, exchange, symbol) -> Any:
        if provider != self.name:
            return None
        if self.behaviour == "raises":
            raise SystemExit("code bug")
        return {"ok": symbol, "int": 42, "empty": "", "huge": "X" * 129}[self.behaviour]


def _router(primary: str) -> Router:
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""},
                        extra=[("bad_coder", Coder("bad", primary)), ("good_coder", Coder("good", "ok"))])
    table = RouteTable.build([ExchangeRoute("SHARED", "bad", 0, True), ExchangeRoute("SHARED", "good", 10)],
                             {}, "test")
    return Router(reg, parse_provider_configs(reg, Settings()), table)


@pytest.mark.parametrize("behaviour", ["raises", "int", "empty", "huge"])
def test_faulty_instrument_code_means_no_code_from_that_provider_only(behaviour):
    router = _router(behaviour)
    routes = router.resolve("SHARED:ABC")
    assert [(r.provider, r.code) for r in routes] == [("good", "ABC")]
    st = router.registry.faults.status()["bad_coder"]
    assert st["by_hook"] == {"mdgate_instrument_code": 1} and st["state"] == "faulting"


def test_working_instrument_code_is_used_and_records_nothing():
    router = _router("ok")
    assert [r.provider for r in router.resolve("SHARED:ABC")] == ["bad", "good"]
    assert router.registry.faults.count() == 0


# -- provider configuration: parse_config ------------------------------------------


class Configured:
    def __init__(self, name: str) -> None:
        self.name = name
        self.fail: BaseException | None = None

    def parse_config(self, table: Any, environ: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        return {"v": table.get("v")}

    @hookimpl
    def mdgate_providers(self) -> Any:
        return [ProviderSpec(self.name, "CF", ("CF",), parse_config=self.parse_config)]


def _settings(v: int) -> Settings:
    return Settings(providers={"cf": {"v": v}})


def test_parse_config_bug_disables_that_provider_only_at_start():
    plugin = Configured("cf")
    plugin.fail = SystemExit("parse bug")
    reg = load_registry(EXAMPLE_ONLY, extra=[("cf_plugin", plugin)])
    configs = parse_provider_configs(reg, _settings(1))
    assert "example" in configs.configs and "cf" not in configs.configs
    assert configs.disabled["cf"] == "plugin 'cf_plugin' faulted in parse_config: SystemExit: parse bug"
    assert reg.faults.state("cf_plugin") == "failed"


def test_parse_config_bug_on_reload_keeps_the_running_config_then_recovers():
    plugin = Configured("cf")
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("cf_plugin", plugin)])
    first = parse_provider_configs(reg, _settings(1))
    plugin.fail = KeyError("bug")
    second = parse_provider_configs(reg, _settings(2), first)
    assert second.configs["cf"] == {"v": 1} and "cf" not in second.disabled
    assert reg.faults.state("cf_plugin") == "faulting"
    plugin.fail = None
    assert parse_provider_configs(reg, _settings(3), second).configs["cf"] == {"v": 3}


def test_parse_config_fault_at_start_lifted_by_a_reload_that_works():
    plugin = Configured("cf")
    plugin.fail = RuntimeError("bug")
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("cf_plugin", plugin)])
    first = parse_provider_configs(reg, _settings(1))
    assert reg.faults.state("cf_plugin") == "failed"
    plugin.fail = None
    assert parse_provider_configs(reg, _settings(2), first).configs["cf"] == {"v": 2}
    assert reg.faults.state("cf_plugin") == "faulting"  # the start-up fault is recent, no longer lasting


@pytest.mark.parametrize("exc", [ConfigError("providers.cf.v", "bad"), ProviderDisabled("cf", "no token")])
def test_parse_config_config_errors_keep_their_meaning(exc):
    plugin = Configured("cf")
    plugin.fail = exc
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=[("cf_plugin", plugin)])
    if isinstance(exc, ConfigError):
        with pytest.raises(ConfigError):
            parse_provider_configs(reg, _settings(1))
    else:
        assert parse_provider_configs(reg, _settings(1)).disabled == {"cf": "no token"}
    assert reg.faults.count() == 0


# -- a store object that faults after it was chosen ---------------------------------


class _BrokenStoreModule:
    """A store plugin whose store's background task and status() raise."""

    __name__ = "tests.broken_store"

    class Store:
        kind = "broken"

        def __init__(self) -> None:
            from mdgate.plugins.stores.memory_store import MemoryStore

            self.inner = MemoryStore()

        async def run(self, *, task_status: Any) -> None:
            task_status.started()
            await anyio.sleep(0.01)
            raise RuntimeError("store task bug")

        def status(self) -> dict[str, Any]:
            raise RuntimeError("status bug")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    @hookimpl(tryfirst=True)
    def mdgate_store(self, settings: Any) -> Any:
        return _BrokenStoreModule.Store()


async def test_store_task_and_status_faults_keep_the_daemon_up_and_degraded():
    from mdgate.testing import running_gateway

    plugin = _BrokenStoreModule()
    async with running_gateway(Settings(), extra_plugins=[("broken_store", plugin)],
                               environ=EXAMPLE_ONLY) as gw:
        with anyio.fail_after(5):
            while "store.run" not in gw.gateway.registry.faults.status().get("broken_store", {}).get(
                    "by_hook", {}):
                await anyio.sleep(0.01)
        st = gw.gateway.status()
        assert st["status"] == "degraded"
        assert st["store"]["state"] == "down" and "store task bug" in st["store"]["error"]
        assert st["plugins"]["broken_store"]["state"] == "failed"
        gw.gateway.store_guard.fault = None  # now only status() itself raises
        st = gw.gateway.status()
        assert st["store"]["state"] == "down" and "status bug" in st["store"]["error"]
        assert st["plugins"]["broken_store"]["by_hook"]["store.status"] == 1
