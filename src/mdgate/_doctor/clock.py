"""
The clock check of ``mdgate doctor``: run providers for a few seconds
through their real hooks (connect, subscribe one ``always`` instrument, read
one tick) and compare the tick's ``ts`` with its ``recv_ts`` (the local
clock when it arrived).

A tick's ``ts`` is when the provider says the trade happened, so the
difference holds the network's delay too (small), and for a quiet
instrument the age of its last trade: a tick far *behind* may be old data
rather than a wrong clock, and the result says so. A tick far *ahead* can
only be a clock (or a timestamp setting such as Dhan's
``ltt_offset_seconds``), and the gateway drops such ticks (``bad_ts``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

import anyio

from mdgate._doctor.result import CheckResult, failed, passed, skipped
from mdgate._errors import MdgateError
from mdgate._providers.session import ProviderSession
from mdgate._providers.states import ProviderState
from mdgate._queue import TickQueue
from mdgate._routing.router import ProviderConfigs, Router

if TYPE_CHECKING:
    from mdgate._config import RuntimeSettings, Settings
    from mdgate._model import Tick
    from mdgate._providers.registry import Registry
    from mdgate._routing.table import RouteTable

__all__ = ["check_clock", "pick_instruments"]

#: The probe keeps every tick, however far off: measuring that is its job.
_NO_SKEW_LIMIT: Final = 10 * 365 * 86400.0

_AHEAD_HINT: Final = (
    "the local clock is behind (or the provider's timestamps are ahead): synchronise it with NTP "
    "(timedatectl status, chronyc tracking); the gateway drops ticks dated more than "
    "[runtime] max_clock_skew ahead"
)
_BEHIND_HINT: Final = (
    "the local clock is ahead, or the provider sent old data (its market closed?): check NTP "
    "(timedatectl status, chronyc tracking) and run again while the market trades"
)


def pick_instruments(
    reg: Registry, settings: Settings, configs: ProviderConfigs, table: RouteTable,
) -> dict[str, tuple[str, str]]:
    """One ``always`` instrument per enabled provider serving one: ``provider -> (instrument, code)``."""
    router = Router(reg, configs, table)
    picks: dict[str, tuple[str, str]] = {}
    for name in settings.subscriptions.always:
        try:
            routes = router.resolve(name)
        except MdgateError:
            continue
        live = [r for r in routes if r.provider in configs.configs]
        if live:
            picks.setdefault(live[0].provider, (live[0].instrument, live[0].code))
    return picks


async def _first_ticks(
    reg: Registry, configs: ProviderConfigs, picks: dict[str, tuple[str, str]], runtime: RuntimeSettings,
    timeout: float, sessions: list[ProviderSession],
) -> list[Tick]:
    """Run a session per picked provider (into ``sessions``) until the first ticks, or ``timeout``."""
    queue = TickQueue(10_000)
    for provider, (instrument, code) in picks.items():
        session = ProviderSession(reg.providers[provider], configs.configs[provider], None, queue, runtime,
                                  faults=reg.faults)
        session.add(code, instrument)
        sessions.append(session)
    got: list[Tick] = []
    async with anyio.create_task_group() as tg:
        for session in sessions:
            tg.start_soon(session.run)
        with anyio.move_on_after(timeout):
            got = await queue.get_batch()
        tg.cancel_scope.cancel()
    return got


def _why_none(sessions: list[ProviderSession]) -> str:
    reasons = []
    for s in sessions:
        if s.state is ProviderState.CONNECTED:
            reasons.append(f"{s.name}: connected, no tick (nothing traded?)")
        else:
            reasons.append(f"{s.name}: {s.state.value}" + (f" ({s.last_error})" if s.last_error else ""))
    return "; ".join(reasons)


def check_clock(
    reg: Registry, settings: Settings, configs: ProviderConfigs, table: RouteTable, timeout: float,
) -> CheckResult:
    """
    Compare the local clock with the timestamps of the first tick any
    provider sends within ``timeout`` seconds; fails when they differ by more
    than ``[runtime] max_clock_skew`` ahead. A tick that far behind is reported
    but is not a failure (the market may be closed), nor is no provider answering.
    """
    picks = pick_instruments(reg, settings, configs, table)
    if not picks:
        return skipped("clock", "not checked: no [subscriptions] always instrument is served by an "
                                "enabled provider")
    runtime = dataclasses.replace(settings.runtime, max_clock_skew=_NO_SKEW_LIMIT)
    sessions: list[ProviderSession] = []
    ticks = anyio.run(_first_ticks, reg, configs, picks, runtime, timeout, sessions)
    if not ticks:
        return skipped("clock", f"not checked: no provider reachable (no tick within {timeout:g} s: "
                                f"{_why_none(sessions)})")
    tick = max(ticks, key=lambda t: t.ts)
    provider = next((p for p, (i, _) in picks.items() if i == tick.instrument), tick.provider)
    skew = (tick.ts - tick.recv_ts) / 1000
    limit = settings.runtime.max_clock_skew
    detail = (f"{provider}'s tick of {tick.instrument} is dated {skew:+.1f} s from the local clock "
              f"(limit: [runtime] max_clock_skew = {limit:g} s)")
    if skew > limit:
        return failed("clock", detail, _AHEAD_HINT)
    if -skew > limit:  # old data (a closed market) or a clock ahead: not conclusive, not a failure
        return skipped("clock", f"not conclusive: {detail}; {_BEHIND_HINT}")
    return passed("clock", f"skew {skew:+.1f} s ({provider}, tick of {tick.instrument}; limit {limit:g} s)")
