"""
The machinery of :mod:`mdgate.testing.conformance`: one provider's real
plugin in mdgate's real connection runtime (a
:class:`~mdgate._providers.session.ProviderSession`, as the daemon runs it)
against a harness's fake server, on a :class:`~mdgate._clock.ManualClock`;
and the golden files (recorded frames -> expected ticks).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from mdgate._clock import ManualClock
from mdgate._config import RuntimeSettings
from mdgate._model import Tick
from mdgate._provider import Frame
from mdgate._providers.registry import Registry, load_registry
from mdgate._providers.session import ProviderSession
from mdgate._providers.states import ProviderState
from mdgate._queue import TickQueue
from mdgate.testing._harness import ProviderHarness
from mdgate.testing.fake_server import FakeProviderServer

__all__ = ["GOLDEN_TS", "ConformanceError", "Run", "fail", "golden_files", "record_golden", "run_provider"]

#: The runtime's timings in the suite (seconds of the manual clock).
RUNTIME = RuntimeSettings(backoff_initial=0.05, backoff_max=0.2, auth_retry=60.0, stall_timeout=30.0)
#: The first tick time of recorded golden files (epoch ms).
GOLDEN_TS = 1_700_000_000_000


class ConformanceError(AssertionError):
    """A conformance check failed; the message starts ``conformance: <behaviour>:``."""


def fail(behaviour: str, message: str) -> ConformanceError:
    """The error of a failed check of ``behaviour`` (to ``raise``)."""
    return ConformanceError(f"conformance: {behaviour}: {message}")


def tick_fields(tick: Tick) -> dict[str, Any]:
    """A tick as compared with golden files: every present field but ``recv_ts`` (the receipt time)."""
    fields = tick.to_dict()
    fields.pop("recv_ts", None)
    return fields


@dataclass
class Run:
    """One provider session running against a started fake (see :func:`run_provider`)."""

    harness: ProviderHarness
    fake: FakeProviderServer[Any]
    session: ProviderSession
    registry: Registry
    clock: ManualClock
    queue: TickQueue
    #: Ticks taken from the queue and not yet consumed by :meth:`ticks`.
    pending: list[Tick] = field(default_factory=list)
    #: What the session's run raised, if anything (it should run until stopped).
    crashed: BaseException | None = None
    _scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    _done: anyio.Event = field(default_factory=anyio.Event)

    async def _run_session(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with self._scope:
                await self.session.run(task_status=task_status)
        except Exception as exc:  # reported by the checks (clean shutdown), not raised into the test
            self.crashed = exc
        finally:
            self._done.set()

    async def stop(self) -> None:
        """Shut the session down the way the daemon does (``closing``, then cancel) and wait for it."""
        self.session.closing = True
        self._scope.cancel()
        with anyio.fail_after(10):
            await self._done.wait()

    @property
    def state(self) -> ProviderState:
        """The session's state."""
        return self.session.state

    def add(self, instruments: Mapping[str, str]) -> None:
        """Subscribe ``instrument -> code`` pairs, as the subscription manager does."""
        for instrument, code in instruments.items():
            self.session.add(code, instrument)

    async def until(
        self, behaviour: str, what: str, predicate: Callable[[], bool], *,
        timeout: float = 10.0, nudge: float | None = None,
    ) -> None:
        """
        Wait until ``predicate()`` holds, else fail ``behaviour`` saying ``what`` did not happen.

        ``nudge``: move the manual clock this much on at every re-check
        (lets backoff waits fall due while a reconnect is awaited).
        """
        try:
            with anyio.fail_after(timeout):
                while not predicate():
                    if nudge:
                        await self.clock.advance(nudge)
                    with anyio.move_on_after(0.05):
                        await self.fake.wait_until(lambda _: predicate(), timeout=0.05)
        except TimeoutError:
            raise fail(behaviour, f"{what} (waited {timeout:g} s; {self.describe()})") from None

    async def ticks(self, behaviour: str, count: int, timeout: float = 10.0, what: str = "") -> list[Tick]:
        """The next ``count`` ticks handed to the pipeline, else fail ``behaviour`` (``what`` first)."""
        try:
            with anyio.fail_after(timeout):
                while len(self.pending) < count:
                    self.pending += await self.queue.get_batch()
        except TimeoutError:
            got = [tick_fields(t) for t in self.pending]
            message = f"{what}expected {count} ticks, got {len(got)}: {got} ({self.describe()})"
            raise fail(behaviour, message) from None
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    def take(self) -> list[Tick]:
        """Every tick handed over so far and not consumed yet (no waiting)."""
        out, self.pending = self.pending + self.queue.drain(), []
        return out

    def describe(self) -> str:
        """The session's and the fake's state, for failure messages."""
        s = self.session
        return (
            f"session state {s.state.value}, last_error {s.last_error!r}, decode_errors "
            f"{s.decode_errors}; fake: {self.fake.handshakes} handshakes, "
            f"{len(self.fake.connections)} open connections, subscribed {sorted(self.fake.subscribed)[:10]}"
        )

    def faults(self) -> list[str]:
        """The plugin faults the runtime recorded (descriptions)."""
        entry = self.registry.faults.status().get(self.session.plugin)
        if not entry or not entry["faults"]:
            return []
        return [f"{entry['faults']} faults of plugin {self.session.plugin!r}: by hook {entry['by_hook']}, "
                f"last: {entry['last_hook']}: {entry['last_error']}"]


