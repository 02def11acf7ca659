"""
The conformance suite catches broken providers: copies of the example
provider broken in one way each fail the check of that behaviour, with a
message naming it; the unbroken copy, registered the same way, passes the
same checks (so the failure comes from the breakage, not from the setup).
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mdgate import AuthenticationError, DecodeError, Frame, ProviderConnectionError, Tick, hookimpl
from mdgate.testing.conformance import (
    ConformanceError,
    ProviderHarness,
    check_auth_failure,
    check_golden,
    check_malformed,
    check_reconnect,
)
from tests.example_provider.tests.test_conformance import ExampleHarness

pytestmark = pytest.mark.anyio

Check = Callable[[ProviderHarness], Any]


def example_copy(name: str, **hooks: object) -> types.ModuleType:
    """A copy of the example provider's plugin module, with ``hooks`` replaced."""
    import mdgate_example.plugin as real

    module = types.ModuleType(f"mdgate_example_{name}")
    for attr in dir(real):
        if attr.startswith("mdgate_"):
            setattr(module, attr, getattr(real, attr))
    for attr, value in hooks.items():
        setattr(module, attr, value)
    return module


def harness_for(plugin: types.ModuleType) -> ProviderHarness:
    """The example harness, registering ``plugin`` instead of the installed entry points."""
    return type("BrokenHarness", (ExampleHarness,), {"plugin": plugin})()


# -- broken in one way each ------------------------------------------------------------


def no_resubscribe() -> types.ModuleType:
    """Subscribes each code once per process: nothing is resubscribed on a new connection."""
    sent: set[str] = set()

    @hookimpl
    def mdgate_subscribe(provider: str, config: object, codes: Sequence[str]) -> Sequence[Frame] | None:
        if provider != "example":
            return None
        new = [c for c in codes if c not in sent]
        sent.update(new)
        return [json.dumps({"action": "subscribe", "symbols": new})] if new else []

    return example_copy("no_resubscribe", mdgate_subscribe=mdgate_subscribe)


def loses_ticks_on_malformed() -> types.ModuleType:
    """The decoder resets itself on a malformed frame: the next good tick is an unknown symbol."""
    from mdgate_example.protocol import ExampleDecoder

    class ResettingDecoder(ExampleDecoder):
        def feed(self, frame: Frame, recv_ts: int) -> list[Tick]:
            try:
                return super().feed(frame, recv_ts)
            except DecodeError:
                self.instruments.clear()
                raise

    @hookimpl
    def mdgate_normalize(provider: str, config: object) -> ExampleDecoder | None:
        return ResettingDecoder() if provider == "example" else None

    return example_copy("loses_ticks", mdgate_normalize=mdgate_normalize)


def retries_auth_at_once() -> types.ModuleType:
    """The decoder reports refused credentials as a plain connection error: the runtime backs off briefly."""
    from mdgate_example.protocol import ExampleDecoder

    class ConfusedDecoder(ExampleDecoder):
        def feed(self, frame: Frame, recv_ts: int) -> list[Tick]:
            try:
                return super().feed(frame, recv_ts)
            except AuthenticationError as exc:
                raise ProviderConnectionError("example", exc.message) from None

    @hookimpl
    def mdgate_normalize(provider: str, config: object) -> ExampleDecoder | None:
        return ConfusedDecoder() if provider == "example" else None

    return example_copy("retries_auth", mdgate_normalize=mdgate_normalize)


CASES = [
    pytest.param(no_resubscribe, check_reconnect, "reconnect resubscribes everything", id="no-resubscribe"),
    pytest.param(loses_ticks_on_malformed, check_malformed, "malformed frame counted without losing ticks",
                 id="tick-lost-on-malformed"),
    pytest.param(retries_auth_at_once, check_auth_failure, "authentication failure without a reconnect storm",
                 id="auth-failure-storm"),
]


@pytest.mark.parametrize(("make", "check", "behaviour"), CASES)
async def test_broken_example_fails_the_check_naming_the_behaviour(
    make: Callable[[], types.ModuleType], check: Check, behaviour: str
) -> None:
    with pytest.raises(ConformanceError) as info:
        await check(harness_for(make()))
    assert str(info.value).startswith(f"conformance: {behaviour}: "), str(info.value)


@pytest.mark.parametrize(("make", "check", "behaviour"), CASES)
async def test_unbroken_copy_passes_the_same_check(
    make: Callable[[], types.ModuleType], check: Check, behaviour: str
) -> None:
    await check(harness_for(example_copy("unbroken")))


async def test_auth_storm_failure_counts_the_attempts() -> None:
    with pytest.raises(ConformanceError, match=r"\d+ connection attempts within auth_retry \(60 s\)"):
        await check_auth_failure(harness_for(retries_auth_at_once()))


async def test_runtime_closes_the_socket_even_when_the_unsubscribe_hook_raises() -> None:
    """A plugin bug at shutdown (its unsubscribe hook raising) must not leave the provider's socket open."""
    from mdgate.testing._conformance_run import run_provider

    @hookimpl
    def mdgate_unsubscribe(provider: str, config: object, codes: Sequence[str],
                           remaining: Sequence[str]) -> Sequence[Frame] | None:
        if provider != "example":
            return None
        raise RuntimeError("unsubscribe bug")

    harness = harness_for(example_copy("bad_unsubscribe", mdgate_unsubscribe=mdgate_unsubscribe))
    async with run_provider(harness, instruments=harness.instruments) as run:
        await run.stop()
        await run.until("clean shutdown", "the socket stayed open after the unsubscribe hook raised",
                        lambda: not run.fake.connections)


async def test_a_harness_without_golden_files_fails_saying_how_to_record_them() -> None:
    harness = type("NoGolden", (ExampleHarness,), {"golden_dir": None})()
    with pytest.raises(ConformanceError, match=r"^conformance: normalization matches golden files: .*record"):
        await check_golden(harness)


def test_a_harness_must_say_how_its_fake_sends_a_tick() -> None:
    class Incomplete(ProviderHarness):
        provider = "example"

        def make_fake(self) -> Any:
            return None

    with pytest.raises(TypeError, match="send_tick"):
        Incomplete()  # type: ignore[abstract]
