"""
Stall detection for one provider connection, aware of market hours.

A connection is stalled when it carries instruments, at least one of them has
its market open (``market_open``: the exchange calendars, see
:mod:`mdgate._calendar`), and nothing arrived for ``stall_timeout`` seconds,
the silence measured from the later of the last frame received and the moment
that market (re)opened. While every market of its instruments is closed a
silent connection is left alone: no reconnect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import anyio
import structlog

from mdgate._clock import Clock
from mdgate._providers.checks import Stalled

__all__ = ["MarketOpen", "always_open", "watch_stall"]

log = structlog.get_logger(__name__)

#: ``market_open(instruments)``: None when the market of every instrument is closed, else the
#: moment (the session clock's seconds) since which one of them has been open without a break;
#: ``-inf`` when open since ever (an exchange without a calendar).
MarketOpen = Callable[[Iterable[str]], "float | None"]


def always_open(instruments: Iterable[str]) -> float | None:
    """The default :data:`MarketOpen`: every market open, since ever (stall detection without calendars)."""
    return float("-inf")


async def watch_stall(
    provider: str, clock: Clock, stall: float | None, codes: Mapping[str, str],
    last_rx: Callable[[], float], market_open: MarketOpen,
) -> None:
    """
    Raise :class:`~mdgate._providers.checks.Stalled` once the connection
    carrying ``codes`` (code -> instrument, kept up to date by the connection)
    has stalled; checks every ``min(1, stall / 4)`` seconds of ``clock``. No
    ``stall`` timeout: never returns.
    """
    if not stall:
        await anyio.sleep_forever()
        return
    step = min(1.0, stall / 4)
    while True:
        await clock.sleep(step)
        if not codes:
            continue
        since = last_rx()
        if clock.now() - since <= stall:
            continue  # the common case: data flows; the calendar is not even asked
        try:
            opened = market_open(codes.values())
        except Exception as exc:  # a calendar bug must not hide stalls: count the market as open
            log.error("market_hours_failed", provider=provider, error=f"{type(exc).__name__}: {exc}")
            opened = float("-inf")
        if opened is not None and clock.now() - max(since, opened) > stall:
            raise Stalled(provider, f"stalled: no data for {stall:g} s while subscribed and the market open")
