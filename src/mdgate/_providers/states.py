"""
The state of a provider connection, and of a provider as a whole.

:class:`ProviderState` is the one place the states are named. The members are
declared worst first: a provider shows the worst state among the connections
that count (its first one, and every further one that carries codes), see
:meth:`ProviderState.worst`. It is a :class:`~enum.StrEnum`, so a state *is*
its string: ``/status`` (msgspec encodes a ``StrEnum`` as its value), logs and
every comparison with a plain string keep working.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["ProviderState"]


class ProviderState(enum.StrEnum):
    """Where a provider connection stands; members are ordered worst first."""

    #: The provider refused the credentials; retried after ``auth_retry`` or new credentials.
    AUTH_FAILED = "auth_failed"
    #: The plugin raised or returned something wrong (a bug); recorded as a plugin fault.
    FAILED = "failed"
    #: The provider is switched off (config, or the plugin said so); waits for a reload.
    DISABLED = "disabled"
    #: Subscribed but silent for ``stall_timeout`` seconds; reconnecting.
    STALLED = "stalled"
    #: The connection dropped or could not be opened; backing off before the next attempt.
    RECONNECTING = "reconnecting"
    #: The first attempt is under way (nothing has gone wrong yet).
    CONNECTING = "connecting"
    #: Live.
    CONNECTED = "connected"

    @property
    def rank(self) -> int:
        """0 for the worst state, counting up to :attr:`CONNECTED`."""
        return _RANK[self]

    @property
    def fatal(self) -> bool:
        """Down at once, without waiting ``failover_after`` (failover moves its instruments now)."""
        return self in _FATAL

    @property
    def bad(self) -> bool:
        """Makes ``/status`` say ``degraded`` (a provider switched off on purpose does not)."""
        return self in _BAD

    @classmethod
    def worst(cls, states: Iterable[ProviderState]) -> ProviderState:
        """The worst of ``states``; :attr:`CONNECTING` when there are none."""
        return min(states, key=_RANK.__getitem__, default=cls.CONNECTING)


_RANK: dict[ProviderState, int] = {s: i for i, s in enumerate(ProviderState)}
_FATAL: frozenset[ProviderState] = frozenset(
    {ProviderState.AUTH_FAILED, ProviderState.FAILED, ProviderState.DISABLED})
_BAD: frozenset[ProviderState] = frozenset(
    {ProviderState.AUTH_FAILED, ProviderState.FAILED, ProviderState.STALLED, ProviderState.RECONNECTING})
