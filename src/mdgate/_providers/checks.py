"""
Checks of what a provider plugin hands the connection runtime
(:mod:`mdgate._providers.session`).

* :func:`call_hook` / :func:`frames_of` call one of the plugin's hooks and
  turn anything it raises (or a wrong result) into :class:`PluginFault`,
  naming the hook, for the plugin-fault ledger.
* :func:`screen` is the slow path of the reader's per-frame check of a
  decoder's output: it keeps the valid ticks and sorts out the rest (items
  that are not well-formed :class:`~mdgate._model.Tick` objects, ticks dated
  too far ahead of their receipt). The reader only calls it when its
  one-pass check of a frame found something wrong.
* :func:`config_seconds` reads a per-provider time setting from the plugin's config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from mdgate._errors import ProviderConnectionError, ProviderError
from mdgate._model import Tick
from mdgate._provider import Frame
from mdgate._providers.faults import describe

__all__ = [
    "CONTAINED", "BadTicks", "PluginFault", "Stalled", "call_hook", "chunks", "config_seconds",
    "frames_of", "screen",
]


#: What a plugin may raise that the core contains: everything but a Ctrl-C and a cancellation
#: (``SystemExit`` from a plugin must not end the daemon).
CONTAINED: Final = (Exception, SystemExit, GeneratorExit)


class PluginFault(Exception):
    """A plugin hook (or its decoder, or its own transport) raised or returned the wrong thing."""

    def __init__(self, hook: str, error: BaseException | str) -> None:
        super().__init__(describe(error))
        #: Where: a hook name (``mdgate_connect``...), ``decoder`` or ``connector``.
        self.hook = hook
        #: What it raised, or a description of what it returned.
        self.error = error


class Stalled(ProviderConnectionError):
    """Raised by a connection's watchdog: subscribed, and nothing received for ``stall_timeout``."""


class BadTicks(Exception):
    """Raised and caught in the reader when a frame's ticks need the slow path (:func:`screen`)."""


def chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """``items`` cut into slices of at most ``size``."""
    return [items[i:i + size] for i in range(0, len(items), max(size, 1))]


def config_seconds(config: Any, name: str, default: float | None) -> float | None:
    """``config.name`` (or ``config[name]`` for a dict config) as seconds, else ``default``."""
    value = getattr(config, name, None)
    if value is None and isinstance(config, dict):
        value = config.get(name)
    return float(value) if value is not None else default


def call_hook(hook: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """
    Call ``fn(**kwargs)``, a plugin hook. A :class:`~mdgate._errors.ProviderError`
    it raises is a deliberate answer (credentials missing, refused...) and
    passes; anything else becomes a :class:`PluginFault`.
    """
    try:
        return fn(**kwargs)
    except ProviderError:
        raise
    except CONTAINED as exc:
        raise PluginFault(hook, exc) from exc


def frames_of(hook: str, fn: Callable[..., Any], **kwargs: Any) -> Sequence[Frame]:
    """Call a hook that returns frames to send; anything but a list of str/bytes is a fault."""
    frames = call_hook(hook, fn, **kwargs)
    if frames is None:
        return ()
    if not isinstance(frames, list | tuple):
        if isinstance(frames, str | bytes) or not hasattr(frames, "__iter__"):
            raise PluginFault(hook, f"returned {type(frames).__name__}, not a list of str/bytes frames")
        try:
            frames = list(frames)  # any iterable of frames will do
        except CONTAINED as exc:
            raise PluginFault(hook, exc) from exc
    for f in frames:
        if not isinstance(f, str | bytes):
            raise PluginFault(hook, f"returned a {type(f).__name__} among its frames, not str/bytes")
    return cast("Sequence[Frame]", frames)


_NUMBER = (int, float)


def _malformed(t: Tick) -> str | None:
    """Why a Tick object cannot go down the pipeline (wrong field types), or None."""
    if t.instrument.__class__ is not str or t.provider.__class__ is not str:
        return "a Tick whose instrument/provider is not a str"
    for name in ("price", "ts", "recv_ts"):
        value = getattr(t, name)
        if not isinstance(value, _NUMBER) or isinstance(value, bool):
            return f"a Tick whose {name} is {type(value).__name__}"
    return None


def screen(items: object, limit: float) -> tuple[list[Tick], tuple[int, str] | None, list[Tick]]:
    """
    Sort a decoder's result into what the pipeline may take and what it may not.

    Args:
        items: what the decoder returned (should be a list or tuple of Tick).
        limit: the latest acceptable ``ts`` (epoch ms): receipt time plus the
            allowed clock skew.

    Returns:
        ``(good, bad, future)``: the valid ticks in order; ``None`` or
        ``(count, description)`` of the items that are not valid ticks; the
        ticks dated after ``limit`` (or whose ``ts`` is NaN).
    """
    if items is None:  # "nothing in this frame", said loosely
        return [], None, []
    if not isinstance(items, list | tuple):
        return [], (1, f"returned {type(items).__name__}, not a list of Tick"), []
    good: list[Tick] = []
    future: list[Tick] = []
    bad = 0
    why = ""
    for t in items:
        problem = f"returned a {type(t).__name__}, not a Tick" if not isinstance(t, Tick) else _malformed(t)
        if problem is not None:
            bad += 1
            why = why or problem
        elif t.ts <= limit:
            good.append(t)
        else:
            future.append(t)
    return good, ((bad, f"{why} ({bad} of {len(items)} items)") if bad else None), future
