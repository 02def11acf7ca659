"""
The backfiller's rules on a clock the test moves (ManualClock; the wall clock follows it):
a bounded queue, the settle delay, the rate limit per provider, the route chosen, every failure
ending as ``filled: false`` with its reason, and the memory store's merge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from mdgate._backfill import Backfiller, TokenBucket
from mdgate._clock import ManualClock
from mdgate._config import BackfillSettings, load_settings
from mdgate._errors import (
    ConfigError,
    NoRouteError,
    PluginError,
    ProviderConnectionError,
    RateLimitedError,
    StoreUnavailable,
)
from mdgate._gaps import GapDesk
from mdgate._latest import LatestTicks
from mdgate._model import Bar, Tick
from mdgate._providers.faults import PluginFaults
from mdgate._routing.table import Route
from mdgate.plugins.stores.memory_store import MemoryStore

pytestmark = pytest.mark.anyio

T0 = 1_700_000_040_000  # a minute boundary: the wall clock at clock time 0
MIN = 60_000
I = "NSE:ACME"  # noqa: E741


def route(provider: str) -> Route:
    return Route(I, provider, f"{provider}-ACME", 0, True, "test")


def bars_for(start: int, end: int, price: float = 10.0) -> list[Bar]:
    """One REST bar per minute of ``[start, end)``, as a provider answers."""
    first = start - start % MIN
    return [Bar(I, m, price, price, price, price, 5, 0) for m in range(first, end, MIN)]


class Rig:
    """A backfiller with scripted routes, providers and store, on a ManualClock."""

    def __init__(self, **settings: Any) -> None:
        self.clock = ManualClock(start=0.0)
        self.settings = BackfillSettings(**{"delay": 0.0, **settings})
        self.routes: list[Route] | Exception = [route("beta")]
        self.configs: dict[str, object] = {"alpha": None, "beta": object(), "gamma": object()}
        #: provider -> answer(start, end): bars, or an exception to raise, or None (cannot backfill)
        self.answers: dict[str, Callable[[int, int], Any]] = {"beta": bars_for}
        self.asked: list[tuple[str, str, int, int, float]] = []
        self.outcomes: list[dict[str, Any]] = []
        self.store: Any = MemoryStore()
        self.faults = PluginFaults()
        self.bf = Backfiller(
            self.settings, routes=self._routes, config=self.configs.get, ask=self._ask, store=self.store,
            done=self._done, faults=self.faults, store_plugin="memory_store", clock=self.clock,
            wall=lambda: T0 + round(self.clock.time * 1000))

    def _routes(self, instrument: str) -> list[Route]:
        if isinstance(self.routes, Exception):
            raise self.routes
        return self.routes

    def _ask(self, provider: str, *, config: Any, instrument: str, code: str, start_ms: int,
             end_ms: int) -> Any:
        answer = self.answers.get(provider)
        if answer is None:
            return None

        async def fetch() -> list[Bar]:
            self.asked.append((provider, code, start_ms, end_ms, self.clock.time))
            result = answer(start_ms, end_ms)
            if isinstance(result, BaseException):
                raise result
            if isinstance(result, float):  # never answers (a hung provider)
                await anyio.sleep_forever()
            return list(result)

        return fetch()

    def _done(self, instrument: str, from_ts: int, to_ts: int, filled: bool, **extra: Any) -> None:
        self.outcomes.append({"instrument": instrument, "from_ts": from_ts, "to_ts": to_ts,
                              "filled": filled, **extra})

    def gap(self, from_ts: int, to_ts: int, reason: str = "reconnect") -> None:
        self.bf({"instrument": I, "from_ts": from_ts, "to_ts": to_ts, "reason": reason})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Rig]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.bf.run)
            await self.clock.settle()
            yield self
            tg.cancel_scope.cancel()


async def test_the_queue_is_bounded_the_oldest_dropped_counted_and_announced_unfilled() -> None:
    rig = Rig(max_pending=2)
    for k in range(3):
        rig.gap(T0 - (10 - k) * MIN, T0 - (9 - k) * MIN)
    rig.gap(T0 - MIN, T0, reason="conflated")  # one client's: not a hole in the stream
    rig.gap(T0 - MIN, T0, reason="store")  # the store's own: not backfilled
    assert rig.bf.status()["pending"] == 2
    assert (rig.bf.counts["requested"], rig.bf.counts["dropped"]) == (3, 1)
    [dropped] = rig.outcomes
    assert (dropped["from_ts"], dropped["filled"], dropped["reason"]) == (T0 - 10 * MIN, False, "dropped")
    async with rig.running():
        await rig.clock.advance(1)
    assert [o["from_ts"] for o in rig.outcomes[1:]] == [T0 - 9 * MIN, T0 - 8 * MIN]
    assert rig.bf.status()["pending"] == 0


async def test_backfill_off_queues_nothing() -> None:
    rig = Rig(enabled=False)
    rig.gap(T0 - MIN, T0)
    assert rig.bf.status() == {**rig.bf.status(), "enabled": False, "requested": 0, "pending": 0}


async def test_the_provider_is_asked_once_the_gaps_last_minute_closed_plus_the_delay() -> None:
    rig = Rig(delay=5.0)
    rig.gap(T0 - 3 * MIN + 1234, T0 + 10_000)  # ends in the minute [T0, T0 + 60 s)
    async with rig.running():
        await rig.clock.advance(64.9)
        assert rig.asked == []
        await rig.clock.advance(0.2)
        [(provider, code, start, end, at)] = rig.asked
    assert (provider, code, at) == ("beta", "beta-ACME", 65.0)
    assert (start, end) == (T0 - 3 * MIN, T0 + 10_001)  # the minute floor of from_ts to to_ts, inclusive
    assert rig.outcomes[-1] == {"instrument": I, "from_ts": T0 - 3 * MIN + 1234, "to_ts": T0 + 10_000,
                                "filled": True, "provider": "beta", "bars": 4}
    assert [b.start for b in await rig.store.bars(I)] == [T0 + k * MIN for k in (-3, -2, -1, 0)]


async def test_requests_to_one_provider_follow_its_rate_limit() -> None:
    rig = Rig(rate=0.5, burst=2)
    for k in range(4):
        rig.gap(T0 - (20 - k) * MIN, T0 - (19 - k) * MIN)
    async with rig.running():
        await rig.clock.advance(10)
    assert [a[4] for a in rig.asked] == [0.0, 0.0, 2.0, 4.0]  # a burst of 2, then one per 2 s
    assert [o["filled"] for o in rig.outcomes] == [True] * 4


@pytest.mark.parametrize(("key", "value"), [
    ("rate", "0"), ("burst", "0"), ("delay", "-1"), ("max_pending", "0"), ("max_window", "59"),
    ("timeout", "0"),
])
def test_bad_backfill_settings_are_config_errors_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {f"MDGATE_BACKFILL__{key.upper()}": value})
    assert err.value.key == f"backfill.{key}"
    assert load_settings(None, {}).backfill == BackfillSettings()


def test_the_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = ManualClock(start=0.0)
    bucket = TokenBucket(2.0, 3, clock)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    clock.time = 100.0  # long idle: back to the burst, not more
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


async def test_the_first_route_whose_provider_can_backfill_is_asked() -> None:
    rig = Rig()
    rig.routes = [route("alpha"), route("beta"), route("gamma"), route("delta")]
    rig.answers = {"alpha": bars_for, "gamma": bars_for, "delta": bars_for}  # alpha is disabled (no config),
    # beta cannot backfill (its hook answers None)
    rig.gap(T0 - 2 * MIN, T0 - MIN)
    async with rig.running():
        await rig.clock.advance(1)
    assert [a[:2] for a in rig.asked] == [("gamma", "gamma-ACME")]
    assert rig.outcomes[-1]["provider"] == "gamma"


@pytest.mark.parametrize(("answer", "reason"), [
    (RateLimitedError("beta", "HTTP 429 DH-904"), "rate_limited"),
    (ProviderConnectionError("beta", "HTTP 500"), "provider_error"),
    (PluginError("plugin 'beta' faulted in mdgate_backfill: ValueError: bad"), "plugin_fault"),
    (ValueError("a bug in the call"), "error"),
    (1.0, "timeout"),
])
async def test_a_failed_request_leaves_the_gap_unfilled_with_its_reason(answer: Any, reason: str) -> None:
    rig = Rig(timeout=30.0)
    rig.answers = {"beta": lambda s, e: answer}
    rig.gap(T0 - 2 * MIN, T0 - MIN)
    rig.answers["gamma"] = bars_for
    async with rig.running():
        await rig.clock.advance(29.9)
        assert len(rig.outcomes) == (reason != "timeout")  # a hung provider is given its timeout
        await rig.clock.advance(0.2)
        rig.answers["beta"] = bars_for
        rig.gap(T0 - 4 * MIN, T0 - 3 * MIN)  # and the task goes on
        await rig.clock.advance(1)
    first, second = rig.outcomes
    assert (first["filled"], first["reason"]) == (False, reason)
    assert first["error"] and (reason == "error" or first["provider"] == "beta")
    assert second["filled"] is True
    assert rig.bf.status()["unfilled_reasons"] == {reason: 1}


@pytest.mark.parametrize(("case", "reason"), [
    ("no_route", "no_route"), ("none_can", "no_backfill"), ("store_down", "store_unavailable"),
    ("store_bug", "store_fault"), ("store_cannot", "store_unsupported"), ("hook_raises", "plugin_fault"),
])
async def test_no_provider_no_route_or_no_store_leaves_the_gap_unfilled(case: str, reason: str) -> None:
    rig = Rig()

    async def merge_fails(instrument: str, bars: list[Bar]) -> int:
        raise StoreUnavailable("redis: Connection refused") if case == "store_down" else KeyError("bug")

    if case == "no_route":
        rig.routes = NoRouteError(I, "NSE")
    elif case == "none_can":
        rig.answers = {}
    elif case in ("store_down", "store_bug"):
        rig.store.merge_bars = merge_fails
    elif case == "store_cannot":
        rig.bf.store = object()
    else:
        def raising(*a: Any, **k: Any) -> Any:
            raise PluginError("plugin 'beta' faulted in mdgate_backfill")
        rig.bf.ask = raising
    rig.gap(T0 - 2 * MIN, T0 - MIN)
    async with rig.running():
        await rig.clock.advance(1)
    [outcome] = rig.outcomes
    assert (outcome["filled"], outcome["reason"]) == (False, reason)
    assert rig.bf.counts["unfilled"] == 1
    assert bool(rig.faults.status()) == (case == "store_bug")  # a store plugin's bug is its fault


async def test_bars_of_a_minute_still_open_when_asked_are_left_out() -> None:
    rig = Rig()
    rig.answers = {"beta": lambda s, e: bars_for(s, T0 + 2 * MIN)}  # a partial bar of the running minute
    rig.gap(T0 - 2 * MIN, T0 - MIN + 5)
    async with rig.running():
        await rig.clock.advance(30)  # asked at T0 + 30 s: the minute [T0, T0 + 60 s) is open
    assert rig.outcomes[-1]["bars"] == 2 and rig.bf.counts["open_bars_skipped"] == 2
    assert [b.start for b in await rig.store.bars(I)] == [T0 - 2 * MIN, T0 - MIN]


async def test_a_gap_longer_than_max_window_gets_its_last_part_and_is_unfilled() -> None:
    rig = Rig(max_window=600.0)
    rig.gap(T0 - 60 * MIN, T0 - MIN)
    async with rig.running():
        await rig.clock.advance(1)
    [(_, _, start, end, _)] = rig.asked
    assert end - start <= 600_000 and start % MIN == 0 and end == T0 - MIN + 1
    [outcome] = rig.outcomes
    assert (outcome["filled"], outcome["reason"], outcome["bars"]) == (False, "too_long", 10)


async def test_the_gap_desk_announces_gap_filled_and_keeps_the_outcome() -> None:
    class Fanout:
        frames: list[tuple[str, bytes]] = []

        def announce(self, instrument: str, frame: bytes) -> None:
            self.frames.append((instrument, frame))

    class Store:
        kept: list[tuple[str, dict[str, Any]]] = []

        def record_gap(self, instrument: str, gap: dict[str, Any]) -> None:
            self.kept.append((instrument, gap))

    fanout, store = Fanout(), Store()
    desk = GapDesk(fanout, LatestTicks(), store, PluginFaults(), "store")  # type: ignore[arg-type]
    desk.filled(I, 1, 2, False, reason="rate_limited", error="HTTP 429", provider="beta")
    desk.filled(I, 3, 4, True, provider="beta", bars=5)
    import json

    assert [json.loads(f) for _, f in fanout.frames] == [
        {"type": "gap_filled", "instrument": I, "from_ts": 1, "to_ts": 2, "filled": False,
         "reason": "rate_limited", "error": "HTTP 429", "provider": "beta"},
        {"type": "gap_filled", "instrument": I, "from_ts": 3, "to_ts": 4, "filled": True, "provider": "beta",
         "bars": 5},
    ]
    assert [g["status"] for _, g in store.kept] == ["unfilled", "filled"]
    assert store.kept[1][1] == {"status": "filled", "from_ts": 3, "to_ts": 4, "provider": "beta", "bars": 5}


async def test_the_memory_store_merges_only_minutes_without_a_bar_in_order() -> None:
    store = MemoryStore()
    store.write([Tick(I, 1.0, T0 + MIN + 5, T0 + MIN + 6, "X")])
    store.write([Tick(I, 2.0, T0 + 4 * MIN, T0 + 4 * MIN, "X")])
    rest = [msgspec.structs.replace(b, instrument="other") for b in bars_for(T0, T0 + 6 * MIN, 9.0)]
    assert await store.merge_bars(I, rest) == 5  # minute 1 had a live bar; 4 is still open
    assert await store.merge_bars(I, rest) == 0  # idempotent
    # closes minute 4, taken by the merge: the live bar is left out (as Redis skips a duplicate)
    store.write([Tick(I, 3.0, T0 + 6 * MIN, T0 + 6 * MIN, "X")])
    bars = await store.bars(I)
    assert [(b.start - T0) // MIN for b in bars] == [0, 1, 2, 3, 4, 5]
    assert [b.close for b in bars] == [9.0, 1.0, 9.0, 9.0, 9.0, 9.0] and {b.instrument for b in bars} == {I}
