"""
Dynamic subscriptions and failover.

An instrument is subscribed at one provider while anybody wants it: clients
(reference-counted) or the config's ``[subscriptions] always`` list. When the
last interest goes, it stays subscribed for ``linger`` seconds, then is
released.

Which provider carries it is decided here, from the route candidates (best
first) and provider health:

* a provider is *down* when its state is ``auth_failed``/``disabled``/
  ``failed``, or it has not been connected for ``failover_after`` seconds;
* an instrument on a down provider moves to the next candidate that is
  connected now (failover);
* it moves back to a better candidate once that one has been connected for
  ``failback_after`` seconds (fail-back, with hold-down);
* a routing-table reload re-resolves every active instrument.

Every switch is logged (``route_switched``) and kept for ``/status``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import structlog

from mdgate._config import RuntimeSettings, SubscriptionSettings
from mdgate._errors import NoRouteError, SubscriptionRejected
from mdgate._model import now_ms, parse_instrument
from mdgate._providers.session import ProviderSession
from mdgate._providers.states import ProviderState
from mdgate._routing.router import Router
from mdgate._routing.table import Route

__all__ = ["Active", "SubscriptionManager"]

log = structlog.get_logger(__name__)

#: Always-on instruments routed at start between two turns of the event loop (about 25 ms).
START_CHUNK = 2000


@dataclass(slots=True)
class Active:
    """An instrument somebody wants."""

    instrument: str
    routes: list[Route]
    refs: int = 0
    always: bool = False
    current: Route | None = None
    release_at: float | None = None
    switches: int = 0


@dataclass
class _Switch:
    at: int
    instrument: str
    from_provider: str | None
    to_provider: str
    reason: str


@dataclass
class SubscriptionManager:
    """Reference counts, linger, routing and failover for every wanted instrument."""

    router: Router
    sessions: dict[str, ProviderSession]
    runtime: RuntimeSettings
    linger: float = 30.0
    active: dict[str, Active] = field(default_factory=dict)
    switches: deque[_Switch] = field(default_factory=lambda: deque(maxlen=50))
    #: Provider switches (failover and fail-back) since start.
    switched: int = 0
    #: Told of every switch: ``(instrument, from_provider, to_provider, at_ms)``.
    on_switch: Callable[[str, str, str, int], None] | None = None
    #: Monotonic seconds for linger (the sessions' clock decides failover and fail-back).
    clock: Callable[[], float] = time.monotonic

    # -- interest ----------------------------------------------------------

    def acquire(self, instrument: str) -> bool:
        """
        Add one client's interest in ``instrument``.

        Returns:
            True when a provider that is up carries it; False when its
            providers are all down (the subscription stays and ticks flow
            once one recovers).

        Raises:
            InstrumentError: malformed name.
            NoRouteError: no provider serves it.
            SubscriptionRejected: the chosen provider is at its limit.
        """
        name, _, _ = parse_instrument(instrument)
        act = self.active.get(name)
        if act is None and name == instrument:  # normalized already: keep one string, not two
            name = instrument
        if act is None:
            act = self._activate(name)
        act.refs += 1
        act.release_at = None
        return self._available(act)

    def release(self, instrument: str) -> None:
        """Drop one client's interest; the subscription lingers, then goes."""
        act = self.active.get(instrument)
        if act is None or act.refs == 0:
            return
        act.refs -= 1
        if act.refs == 0 and not act.always:
            if self.linger <= 0:
                self._deactivate(act)
            else:
                act.release_at = self.clock() + self.linger

    def set_always(self, instruments: Iterable[str]) -> list[str]:
        """Make exactly ``instruments`` always-on; return the ones that failed, with why."""
        wanted, errors = self._names(instruments)
        for act in list(self.active.values()):
            if act.always and act.instrument not in wanted:
                act.always = False
                if act.refs == 0:
                    act.release_at = self.clock() + self.linger
        return errors + self._add_always(wanted)

    def _names(self, instruments: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """The normalized names of ``instruments`` (-> as given), and the malformed ones, with why."""
        wanted: dict[str, str] = {}
        errors: list[str] = []
        for raw in instruments:
            try:
                name, _, _ = parse_instrument(raw)
            except Exception as exc:
                errors.append(str(exc))
                continue
            wanted[raw if name == raw else name] = raw  # normalized already: one string, not two
        return wanted, errors

    def _add_always(self, names: Iterable[str]) -> list[str]:
        errors: list[str] = []
        for name in names:
            try:
                act = self.active.get(name) or self._activate(name)
            except (NoRouteError, SubscriptionRejected) as exc:
                errors.append(str(exc))
                continue
            act.always = True
            act.release_at = None
        return errors

    def apply(self, settings: SubscriptionSettings) -> list[str]:
        """Take a (re)loaded ``[subscriptions]`` slice (linger, always); return what failed, with why."""
        self.linger = settings.linger
        return self.set_always(settings.always)

    async def start(
        self, settings: SubscriptionSettings, current: Callable[[], bool], chunk: int = START_CHUNK,
    ) -> list[str]:
        """
        Take the first ``[subscriptions]`` slice, as :meth:`apply` does, ``chunk``
        instruments at a time with the event loop let run in between (25,000
        always-on instruments take about 0.3 s to route: the server answers
        meanwhile, and the first connections subscribe). Stops early once
        ``current()`` is false: a reload applied newer settings whole.
        Returns what failed, with why.
        """
        self.linger = settings.linger
        wanted, errors = self._names(settings.always)
        names = list(wanted)
        for i in range(0, len(names), chunk):
            if not current():
                break
            errors += self._add_always(names[i:i + chunk])
            await anyio.lowlevel.checkpoint()
        return errors

    def refs(self, instrument: str) -> int:
        """Current reference count of ``instrument`` (clients only)."""
        act = self.active.get(instrument)
        return act.refs if act else 0

    def _available(self, act: Active) -> bool:
        if act.current is None:
            return False
        session = self.sessions.get(act.current.provider)
        return session is not None and not session.is_down(self.runtime.failover_after)

    def _activate(self, name: str) -> Active:
        routes = self.router.resolve(name)
        act = Active(name, routes)
        choice = self._choose(act)
        if choice is not None:
            self._move(act, choice, "subscribe")
        elif routes and routes[0].provider in self.sessions:
            self._move(act, routes[0], "subscribe (all candidates down)")
        self.active[name] = act
        return act

    def _deactivate(self, act: Active) -> None:
        if act.current is not None:
            session = self.sessions.get(act.current.provider)
            if session is not None:
                session.remove(act.current.code)
        self.active.pop(act.instrument, None)
        log.debug("instrument_released", instrument=act.instrument)

    # -- choice and switching ----------------------------------------------

    def _choose(self, act: Active) -> Route | None:
        rt = self.runtime
        cur = act.current
        cur_idx = len(act.routes)
        if cur is not None:
            for i, r in enumerate(act.routes):
                if r.provider == cur.provider:
                    cur_idx = i
                    break
        for i, r in enumerate(act.routes):
            s = self.sessions.get(r.provider)
            if s is None:
                continue
            if i < cur_idx and cur is not None:
                if s.healthy_for(rt.failback_after):
                    return r
            elif i == cur_idx:
                if not s.is_down(rt.failover_after):
                    return r
            elif cur is None:
                if not s.is_down(rt.failover_after):
                    return r
            elif s.state is ProviderState.CONNECTED:
                return r
        return None

    def _move(self, act: Active, route: Route, reason: str) -> None:
        old = act.current
        if old is not None and old.provider == route.provider and old.code == route.code:
            act.current = route
            return
        new_session = self.sessions[route.provider]
        new_session.add(route.code, act.instrument)
        if old is not None:
            old_session = self.sessions.get(old.provider)
            if old_session is not None:
                old_session.remove(old.code)
            act.switches += 1
            self.switched += 1
            at = now_ms()
            self.switches.append(_Switch(at, act.instrument, old.provider, route.provider, reason))
            if self.on_switch is not None:
                self.on_switch(act.instrument, old.provider, route.provider, at)
            log.warning("route_switched", instrument=act.instrument, from_provider=old.provider,
                        to_provider=route.provider, reason=reason)
        act.current = route

    def check(self) -> None:
        """Expire lingering instruments and apply failover / fail-back decisions."""
        now = self.clock()
        for act in list(self.active.values()):
            if act.release_at is not None and now >= act.release_at and act.refs == 0 and not act.always:
                self._deactivate(act)
                continue
            choice = self._choose(act)
            if choice is None or (act.current is not None and choice.provider == act.current.provider):
                continue
            if act.current is None:
                reason = "subscribe"
            elif act.routes.index(choice) < [r.provider for r in act.routes].index(act.current.provider):
                reason = f"{choice.provider} healthy again (fail-back)"
            else:
                reason = f"{act.current.provider} down (failover)"
            try:
                self._move(act, choice, reason)
            except SubscriptionRejected as exc:
                log.error("route_switch_failed", instrument=act.instrument, error=str(exc))

    def reroute(self) -> None:
        """Re-resolve every active instrument after a routing-table change."""
        for act in list(self.active.values()):
            try:
                act.routes = self.router.resolve(act.instrument)
            except NoRouteError as exc:
                log.error("route_lost", instrument=act.instrument, error=str(exc))
                continue
            cur = act.current
            if cur is not None:
                same = [r for r in act.routes if r.provider == cur.provider]
                if same and same[0].code != cur.code:
                    try:
                        self._move_code(act, same[0])
                    except SubscriptionRejected as exc:
                        log.error("route_switch_failed", instrument=act.instrument, error=str(exc))
                    continue
                if not same:
                    act.current = None
                    session = self.sessions.get(cur.provider)
                    if session is not None:
                        session.remove(cur.code)
            choice = self._choose(act) or (act.routes[0] if act.current is None else None)
            if choice is not None and (act.current is None or choice.provider != act.current.provider):
                try:
                    self._move(act, choice, "routing table changed")
                except SubscriptionRejected as exc:
                    log.error("route_switch_failed", instrument=act.instrument, error=str(exc))

    def _move_code(self, act: Active, route: Route) -> None:
        assert act.current is not None
        session = self.sessions[route.provider]
        session.remove(act.current.code)
        session.add(route.code, act.instrument)
        act.current = route
        log.info("route_code_changed", instrument=act.instrument, provider=route.provider, code=route.code)

    async def run(self) -> None:
        """Apply :meth:`check` twice a second until cancelled."""
        while True:
            await anyio.sleep(0.5)
            self.check()

    def status(self) -> dict[str, Any]:
        """Active instruments per provider and the recent switches, for ``/status``."""
        per: dict[str, int] = {}
        for act in self.active.values():
            if act.current is not None:
                per[act.current.provider] = per.get(act.current.provider, 0) + 1
        return {
            "instruments": len(self.active),
            "by_provider": per,
            "switches": [s.__dict__ for s in self.switches],
            "switches_total": self.switched,
        }

    def unserved_exchanges(self) -> list[str]:
        """
        Why readiness fails on routing: each exchange with subscribed
        instruments none of whose providers is connected, as a sentence.
        """
        providers: dict[str, set[str]] = {}
        for name, act in self.active.items():
            providers.setdefault(name.partition(":")[0], set()).update(r.provider for r in act.routes)
        out: list[str] = []
        for exchange, names in sorted(providers.items()):
            states = {p: self.sessions[p].state if p in self.sessions else "unknown" for p in sorted(names)}
            if not any(state == ProviderState.CONNECTED for state in states.values()):
                shown = ", ".join(f"{p}: {state}" for p, state in states.items()) or "no provider"
                out.append(f"exchange {exchange}: no live provider ({shown})")
        return out

    def instruments(self) -> dict[str, dict[str, Any]]:
        """Every instrument served now, by name: its provider (None while none) and its clients."""
        return {
            name: {"provider": act.current.provider if act.current is not None else None,
                   "clients": act.refs, "always": act.always}
            for name, act in sorted(self.active.items())
        }