def _registry(harness: ProviderHarness) -> Registry:
    if harness.plugin is not None:
        return load_registry(dict(harness.environ), extra=[(harness.provider, harness.plugin)],
                             entry_points=False)
    return load_registry(dict(harness.environ), entry_points=True)


@asynccontextmanager
async def run_provider(
    harness: ProviderHarness, *, instruments: Mapping[str, str] | None = None, connect: bool = True,
) -> AsyncIterator[Run]:
    """
    Start the harness's fake and the provider's session against it; stop both after.

    Args:
        harness: the provider under test.
        instruments: subscribed before the session starts (default none).
        connect: wait until the first connection is up (and ``instruments`` subscribed at the fake).
    """
    registry = _registry(harness)
    hooks = registry.providers.get(harness.provider)
    if hooks is None:
        errors = [f"{p.name}: {p.error}" for p in registry.plugins if p.error]
        raise fail("connect and handshake", f"no loaded plugin provides {harness.provider!r} {errors}")
    fake = harness.make_fake()
    clock = ManualClock()
    queue = TickQueue(100_000)
    async with fake:
        config = hooks.spec.parse_config(harness.provider_config(fake), dict(harness.environ))
        session = ProviderSession(hooks, config, None, queue, RUNTIME, faults=registry.faults,
                                  clock=clock, random=lambda: 1.0)
        run = Run(harness, fake, session, registry, clock, queue)
        run.add(instruments or {})
        failed: Exception | None = None
        async with anyio.create_task_group() as tg:
            await tg.start(run._run_session)
            if connect:
                await run.until("connect and handshake", "the provider never connected",
                                lambda: session.state is ProviderState.CONNECTED and bool(fake.connections))
                codes = set((instruments or {}).values())
                await run.until("subscribe", f"the fake never saw subscriptions of {sorted(codes)}",
                                lambda: codes <= fake.subscribed)
            try:
                yield run
            except Exception as exc:  # raised below, outside the task group (not in an ExceptionGroup)
                failed = exc
            finally:
                with anyio.CancelScope(shield=True):
                    await run.stop()
        if failed is not None:
            raise failed


# ---------------------------------------------------------------------------- golden files


def golden_files(harness: ProviderHarness) -> list[Path]:
    """The harness's golden files (``golden_dir/*.json``), sorted."""
    if harness.golden_dir is None:
        return []
    return sorted(Path(harness.golden_dir).glob("*.json"))


def _frame_json(frame: Frame) -> dict[str, str]:
    if isinstance(frame, bytes):
        return {"base64": base64.b64encode(frame).decode("ascii")}
    return {"text": frame}


def frame_of(item: Mapping[str, str]) -> Frame:
    """A frame of a golden file (``{"text": ...}`` or ``{"base64": ...}``)."""
    if "base64" in item:
        return base64.b64decode(item["base64"])
    return item["text"]


def default_samples(harness: ProviderHarness) -> list[tuple[str, float, int]]:
    """Two ticks per instrument of the harness, at fixed prices and times."""
    out: list[tuple[str, float, int]] = []
    for i, code in enumerate(harness.instruments.values()):
        out += [(code, 101.25 + i, GOLDEN_TS + 1000 * i), (code, 101.5 + i, GOLDEN_TS + 1000 * i + 2000)]
    return out


async def record_golden(
    harness: ProviderHarness, name: str = "ticks",
    samples: list[tuple[str, float, int]] | None = None,
) -> Path:
    """
    (Re)record one golden file: the frames the harness's fake sends for
    ``samples`` (``(code, price, ts_ms)``, default two per instrument) and
    the ticks the provider's decoder makes of them, written to
    ``golden_dir/<name>.json``. Review the file before committing it: from
    then on the suite checks the decoder still makes exactly these ticks.

    Returns:
        The file written.
    """
    if harness.golden_dir is None:
        raise ValueError(f"{type(harness).__name__}.golden_dir is not set")
    samples = samples if samples is not None else default_samples(harness)
    async with run_provider(harness, instruments=harness.instruments) as run:
        run.fake.sent_frames = []
        for code, price, ts_ms in samples:
            await harness.send_tick(run.fake, code, price, ts_ms)
        ticks = await run.ticks("normalization matches golden files", len(samples))
        frames = list(run.fake.sent_frames)
        run.fake.sent_frames = None
    doc = {
        "provider": harness.provider,
        "instruments": dict(harness.instruments),
        "frames": [_frame_json(f) for f in frames],
        "ticks": [tick_fields(t) for t in ticks],
    }
    path = Path(harness.golden_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
