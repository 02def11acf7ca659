"""
The plugin API version (``mdgate.PLUGIN_API``, a plugin's ``MDGATE_PLUGIN_API``):
the compatibility rule, the refusal at load, the listing, and pluggy's deprecation warnings.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator

import pluggy
import pytest
import structlog

import mdgate
from mdgate import ProviderSpec, hookimpl
from mdgate._cli.common import _REGISTRIES
from mdgate._cli.context import CommandContext
from mdgate._cli.root import build_cli, invoke
from mdgate._plugin_api import api_problem
from mdgate._providers import registry as registry_module
from mdgate._providers.registry import load_registry


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """An in-process ``invoke`` points structlog at this test's captured stderr: put it back after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_core_declares_plugin_api_1_0() -> None:
    assert mdgate.PLUGIN_API == "1.0"


@pytest.mark.parametrize(
    ("declared", "provided"), [("1.0", "1.0"), ("1.0", "1.3"), ("1.2", "1.3"), ("1.3", "1.3"), ("2.1", "2.1")]
)
def test_same_major_and_no_newer_minor_is_compatible(declared: str, provided: str) -> None:
    assert api_problem(declared, provided) is None


@pytest.mark.parametrize(
    ("declared", "provided"), [("2.0", "1.0"), ("1.4", "1.3"), ("1.0", "2.0"), ("0.9", "1.0")]
)
def test_other_major_or_newer_minor_is_refused_naming_both_versions(declared: str, provided: str) -> None:
    problem = api_problem(declared, provided)
    assert problem is not None
    assert f"built for mdgate plugin API {declared}; this mdgate provides {provided}" in problem


def test_a_plugin_built_for_a_newer_api_is_told_to_upgrade_mdgate() -> None:
    assert api_problem("2.0", "1.0") == (
        "built for mdgate plugin API 2.0; this mdgate provides 1.0 "
        "(upgrade mdgate or install a release of the plugin built for 1.x)"
    )


@pytest.mark.parametrize(
    "declared", ["1", "1.0.0", "v1.0", " 1.0", "1.a", "01.0", "", 1.0, 1, None, ("1", "0")]
)
def test_a_malformed_version_is_refused(declared: object) -> None:
    problem = api_problem(declared, "1.0")
    assert problem is not None and 'not a version "MAJOR.MINOR"' in problem
    assert "this mdgate provides plugin API 1.0" in problem


# -- at load: fake entry points whose modules declare versions -----------------------------------


class _EP:
    def __init__(self, name: str, value: str, loaded: object) -> None:
        self.name, self.value, self.dist, self._loaded = name, value, None, loaded

    def load(self) -> object:
        return self._loaded


def _plugin_module(name: str, provider: str, api: object = None) -> types.ModuleType:
    module = types.ModuleType(name)
    if api is not None:
        module.MDGATE_PLUGIN_API = api  # type: ignore[attr-defined]

    @hookimpl
    def mdgate_providers() -> list[ProviderSpec]:
        return [ProviderSpec(provider, provider.upper()[:4], ("NYSE",), backup_for=())]

    module.mdgate_providers = mdgate_providers  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> list[_EP]:
    """Entry points of group ``mdgate`` beyond the installed ones: append ``_EP`` objects."""
    added: list[_EP] = []
    real = registry_module.find_entry_points

    def fake(group: str) -> list[object]:
        return [*real(group=group), *added]

    monkeypatch.setattr(registry_module, "find_entry_points", fake)
    return added


def _env(*names: str) -> dict[str, str]:
    return {"MDGATE_LOAD_PLUGINS": ",".join(("example", *names))}


def test_a_plugin_built_for_2_0_is_refused_and_the_others_load(fake_plugins: list[_EP]) -> None:
    fake_plugins.append(_EP("future", "future_mod", _plugin_module("future_mod", "future", "2.0")))
    fake_plugins.append(_EP("current", "current_mod", _plugin_module("current_mod", "current", "1.0")))
    reg = load_registry(_env("future", "current"))
    info = next(i for i in reg.plugins if i.name == "future")
    assert info.status == "failed" and info.hooks == [] and info.api == "2.0"
    assert info.error is not None and "plugin API 2.0; this mdgate provides 1.0" in info.error
    assert reg.pm.get_plugin("future") is None and "future" not in reg.providers
    # a lasting load fault: /status shows the plugin failed, with why
    status = reg.faults.status()["future"]
    assert status["state"] == "failed" and "this mdgate provides 1.0" in status["failed"]["plugin_api"]
    assert {"example", "current"} <= set(reg.providers)


def test_a_plugin_built_for_1_0_or_an_older_minor_loads(
    fake_plugins: list[_EP], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "PLUGIN_API", "1.2")  # a later core: 1.0 and 1.1 plugins still load
    fake_plugins.append(_EP("old", "old_mod", _plugin_module("old_mod", "old", "1.0")))
    fake_plugins.append(_EP("mid", "mid_mod", _plugin_module("mid_mod", "mid", "1.1")))
    fake_plugins.append(_EP("newer", "newer_mod", _plugin_module("newer_mod", "newer", "1.3")))
    reg = load_registry(_env("old", "mid", "newer"))
    by_name = {i.name: i for i in reg.plugins}
    assert by_name["old"].status == "loaded" and by_name["old"].api == "1.0" and by_name["old"].warnings == []
    assert by_name["mid"].status == "loaded" and {"old", "mid"} <= set(reg.providers)
    assert by_name["newer"].status == "failed" and "newer" not in reg.providers
    assert "plugin API 1.3; this mdgate provides 1.2" in (by_name["newer"].error or "")


