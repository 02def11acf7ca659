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

One rule comes before these: on an exchange whose primary provider keeps an
instrument table (``ProviderSpec.instrument_table``, e.g. Dhan), an
instrument must be listed: by an explicit mapping of any of the exchange's
providers, or by the primary's own table (its ``mdgate_instrument_code``).
A symbol nobody lists is refused, even when a backup's derivation rule (Yahoo's
``.NS`` suffix) would make up a code for it: a typo is an error, not a
subscription that never ticks. This holds whether or not the primary can run
right now (no credentials, switched off): its table is data, not a
connection.

Tables come from a :class:`RouteSource` plugin such as the PostgreSQL one,
or, without one, from the loaded providers' specs (each declares the
exchanges it serves and in which role) overridden by the config file's
``[exchanges]`` (:func:`default_table`). The core names no provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from mdgate._errors import NoRouteError
from mdgate._model import parse_instrument

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from mdgate._config import Settings
    from mdgate._provider import ProviderSpec

__all__ = [
    "NO_PROVIDER_HINT",
    "PRIORITY_STEP",
    "SEED_HINT",
    "ConfigCodes",
    "ExchangeRoute",
    "InstrumentMapping",
    "Route",
    "RouteSource",
    "RouteTable",
    "default_table",
    "empty_hint",
    "ranked",
    "routing_health",
    "spec_routes",
]

#: Why a code found by a table-keeping provider's hook was used.
_OWN_TABLE: Final = "in the provider's own table"

#: Ends every ``no_route`` error while the routing table is empty.
SEED_HINT: Final = "run `mdgate db seed` to add the default routes"
#: Ends them instead when the table is built without a route source.
NO_PROVIDER_HINT: Final = (
    "no loaded provider declares an exchange and [exchanges] names none; "
    "install a provider plugin (see `mdgate plugins`) or add an [exchanges] entry"
)


def empty_hint(source: str) -> str:
    """What to do about an empty table from ``source`` (:attr:`RouteTable.source`)."""
    return NO_PROVIDER_HINT if source.startswith("defaults") else SEED_HINT

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


#: Priority step between ranks of one exchange: rank ``i`` gets ``i * PRIORITY_STEP``
#: (0 for the primary), leaving room to slot a provider in with ``mdgate routes set``.
PRIORITY_STEP: Final = 10


def ranked(exchange: str, providers: Sequence[str]) -> list[ExchangeRoute]:
    """
    Rows for ``exchange`` served by ``providers`` in order: the first is
    primary (priority 0), the next are backups (10, 20...).
    """
    return [ExchangeRoute(exchange, p, i * PRIORITY_STEP, i == 0) for i, p in enumerate(providers)]


def spec_routes(specs: Iterable[ProviderSpec]) -> list[ExchangeRoute]:
    """
    The built-in routes, derived from the providers' specs alone.

    For each exchange some spec lists in ``exchanges``: the providers that
    declare it as primary come first, in load order, then the ones that
    declare it in ``backup_for``, in load order. With Yahoo and Dhan loaded:
    NASDAQ/NYSE → yahoo; NSE/BSE → dhan, then yahoo as backup.
    """
    primaries: dict[str, list[str]] = {}
    backups: dict[str, list[str]] = {}
    for spec in specs:
        for exchange in spec.exchanges:
            into = backups if spec.role(exchange) == "backup" else primaries
            into.setdefault(exchange, []).append(spec.name)
    rows: list[ExchangeRoute] = []
    for exchange in dict.fromkeys([*primaries, *backups]):
        rows.extend(ranked(exchange, [*primaries.get(exchange, ()), *backups.get(exchange, ())]))
    return rows


@dataclass(frozen=True)
class RouteTable:
    """Exchange mappings and explicit instrument codes (immutable; replace on reload)."""

    #: exchange → mappings, sorted by priority (lowest first).
    exchanges: Mapping[str, tuple[ExchangeRoute, ...]]
    #: (provider, instrument) → provider code.
    codes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: Where the table came from (``defaults``, ``postgresql``, ``cache:PATH``).
    source: str = "defaults"
    #: Instruments explicitly mapped for a provider that is switched off: not
    #: routable through it, but still known to exist (see the listing rule).
    listed: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        rows: list[ExchangeRoute],
        codes: Mapping[tuple[str, str], str],
        source: str,
        listed: Iterable[str] = (),
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
        # the config file's codes are read where they are (settings are immutable), others copied
        return cls(ordered, codes if isinstance(codes, ConfigCodes) else dict(codes), source,
                   frozenset(listed))

    def resolve(
        self,
        instrument: str,
        derive: Deriver,
        providers: frozenset[str] | None = None,
        tables: frozenset[str] = frozenset(),
    ) -> list[Route]:
        """
        Return the candidates for ``instrument``, best first.

        Args:
            instrument: ``EXCHANGE:SYMBOL`` (any case).
            derive: the provider derivation rule (``mdgate_instrument_code``).
            providers: names of the providers that are loaded; others are skipped.
            tables: loaded providers that keep an instrument table
                (``ProviderSpec.instrument_table``); when one is an exchange's
                primary, only listed instruments resolve.

        Raises:
            InstrumentError: the name is malformed.
            NoRouteError: no active, loaded provider has a code for it, or the
                exchange's primary keeps an instrument table that does not list it.
        """
        name, exchange, symbol = parse_instrument(instrument)
        if name == instrument:  # already normalized: keep the caller's string, not a copy per route
            name = instrument
        if not self.exchanges:
            hint = empty_hint(self.source)
            empty = f"no route for {name}: the routing table ({self.source}) is empty; {hint}"
            raise NoRouteError(name, exchange, empty)
        rows = self.exchanges.get(exchange)
        if not rows:
            raise NoRouteError(name, exchange)
        if tables:
            self._check_listed(name, exchange, symbol, rows, derive, tables)
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
                reason = _OWN_TABLE if row.provider in tables else "derived by the provider's rule"
            if code is None:
                skipped.append(f"{row.provider} has no code for {name}")
                continue
            routes.append(Route(name, row.provider, code, row.priority, row.primary,
                                _why(row.primary, row.priority, reason)))
        if not routes:
            why = "; ".join(skipped) or "no mapping"
            raise NoRouteError(name, exchange, f"no provider can serve {name} on {exchange}: {why}")
        return routes

    def _check_listed(
        self,
        name: str,
        exchange: str,
        symbol: str,
        rows: tuple[ExchangeRoute, ...],
        derive: Deriver,
        tables: frozenset[str],
    ) -> None:
        """Refuse ``name`` when the exchange's primary keeps a table and nothing lists it."""
        primary = next((r for r in rows if r.primary), rows[0])
        if primary.provider not in tables:
            return
        if name in self.listed or any((r.provider, name) in self.codes for r in rows):
            return
        if derive(primary.provider, exchange, symbol) is not None:
            return
        raise NoRouteError(
            name,
            exchange,
            f"unknown instrument {name}: {primary.provider}, the primary provider of {exchange}, "
            "does not list it and no explicit mapping names it (add one with `mdgate instruments add` "
            "or [instruments] if it exists)",
        )


