"""
The listing rule: on an exchange whose primary provider keeps an instrument
table, an instrument nobody lists is refused (``no_route`` naming it), even
when a backup's naming rule would make up a code for it. Also the empty-table
hint and the routing part of ``/status``.
"""

from __future__ import annotations

from typing import Any

import pytest

from mdgate._config import Settings, load_settings
from mdgate._errors import NoRouteError
from mdgate._providers.registry import load_registry
from mdgate._routing.router import Router
from mdgate._routing.table import SEED_HINT, ExchangeRoute, RouteTable, default_table, routing_health
from tests.unit._specs import SPECS

KNOWN = {"NSE:RELIANCE": "NSE_EQ:2885"}
TABLES = frozenset({"dhan"})


def derive(provider: str, exchange: str, symbol: str) -> str | None:
    """Yahoo's suffix rule; Dhan answers from its small known table only."""
    if provider == "yahoo":
        return {"NSE": f"{symbol}.NS", "BSE": f"{symbol}.BO"}.get(exchange, symbol)
    if provider == "dhan":
        return KNOWN.get(f"{exchange}:{symbol}")
    return None


def test_unknown_symbol_on_exchange_with_table_primary_is_refused_naming_it() -> None:
    table = default_table(Settings(), SPECS)
    with pytest.raises(NoRouteError) as info:
        table.resolve("nse:nosuchsymbol", derive, tables=TABLES)
    assert info.value.instrument == "NSE:NOSUCHSYMBOL" and info.value.exchange == "NSE"
    assert str(info.value).startswith(
        "unknown instrument NSE:NOSUCHSYMBOL: dhan, the primary provider of NSE"
    )
    # A listed one resolves to both providers, the backup through its rule.
    routes = table.resolve("NSE:RELIANCE", derive, tables=TABLES)
    assert [(r.provider, r.code) for r in routes] == [("dhan", "NSE_EQ:2885"), ("yahoo", "RELIANCE.NS")]


def test_exchange_whose_primary_has_no_table_keeps_derivation() -> None:
    table = default_table(Settings(), SPECS)
    assert [r.code for r in table.resolve("NASDAQ:ANYTHING", derive, tables=TABLES)] == ["ANYTHING"]
    # Without the declared property (a provider with derivation), the backup's rule serves.
    assert [r.code for r in table.resolve("NSE:NEWCO", derive)] == ["NEWCO.NS"]


def test_explicit_mapping_of_a_backup_lists_the_instrument() -> None:
    table = default_table(Settings(instruments={"NSE:NEWCO": {"yahoo": "NEWCO.NS"}}), SPECS)
    routes = table.resolve("NSE:NEWCO", derive, tables=TABLES)
    assert [(r.provider, r.code, r.reason) for r in routes] == [
        ("yahoo", "NEWCO.NS", "backup (priority 10); explicit mapping")
    ]


def test_switched_off_primary_still_decides_what_exists() -> None:
    rows = [ExchangeRoute("NSE", "dhan", 0, True, active=False), ExchangeRoute("NSE", "yahoo", 10)]
    table = RouteTable.build(rows, {}, "postgresql", listed=["NSE:IMPORTED"])
    with pytest.raises(NoRouteError, match="unknown instrument NSE:NOSUCHSYMBOL"):
        table.resolve("NSE:NOSUCHSYMBOL", derive, tables=TABLES)
    # Known to dhan's own table, or imported for dhan (listed): served by yahoo meanwhile.
    assert [r.provider for r in table.resolve("NSE:RELIANCE", derive, tables=TABLES)] == ["yahoo"]
    assert [r.code for r in table.resolve("NSE:IMPORTED", derive, tables=TABLES)] == ["IMPORTED.NS"]


def test_primary_without_flag_at_lowest_priority_is_still_the_gate() -> None:
    # The flagged primary decides, not the first row by priority.
    rows = [ExchangeRoute("NSE", "yahoo", 0, False), ExchangeRoute("NSE", "dhan", 5, True)]
    table = RouteTable.build(rows, {}, "t")
    with pytest.raises(NoRouteError, match="dhan, the primary provider of NSE"):
        table.resolve("NSE:NOSUCHSYMBOL", derive, tables=TABLES)


def test_empty_table_every_no_route_carries_the_seed_hint() -> None:
    table = RouteTable.build([], {}, "postgresql")
    for name in ("NASDAQ:AAPL", "NSE:RELIANCE"):
        with pytest.raises(NoRouteError) as info:
            table.resolve(name, derive, tables=TABLES)
        assert str(info.value) == (
            f"no route for {name}: the routing table (postgresql) is empty; {SEED_HINT}"
        )
    assert "`mdgate db seed`" in SEED_HINT


def test_real_dhan_declares_its_table_and_disabled_dhan_still_lists() -> None:
    env = {"MDGATE_LOAD_PLUGINS": "yahoo,dhan"}
    registry = load_registry(env)
    assert registry.providers["dhan"].spec.instrument_table
    assert not registry.providers["yahoo"].spec.instrument_table
    router = Router.from_settings(registry, load_settings(None, env))  # no Dhan credentials
    assert "dhan" in router.configs.disabled
    assert [(r.provider, r.code, r.reason) for r in router.resolve("NSE:RELIANCE")] == [
        ("dhan", "NSE_EQ:2885", "primary; in the provider's own table"),
        ("yahoo", "RELIANCE.NS", "backup (priority 10); derived by the provider's rule"),
    ]
    for name in ("NSE:NOSUCHSYMBOL", "BSE:NOSUCHSYMBOL"):
        with pytest.raises(NoRouteError, match=f"unknown instrument {name}"):
            router.resolve(name)
    assert [r.code for r in router.resolve("NASDAQ:AAPL")] == ["AAPL"]


class _Source:
    description = "postgresql postgresql://u:***@db/x"

    def __init__(self, state: str, error: str | None = None) -> None:
        self.report = {"state": state, "last_error": error, "since": 5}

    def status(self) -> dict[str, Any]:
        return self.report


def test_routing_health_degraded_when_source_down_or_table_empty() -> None:
    table = default_table(Settings(), SPECS)
    ok = routing_health(table, _Source("ok"))
    assert (ok["state"], ok["problems"], ok["source"]) == ("ok", [], "defaults")
    down = routing_health(table, _Source("down", "cannot reach the database at db: refused"))
    assert down["state"] == "degraded" and down["database"]["since"] == 5
    assert down["problems"] == [
        "route source postgresql postgresql://u:***@db/x is down: cannot reach the database at db: refused"
    ]
    empty = routing_health(RouteTable.build([], {}, "postgresql"), _Source("ok"))
    assert empty["state"] == "degraded"
    assert empty["problems"] == [f"the routing table (postgresql) is empty: {SEED_HINT}"]
    assert routing_health(table, None) == {"source": "defaults", "state": "ok", "problems": []}