def test_a_malformed_declaration_is_refused(fake_plugins: list[_EP]) -> None:
    fake_plugins.append(_EP("odd", "odd_mod", _plugin_module("odd_mod", "odd", 1.0)))
    reg = load_registry(_env("odd"))
    info = next(i for i in reg.plugins if i.name == "odd")
    assert info.status == "failed" and "not a version" in (info.error or "") and "odd" not in reg.providers
    assert "example" in reg.providers


def test_an_undeclared_plugin_loads_with_a_warning(fake_plugins: list[_EP]) -> None:
    fake_plugins.append(_EP("legacy", "legacy_mod", _plugin_module("legacy_mod", "legacy")))
    reg = load_registry(_env("legacy"))
    info = next(i for i in reg.plugins if i.name == "legacy")
    assert info.status == "loaded" and info.api is None and "legacy" in reg.providers
    assert info.warnings == ["declares no MDGATE_PLUGIN_API; assuming 1.0"]
    assert "legacy" not in reg.faults.status()


def test_an_entry_point_naming_an_object_is_checked_on_its_module(
    fake_plugins: list[_EP], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _plugin_module("objmod", "objprov", "2.0")

    class Hooks:
        mdgate_providers = staticmethod(module.mdgate_providers)

    monkeypatch.setitem(sys.modules, "objmod", module)
    fake_plugins.append(_EP("obj", "objmod:Hooks", Hooks()))
    reg = load_registry(_env("obj"))
    assert next(i for i in reg.plugins if i.name == "obj").status == "failed"


def test_the_shipped_plugins_declare_the_current_api() -> None:
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "yahoo,dhan,example"})
    for name in ("yahoo", "dhan", "example"):
        info = next(i for i in reg.plugins if i.name == name)
        assert info.status == "loaded" and info.api == mdgate.PLUGIN_API and info.warnings == [], info


# -- mdgate plugins -----------------------------------------------------------------------------


def test_mdgate_plugins_shows_api_warnings_refusals_and_exchange_roles(
    fake_plugins: list[_EP], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_plugins.append(_EP("future", "future_mod", _plugin_module("future_mod", "future", "2.0")))
    fake_plugins.append(_EP("legacy", "legacy_mod", _plugin_module("legacy_mod", "legacy")))
    obj = CommandContext({})
    _REGISTRIES[obj] = load_registry({"MDGATE_LOAD_PLUGINS": "yahoo,future,legacy"})
    capsys.readouterr()  # the load's log lines (logging is not configured in-process)
    assert invoke(build_cli(), ["plugins", "--json"], obj) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    yahoo = rows["yahoo"]
    assert yahoo["api"] == "1.0" and yahoo["warnings"] == [] and yahoo["distribution"] == "mdgate-yahoo"
    (prov,) = yahoo["providers"]
    assert prov["primary"] == ["NASDAQ", "NYSE"] and prov["backup"] == ["NSE", "BSE"]
    assert set(prov["exchanges"]) == {"NASDAQ", "NYSE", "NSE", "BSE"}
    assert rows["future"]["status"] == "failed" and rows["future"]["failed_in"] == ["plugin_api"]
    assert rows["legacy"]["warnings"] == ["declares no MDGATE_PLUGIN_API; assuming 1.0"]

    assert invoke(build_cli(), ["plugins"], obj) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["PLUGIN", "STATUS", "DISTRIBUTION", "API", "PROVIDERS", "HOOKS"]
    assert "yahoo (YF: NASDAQ/NYSE; backup: NSE/BSE)" in out
    refused = "error: plugin 'future' failed to load: built for mdgate plugin API 2.0; this mdgate provides"
    assert refused + " 1.0" in out
    assert "warning: declares no MDGATE_PLUGIN_API; assuming 1.0" in out


# -- deprecations: pluggy's warn_on_impl ----------------------------------------------------------


def test_a_hookimpl_of_a_deprecated_hook_warns_through_pluggy() -> None:
    """The mechanism docs/plugin-api.md names for deprecations: a hookspec's ``warn_on_impl``."""
    spec = pluggy.HookspecMarker("mdgate")
    impl = pluggy.HookimplMarker("mdgate")

    class Specs:
        @spec(warn_on_impl=DeprecationWarning("mdgate_old is deprecated since plugin API 1.1; use mdgate_x"))
        def mdgate_old(self) -> None: ...

        @spec(warn_on_impl_args={"old": DeprecationWarning("argument old is deprecated since API 1.1")})
        def mdgate_args(self, old: int, new: int) -> None: ...

    class Plugin:
        @impl
        def mdgate_old(self) -> None: ...

    class OldArgs:
        @impl
        def mdgate_args(self, old: int) -> None: ...

    pm = pluggy.PluginManager("mdgate")
    pm.add_hookspecs(Specs)
    with pytest.warns(DeprecationWarning, match="deprecated since plugin API 1.1"):
        pm.register(Plugin())
    with pytest.warns(DeprecationWarning, match="argument old is deprecated"):
        pm.register(OldArgs())
