"""
Routing: which providers serve an instrument, and under which code.

A :class:`RouteTable` is pure data: exchange → provider mappings ordered by
priority, plus explicit provider codes per instrument. ``resolve`` applies
the rules, in order:

1. an explicit mapping (``provider_instrument_mappings`` in PostgreSQL, or
   ``[instruments."NSE:RELIANCE"]`` in the config file);
2. the provider's own documented derivation rule (the
   ``mdgate_instrument_code`` hook, e.g. Yahoo's ``.NS`` suffix);
3. nothing else: no guessing. A provider with no code for the instrument is
   skipped; when none is left the instrument has no route.

Tables come from the built-in defaults plus the config file
(:func:`default_table`) or from a :class:`RouteSource` plugin such as the
PostgreSQL one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mdgate.errors import NoRouteError
from mdgate.model import parse_instrument

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from mdgate.config import Settings

__all__ = [
    "DEFAULT_EXCHANGES",
    "ExchangeRoute",
    "InstrumentMapping",
    "Route",
    "RouteSource",
    "RouteTable",
    "default_table",
]

#: ``derive(provider, exchange, symbol) -> code | None``
Deriver = Callable[[str, str, str], "str | None"]


@dataclass(frozen=True, slots=True)
class ExchangeRoute:
    """One exchange → provider mapping (a row of ``exchange_provider_mappings``)."""

    exchange: str
    provider: str
    priority: int = 0
    primary: bool = False
    active: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    """One resolved candidate for an instrument: provider, its code, and why."""

    instrument: str
    provider: str
    code: str
    priority: int
    primary: bool
    reason: str


@dataclass(frozen=True, slots=True)
class InstrumentMapping:
    """
    One explicit instrument → provider code mapping (a row of
    ``provider_instrument_mappings``), e.g. from Dhan's scrip master:
    ``InstrumentMapping("NSE:RELIANCE", "dhan", "NSE_EQ:2885", {"segment": "NSE_EQ",
    "security_id": "2885", "tick_size": "0.05", "lot_size": "1", "series": "EQ"})``.
    """

    instrument: str
    provider: str
    code: str
    extra: Mapping[str, str] = field(default_factory=dict)


#: Built-in defaults: NASDAQ/NYSE → Yahoo; NSE/BSE → Dhan, Yahoo as backup.
DEFAULT_EXCHANGES: tuple[ExchangeRoute, ...] = (
    ExchangeRoute("NASDAQ", "yahoo", 0, True),
    ExchangeRoute("NYSE", "yahoo", 0, True),
    ExchangeRoute("NSE", "dhan", 0, True),
    ExchangeRoute("NSE", "yahoo", 10, False),
    ExchangeRoute("BSE", "dhan", 0, True),
    ExchangeRoute("BSE", "yahoo", 10, False),
)


@dataclass(frozen=True)
class RouteTable:
    """Exchange mappings and explicit instrument codes (immutable; replace on reload)."""

    #: exchange → mappings, sorted by priority (lowest first).
    exchanges: Mapping[str, tuple[ExchangeRoute, ...]]
    #: (provider, instrument) → provider code.
    codes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: Where the table came from (``defaults``, ``postgresql``, ``cache:PATH``).
    source: str = "defaults"

    @classmethod
    def build(
        cls, rows: list[ExchangeRoute], codes: Mapping[tuple[str, str], str], source: str
    ) -> RouteTable:
        """Build a table from unordered rows (later duplicate rows win)."""
        by_key: dict[tuple[str, str], ExchangeRoute] = {}
        for row in rows:
            by_key[(row.exchange, row.provider)] = row
        exchanges: dict[str, list[ExchangeRoute]] = {}
        for row in by_key.values():
            exchanges.setdefault(row.exchange, []).append(row)
        ordered = {
            ex: tuple(sorted(rs, key=lambda r: (r.priority, not r.primary, r.provider)))
            for ex, rs in exchanges.items()
        }
        return cls(ordered, dict(codes), source)

    def resolve(
        self, instrument: str, derive: Deriver, providers: frozenset[str] | None = None
    ) -> list[Route]:
        """
        Return the candidates for ``instrument``, best first.

        Args:
            instrument: ``EXCHANGE:SYMBOL`` (any case).
            derive: the provider derivation rule (``mdgate_instrument_code``).
            providers: names of the providers that are loaded; others are skipped.

        Raises:
            InstrumentError: the name is malformed.
            NoRouteError: no active, loaded provider has a code for it.
        """
        name, exchange, symbol = parse_instrument(instrument)
        rows = self.exchanges.get(exchange)
        if not rows:
            raise NoRouteError(name, exchange)
        routes: list[Route] = []
        skipped: list[str] = []
        for row in rows:
            if not row.active:
                skipped.append(f"{row.provider} inactive")
                continue
            if providers is not None and row.provider not in providers:
                skipped.append(f"{row.provider} not installed")
                continue
            code = self.codes.get((row.provider, name))
            reason = "explicit mapping"
            if code is None:
                code = derive(row.provider, exchange, symbol)
                reason = "derived by the provider's rule"
            if code is None:
                skipped.append(f"{row.provider} has no code for {name}")
                continue
            role = "primary" if row.primary else f"backup (priority {row.priority})"
            routes.append(Route(name, row.provider, code, row.priority, row.primary, f"{role}; {reason}"))
        if not routes:
            why = "; ".join(skipped) or "no mapping"
            raise NoRouteError(name, exchange, f"no provider can serve {name} on {exchange}: {why}")
        return routes


def default_table(settings: Settings, declared: Sequence[tuple[str, Sequence[str]]] = ()) -> RouteTable:
    """
    The built-in exchange defaults plus ``[instruments]`` codes from the config.

    Args:
        settings: the configuration (for ``[instruments]``).
        declared: ``(provider, exchanges)`` of installed providers, in load
            order. An exchange the built-in defaults do not cover is routed to
            the providers that declare it: the first is primary (priority
            100), the next are backups (101, 102...). This is how a
            third-party provider serves a new exchange without a database.
    """
    codes = {
        (provider, instrument): code
        for instrument, table in settings.instruments.items()
        for provider, code in table.items()
    }
    rows = list(DEFAULT_EXCHANGES)
    builtin = {r.exchange for r in DEFAULT_EXCHANGES}
    seen: dict[str, int] = {}
    for provider, exchanges in declared:
        for exchange in exchanges:
            if exchange in builtin:
                continue
            n = seen.get(exchange, 0)
            rows.append(ExchangeRoute(exchange, provider, 100 + n, n == 0))
            seen[exchange] = n + 1
    return RouteTable.build(rows, codes, "defaults")


@runtime_checkable
class RouteSource(Protocol):
    """A live source of routing tables (PostgreSQL), from ``mdgate_route_source``."""

    #: Where tables come from, secrets masked (for logs and ``mdgate routes``).
    description: str

    async def load(self) -> RouteTable:
        """Load the current table. Raise ``RoutingError`` when it cannot."""
        ...

    async def watch(self, on_change: Callable[[RouteTable], None], *, task_status: TaskStatus[None]) -> None:
        """
        Run until cancelled: call ``on_change`` with a fresh table whenever the
        source changes (and after reconnecting to it). Call
        ``task_status.started()`` once watching. Must survive the source going
        away (reconnect with backoff; keep the last table).
        """
