"""
A provider-neutral core: the specs declare which exchanges each provider
serves and in which role; the built-in routes, the database seed and the
config file's ``[exchanges]`` (which overrides them exchange by exchange)
are built from that, never from provider names in the core.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mdgate._config import MAX_EXCHANGE_PROVIDERS, Settings, load_settings
from mdgate._errors import ConfigError, NoRouteError
from mdgate._provider import ProviderSpec
from mdgate._providers.registry import check_spec, load_registry
from mdgate._routing.router import Router, config_table
from mdgate._routing.table import NO_PROVIDER_HINT, default_table
from mdgate.plugins.pg_routes.seed import SeedProvider, seed_plan
from tests.unit._specs import SPECS

ROUTES = {
    "NASDAQ": [("yahoo", 0, True)],
    "NYSE": [("yahoo", 0, True)],
    "NSE": [("dhan", 0, True), ("yahoo", 10, False)],
    "BSE": [("dhan", 0, True), ("yahoo", 10, False)],
}


def rows(table: object) -> dict[str, list[tuple[str, int, bool]]]:
    return {ex: [(r.provider, r.priority, r.primary) for r in rs] for ex, rs in table.exchanges.items()}  # type: ignore[attr-defined]


def settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "mdgate.toml"
    path.write_text(text)
    return load_settings(path, {})


def test_real_specs_declare_their_roles() -> None:
    yahoo, dhan = SPECS
    assert [yahoo.role(e) for e in ("NASDAQ", "NYSE", "NSE", "BSE", "LSE")] == [
        "primary", "primary", "backup", "backup", None,
    ]
    assert [dhan.role(e) for e in ("NSE", "BSE", "NASDAQ")] == ["primary", "primary", None]
    # a third party's plain tuple: primary everywhere it lists
    assert ProviderSpec("x", "X", ("LSE",)).role("LSE") == "primary"


def test_builtin_routes_come_from_the_specs_primaries_before_backups_in_any_load_order() -> None:
    assert rows(default_table(Settings(), SPECS)) == ROUTES
    assert rows(default_table(Settings(), SPECS[::-1])) == ROUTES  # dhan loaded first: same table
    assert default_table(Settings(), SPECS).source == "defaults"
    # no provider loaded: no route at all (nothing is hard-coded), and the error says why
    empty = default_table(Settings(), ())
    assert empty.exchanges == {}
    with pytest.raises(NoRouteError, match="no loaded provider declares an exchange"):
        empty.resolve("NASDAQ:AAPL", lambda p, e, s: s)
    assert NO_PROVIDER_HINT.endswith("add an [exchanges] entry")


def test_only_the_example_loaded_routes_only_its_exchange() -> None:
    registry = load_registry({"MDGATE_LOAD_PLUGINS": "example"})
    assert rows(config_table(registry, Settings())) == {"EXAMPLE": [("example", 0, True)]}


def test_exchanges_section_replaces_each_named_exchange_and_adds_new_ones(tmp_path: Path) -> None:
    s = settings(tmp_path, '[exchanges]\nnse = ["yahoo"]\nLSE = ["example", "yahoo"]\n')
    assert s.exchanges == {"NSE": ("yahoo",), "LSE": ("example", "yahoo")}
    table = default_table(s, SPECS)
    assert rows(table) == {
        **ROUTES,
        "NSE": [("yahoo", 0, True)],  # the whole list replaced: dhan is gone from NSE
        "LSE": [("example", 0, True), ("yahoo", 10, False)],
    }
    assert table.source == "defaults+config"
    # a reassignment against the specs' roles: the backup made primary, the primary a backup
    swapped = default_table(settings(tmp_path, '[exchanges]\nBSE = ["yahoo", "dhan"]\n'), SPECS)
    assert rows(swapped)["BSE"] == [("yahoo", 0, True), ("dhan", 10, False)]


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('exchanges = ["NSE"]', "exchanges", "expected a table"),
        ('[exchanges]\nNSE = "dhan"', "exchanges.NSE", "non-empty list"),
        ("[exchanges]\nNSE = []", "exchanges.NSE", "non-empty list"),
        ('[exchanges]\n"N-S" = ["dhan"]', "exchanges.N-S", "not an exchange name"),
        ('[exchanges]\nNSE = ["dhan", 5]', "exchanges.NSE[1]", "not a provider name"),
        ('[exchanges]\nNSE = ["dhan", "dhan"]', "exchanges.NSE[1]", "listed twice"),
        ('[exchanges]\nNSE = ["a"]\nnse = ["b"]', "exchanges.nse", "named twice"),
        (f"[exchanges]\nNSE = {[f'p{i}' for i in range(MAX_EXCHANGE_PROVIDERS + 1)]}", "exchanges.NSE",
         f"at most {MAX_EXCHANGE_PROVIDERS} providers"),
    ],
)
def test_bad_exchanges_section_is_a_config_error_naming_the_key(
    tmp_path: Path, text: str, key: str, message: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, text)
    assert info.value.key == key and message in info.value.message


def test_provider_not_installed_is_a_warning_and_skipped_when_resolving(tmp_path: Path) -> None:
    registry = load_registry({"MDGATE_LOAD_PLUGINS": "example"})
    text = '[exchanges]\nLSE = ["nosuch", "example"]\n[instruments."LSE:VOD"]\nexample = "VOD"\n'
    s = settings(tmp_path, text)
    with capture_logs() as logs:
        router = Router.from_settings(registry, s)
    assert [(e["event"], e["key"], e["provider"]) for e in logs if e["event"].startswith("exchange")] == [
        ("exchange_provider_not_installed", "exchanges.LSE", "nosuch"),
    ]
    assert [(r.provider, r.code, r.primary) for r in router.resolve("LSE:VOD")] == [("example", "VOD", False)]
    with pytest.raises(NoRouteError, match="nosuch not installed; example has no code for LSE:BP"):
        router.resolve("LSE:BP")


def test_exchanges_with_a_route_source_is_not_live_and_says_so(tmp_path: Path) -> None:
    registry = load_registry({"MDGATE_LOAD_PLUGINS": "example"})
    s = settings(tmp_path, '[exchanges]\nLSE = ["example"]\n')

    class Source:
        description = "postgresql postgresql://u:***@db/x"

    with capture_logs() as logs:
        config_table(registry, s, Source())
    assert [e["source"] for e in logs if e["event"] == "exchanges_not_live"] == [Source.description]
    with capture_logs() as logs:
        config_table(registry, s)
    assert not [e for e in logs if e["event"] == "exchanges_not_live"]


def test_backup_for_must_name_listed_exchanges() -> None:
    check_spec(ProviderSpec("x", "X", ("NSE", "LSE"), backup_for=("NSE",)))
    with pytest.raises(ValueError, match="backup_for must be a sequence of names listed in exchanges"):
        check_spec(ProviderSpec("x", "X", ("NSE",), backup_for=("LSE",)))
    with pytest.raises(ValueError, match="backup_for"):
        check_spec(ProviderSpec("x", "X", ("NSE",), backup_for="NSE"))  # type: ignore[arg-type]


def test_seed_plan_takes_providers_codes_and_exchanges_from_the_specs(tmp_path: Path) -> None:
    plan = seed_plan(SPECS)
    yahoo, dhan = SeedProvider("yahoo", "YF", "Yahoo Finance"), SeedProvider("dhan", "DHAN", "Dhan")
    assert plan.providers == (yahoo, dhan)
    assert rows(default_table(Settings(), SPECS)) == {
        ex: [(r.provider, r.priority, r.primary) for r in plan.routes if r.exchange == ex] for ex in ROUTES
    }
    assert plan.exchanges["NSE"] == "National Stock Exchange of India"
    # a third provider alone: its own code, its exchange stored under its code
    third = ProviderSpec("lse", "LX", ("LSE",), display_name="LSE feed")
    plan = seed_plan([third])
    assert plan.providers == (SeedProvider("lse", "LX", "LSE feed"),)
    assert (dict(plan.exchanges), [(r.exchange, r.provider, r.primary) for r in plan.routes]) == (
        {"LSE": "LSE"}, [("LSE", "lse", True)],
    )
    # [exchanges] is the seed too; a mapping to a provider no spec declares is left out
    s = settings(tmp_path, '[exchanges]\nNSE = ["nosuch", "yahoo"]\n')
    nse = [(r.provider, r.priority, r.primary) for r in seed_plan(SPECS, s).routes if r.exchange == "NSE"]
    assert nse == [("yahoo", 10, False)]