#: The few distinct ``Route.reason`` texts, each held once (25,000 instruments would hold
#: 50,000 equal strings otherwise).
_REASONS: dict[tuple[bool, int, str], str] = {}


def _why(primary: bool, priority: int, reason: str) -> str:
    """``Route.reason``: the route's role and why it has its code (one shared string per kind)."""
    key = (primary, priority, reason)
    text = _REASONS.get(key)
    if text is None:
        role = "primary" if primary else f"backup (priority {priority})"
        text = _REASONS[key] = f"{role}; {reason}"
    return text


class ConfigCodes(Mapping[tuple[str, str], str]):
    """
    ``(provider, instrument) -> code`` read straight from the config file's
    ``[instruments]`` (instrument -> provider -> code), not copied: with
    25,000 instruments a copy keyed by tuples costs about 100 bytes each.
    """

    __slots__ = ("_instruments",)

    def __init__(self, instruments: Mapping[str, Mapping[str, str]]) -> None:
        self._instruments = instruments

    def __getitem__(self, key: tuple[str, str]) -> str:
        provider, instrument = key
        codes = self._instruments.get(instrument)
        if codes is None:
            raise KeyError(key)
        return codes[provider]

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        """The code of ``(provider, instrument)``, else ``default``."""
        codes = self._instruments.get(key[1])
        return default if codes is None else codes.get(key[0], default)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        codes = self._instruments.get(key[1])
        return codes is not None and key[0] in codes

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((provider, name) for name, codes in self._instruments.items() for provider in codes)

    def __len__(self) -> int:
        return sum(len(codes) for codes in self._instruments.values())


def default_table(settings: Settings, specs: Iterable[ProviderSpec] = ()) -> RouteTable:
    """
    The routing table used when no route source (database) is configured.

    Precedence, lowest first: the routes the loaded providers' specs declare
    (:func:`spec_routes`), then the config file's ``[exchanges]``, whose list
    replaces the whole provider list of each exchange it names (first =
    primary). Explicit codes come from ``[instruments]``. A provider named in
    ``[exchanges]`` but not loaded stays in the table; ``resolve`` skips it,
    saying so in its ``no_route`` error.

    Args:
        settings: the configuration (``[exchanges]``, ``[instruments]``).
        specs: the loaded providers' specs, in load order.
    """
    rows = [r for r in spec_routes(specs) if r.exchange not in settings.exchanges]
    for exchange, providers in settings.exchanges.items():
        rows.extend(ranked(exchange, providers))
    source = "defaults+config" if settings.exchanges else "defaults"
    return RouteTable.build(rows, ConfigCodes(settings.instruments), source)


def routing_health(table: RouteTable, source: RouteSource | None) -> dict[str, Any]:
    """
    The ``routing`` part of ``/status`` that says whether routing is sound.

    Returns ``{"source": ..., "state": "ok" | "degraded", "problems": [...]}``
    plus, when the route source reports on itself (an optional ``status()``
    method, as :class:`mdgate.plugins.pg_routes.source.PgRouteSource` has), that report under
    ``database``. Problems: the source is not ``ok`` (unreachable, unreadable),
    or the table is empty (every instrument would be refused).
    """
    doc: dict[str, Any] = {"source": table.source}
    problems: list[str] = []
    report = getattr(source, "status", None)
    if source is not None and callable(report):
        db: dict[str, Any] = report()
        doc["database"] = db
        if db.get("state") != "ok":
            problems.append(f"route source {source.description} is {db.get('state')}: {db.get('last_error')}")
    if not table.exchanges:
        problems.append(f"the routing table ({table.source}) is empty: {empty_hint(table.source)}")
    doc["state"] = "degraded" if problems else "ok"
    doc["problems"] = problems
    return doc


@runtime_checkable
class RouteSource(Protocol):
    """
    A live source of routing tables (PostgreSQL), from ``mdgate_route_source``.

    A source may also have a ``status() -> dict`` method reporting on itself
    (at least ``state``, ``"ok"`` when healthy, and ``last_error``); the
    gateway shows it in ``/status`` and is ``degraded`` while it is not ok.
    """

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
