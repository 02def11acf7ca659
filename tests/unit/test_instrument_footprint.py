"""
What start-up with many instruments keeps per instrument (issue 17): one string per name,
shared route reasons, the config's codes read where they are, no state kept for what is
neither shown nor needed; and what it imports (no ``importlib.metadata`` for plugin
discovery, no fleet or recording module for a plain gateway). Sizes and times are measured
by ``benchmarks/bench_instruments.py``; these tests hold the rules that make them.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.metadata
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any, cast

import click
import pytest

from mdgate._config import OneCode, load_settings
from mdgate._providers import registry as registry_module
from mdgate._providers.registry import load_registry
from mdgate._routing.router import Router
from mdgate._routing.subscriptions import Active
from mdgate._routing.table import ConfigCodes

from .test_market_states import World

pytestmark = pytest.mark.anyio

CONFIG = """
[subscriptions]
always = ["NSE:AAA", "NSE:BBB"]

[instruments."NSE:AAA"]
dhan = "NSE_EQ:1"

[instruments."NSE:BBB"]
dhan = "NSE_EQ:2"
yahoo = "BBB.NS"
"""


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    path = tmp_path / "mdgate.toml"
    path.write_text(CONFIG)
    return load_settings(path, {})


def test_an_instrument_with_one_code_is_a_small_mapping_equal_to_its_dict(settings: Any) -> None:
    one, two = settings.instruments["NSE:AAA"], settings.instruments["NSE:BBB"]
    assert isinstance(one, OneCode) and isinstance(two, dict)
    assert one == {"dhan": "NSE_EQ:1"} and dict(one) == {"dhan": "NSE_EQ:1"} and len(one) == 1
    assert one["dhan"] == "NSE_EQ:1" and one.get("yahoo") is None and "dhan" in one and "yahoo" not in one
    with pytest.raises(KeyError):
        one["yahoo"]
    assert repr(one) == "{'dhan': 'NSE_EQ:1'}"


def test_instrument_names_are_the_files_own_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "".join(["NSE:", "AAA"])  # a string object of its own, as the TOML parser makes it
    doc = {"instruments": {name: {"dhan": "NSE_EQ:1"}}}
    monkeypatch.setattr(tomllib, "load", lambda fh: doc)
    (tmp_path / "mdgate.toml").write_text("")
    (key,) = load_settings(tmp_path / "mdgate.toml", {}).instruments
    assert key is name


def test_always_names_are_the_instruments_tables_own_strings(settings: Any) -> None:
    keys = {name: name for name in settings.instruments}
    for name in settings.subscriptions.always:
        assert name is keys[name]


def test_the_tables_codes_are_read_from_the_settings_not_copied(settings: Any) -> None:
    codes = ConfigCodes(settings.instruments)
    assert dict(codes) == {("dhan", "NSE:AAA"): "NSE_EQ:1", ("dhan", "NSE:BBB"): "NSE_EQ:2",
                           ("yahoo", "NSE:BBB"): "BBB.NS"}
    assert len(codes) == 3 and codes[("yahoo", "NSE:BBB")] == "BBB.NS"
    assert codes.get(("yahoo", "NSE:AAA")) is None and codes.get(("dhan", "NSE:ZZZ"), "-") == "-"
    assert ("dhan", "NSE:AAA") in codes and ("yahoo", "NSE:AAA") not in codes
    assert "NSE:AAA" not in cast(Any, codes)  # not a (provider, instrument) key
    with pytest.raises(KeyError):
        codes[("dhan", "NSE:ZZZ")]
    router = Router.from_settings(load_registry({}), settings)
    assert isinstance(router.table.codes, ConfigCodes) and router.table.codes == codes  # not a copy


def test_routes_share_the_callers_name_and_one_reason_string_per_kind(settings: Any) -> None:
    router = Router.from_settings(load_registry({}), settings)
    name_a, name_b = settings.subscriptions.always
    a, b = router.resolve(name_a), router.resolve(name_b)
    assert [r.provider for r in a] == [r.provider for r in b] == ["dhan", "yahoo"]
    assert all(r.instrument is name_a for r in a)
    assert a[0].reason == "primary; explicit mapping" and a[0].reason is b[0].reason
    assert router.resolve("nse:aaa")[0].instrument == "NSE:AAA"  # normalized when it was not


def test_a_subscribed_instrument_is_keyed_by_the_name_given_and_has_no_dict(settings: Any) -> None:
    from mdgate._app import Gateway

    gw = Gateway(settings, load_registry({}))
    assert gw.subs.set_always(settings.subscriptions.always) == []
    keys = {name: name for name in gw.subs.active}
    assert all(keys[name] is name for name in settings.subscriptions.always)
    act = gw.subs.active["NSE:AAA"]
    assert isinstance(act, Active) and not hasattr(act, "__dict__")
    client = "".join(["NSE:", "BBB"])
    gw.subs.linger = 0.0
    gw.subs.set_always(["NSE:AAA"])
    gw.subs.check()  # NSE:BBB released
    assert "NSE:BBB" not in gw.subs.active
    gw.subs.acquire(client)
    assert next(n for n in gw.subs.active if n == client) is client


async def test_market_hours_keep_silence_for_stale_instruments_only_and_share_unticked_entries() -> None:
    w = World(["NSE:AAA", "NSE:BBB"], stall=4.0)
    seen = w.hours._seen
    assert seen["NSE:AAA"] is seen["NSE:BBB"]  # subscribed in the same look, no tick yet
    assert w.hours.silent == {}
    w.tick("NSE:AAA")
    states = await w.at(5.0)
    assert states == {"NSE:AAA": "live", "NSE:BBB": "stale"}
    assert set(w.hours.silent) == {"NSE:BBB"}


def test_entry_points_are_found_as_importlib_metadata_finds_them() -> None:
    def rows(eps: Any) -> list[tuple[str, str, str | None, str | None]]:
        return [(e.name, e.value, e.dist.name, e.dist.version) for e in eps]

    for group in ("mdgate", "console_scripts", "pytest11"):
        ours = registry_module.find_entry_points(group)
        assert sorted(rows(ours)) == sorted(rows(importlib.metadata.entry_points(group=group)))
    example = next(e for e in registry_module.find_entry_points("mdgate") if e.name == "example")
    assert example.load().__name__ == "mdgate_example.plugin"
    assert registry_module._version("mdgate") == importlib.metadata.version("mdgate")
    assert registry_module._version("no-such-distribution") is None


def test_a_zip_on_the_path_is_left_to_importlib_metadata(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped_plugin-1.0.dist-info/METADATA", "Name: zipped-plugin\nVersion: 1.0\n\n")
        z.writestr("zipped_plugin-1.0.dist-info/entry_points.txt", "[mdgate]\nzipped = zipped_plugin\n")
    monkeypatch.syspath_prepend(str(archive))
    found = {e.name: e for e in registry_module.find_entry_points("mdgate")}
    assert found["zipped"].dist.version == "1.0"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_lists_the_plugins_without_importlib_metadata() -> None:
    loaded = _modules_after("from mdgate._cli.root import main\ntry:\n    main(['--help'])\n"
                            "except SystemExit:\n    pass")
    assert "mdgate_dhan.plugin" in loaded and "importlib.metadata" not in loaded
    assert not {m for m in loaded if m.startswith("mdgate.plugins.pg_routes.cli_")}  # listed, not imported


def test_the_database_commands_short_help_is_their_own() -> None:
    from mdgate._cli.root import LazyCommand
    from mdgate.plugins.pg_routes.cli import COMMANDS

    for name, (target, short_help) in COMMANDS.items():
        command = LazyCommand(name, target, short_help).load()
        assert (command.name, command.get_short_help_str(1000)) == (name, short_help)


def test_a_lazy_command_in_any_group_runs_the_real_one() -> None:
    import click
    from click.testing import CliRunner

    from mdgate._cli.root import LazyCommand

    group = click.Group("g")
    group.add_command(LazyCommand("hello", f"{__name__}:hello", "say hello"))
    result = CliRunner().invoke(group, ["hello", "--who", "you"])
    assert (result.exit_code, result.output) == (0, "hello you\n")


@click.command("hello")
@click.option("--who")
def hello(who: str) -> None:
    click.echo(f"hello {who}")


def test_a_plain_gateway_imports_no_fleet_role_and_no_recording_module() -> None:
    loaded = _modules_after("from mdgate._app import Gateway\nfrom mdgate._config import Settings\n"
                            "from mdgate._providers.registry import load_registry\n"
                            "Gateway(Settings(), load_registry({}))")
    assert not {"mdgate._fleet.roles", "mdgate._fleet.ingest", "mdgate._recording.replay",
                "mdgate._recording.recorder"} & loaded


def test_a_distribution_found_twice_on_the_path_counts_once_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    dist = tmp_path / "mdgate_example-9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Name: mdgate-example\nVersion: 9.9\n\n")
    (dist / "entry_points.txt").write_text("[mdgate]\nexample = somewhere_else\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    found = [e for e in registry_module.find_entry_points("mdgate") if e.name == "example"]
    assert [(e.value, e.dist.version) for e in found] == [("mdgate_example.plugin", "0.1.0")]
    assert [e.value for e in importlib.metadata.entry_points(group="mdgate") if e.name == "example"] == [
        "mdgate_example.plugin"]


async def test_a_gateway_serves_with_its_always_list_subscribed(settings: Any) -> None:
    from mdgate.testing import running_gateway

    settings = dataclasses.replace(settings, providers={"yahoo": {"url": "ws://127.0.0.1:9"}})
    async with running_gateway(settings) as gw:
        active = gw.gateway.subs.active
        assert set(active) == {"NSE:AAA", "NSE:BBB"} and all(a.always for a in active.values())


async def test_start_freezes_what_it_built_without_a_full_collection(
    settings: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mdgate.testing import running_gateway

    collections: list[tuple[Any, ...]] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or 0)
    settings = dataclasses.replace(settings, providers={"yahoo": {"url": "ws://127.0.0.1:9"}})
    gc.unfreeze()
    try:
        async with running_gateway(settings):
            assert gc.get_freeze_count() > 0 and collections == []
    finally:
        gc.unfreeze()


def test_a_listed_database_command_takes_config_as_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from mdgate._cli.root import build_cli, invoke

    cli = build_cli()
    assert invoke(cli, ["route", "--help"]) == 0
    assert "--config PATH" in capsys.readouterr().out
    assert invoke(cli, ["db", "status", "--help"]) == 0
    assert "--config PATH" in capsys.readouterr().out
