"""Plugin discovery, allow/block lists, and isolation of broken plugins."""

from __future__ import annotations

import importlib

import pytest

from mdgate import ProviderSpec, hookimpl
from mdgate._providers import registry as registry_module
from mdgate._providers.registry import get_plugin_manager, load_registry


def names(infos, status="loaded"):
    return {i.name for i in infos if i.status == status}


def test_entry_points_discover_yahoo_dhan_example_and_builtins():
    reg = load_registry({})
    assert {"yahoo", "dhan", "example", "memory_store"} <= names(reg.plugins)
    assert {"yahoo", "dhan", "example"} <= set(reg.providers)
    info = next(i for i in reg.plugins if i.name == "example")
    assert info.distribution == "mdgate-example" and info.version == "0.1.0"
    assert "mdgate_connect" in info.hooks and info.providers == ["example"]


def test_allow_list_loads_only_named_plugins():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "example"})
    assert set(reg.providers) == {"example"}
    assert {"yahoo", "dhan"} <= names(reg.plugins, "not allowed")
    assert "memory_store" in names(reg.plugins)  # built-ins always load


def test_empty_allow_list_loads_no_third_party_plugin():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": ""})
    assert reg.providers == {}


def test_block_list_blocks():
    reg = load_registry({"MDGATE_DISABLE_PLUGINS": "yahoo"})
    assert "yahoo" not in reg.providers and "yahoo" in names(reg.plugins, "blocked")


class _EP:
    def __init__(self, name, value):
        self.name, self.value, self.dist = name, value, None

    def load(self):
        return importlib.import_module(self.value)


def test_plugin_failing_to_import_is_reported_others_load(monkeypatch):
    real = registry_module.find_entry_points

    def fake(group):
        return [*real(group=group), _EP("broken", "mdgate_no_such_module_xyz")]

    monkeypatch.setattr(registry_module, "find_entry_points", fake)
    reg = load_registry({})
    broken = next(i for i in reg.plugins if i.name == "broken")
    assert broken.status == "failed" and "No module named" in (broken.error or "")
    assert "broken" in broken.error
    assert {"yahoo", "example"} <= set(reg.providers)


class RaisingProviders:
    @hookimpl
    def mdgate_providers(self):
        raise RuntimeError("boom at start")


class BadHookName:
    @hookimpl
    def mdgate_no_such_hook(self):
        return None


class Dup:
    @hookimpl
    def mdgate_providers(self):
        return [ProviderSpec("example", "DUP", ("X",))]


def test_plugin_raising_at_start_is_reported_others_keep_running():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "example"}, extra=[("raiser", RaisingProviders())])
    info = next(i for i in reg.plugins if i.name == "raiser")
    assert info.status == "failed" and "boom at start" in info.error
    assert "example" in reg.providers


def test_unknown_hook_rejected_by_check_pending():
    _, infos = get_plugin_manager({"MDGATE_LOAD_PLUGINS": ""}, extra=[("badhook", BadHookName())])
    info = next(i for i in infos if i.name == "badhook")
    assert info.status == "failed" and "mdgate_no_such_hook" in info.error


def test_duplicate_provider_name_reported_against_second_plugin():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "example"}, extra=[("dup", Dup())])
    assert reg.providers["example"].spec.code == "EX"
    assert "already declared" in next(i for i in reg.plugins if i.name == "dup").error


class OtherProviderBuggyConnect:
    """A plugin whose connect hook raises for every provider (even not its own)."""

    @hookimpl
    def mdgate_providers(self):
        return [ProviderSpec("other", "OT", ("OTHER",))]

    @hookimpl(tryfirst=True)
    def mdgate_connect(self, provider, config, connection):
        raise RuntimeError("buggy")


def test_provider_hooks_isolated_from_other_plugins():
    reg = load_registry({"MDGATE_LOAD_PLUGINS": "example"}, extra=[("other", OtherProviderBuggyConnect())])
    hooks = reg.provider("example")
    ep = hooks.connect(provider="example", config=hooks.spec.parse_config({}, {}), connection=0)
    assert ep.url.startswith("ws://")
    with pytest.raises(RuntimeError, match="buggy"):
        reg.provider("other").connect(provider="other", config={}, connection=0)
