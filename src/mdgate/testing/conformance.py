"""
The provider conformance suite: what every mdgate provider must do, checked
the same way for all of them.

A provider package describes itself with a :class:`ProviderHarness` (its
name, two or more instruments, its fake server, how the fake sends a tick,
a malformed frame, refuses credentials) and gets the whole suite by
subclassing :class:`ProviderConformance`::

    from mdgate.testing.conformance import ProviderConformance, ProviderHarness

    class ExampleHarness(ProviderHarness):
        provider = "example"
        instruments = {"EXAMPLE:ACME": "ACME", "EXAMPLE:BETA": "BETA"}
        golden_dir = Path(__file__).parent / "golden"
        ...

    class TestConformance(ProviderConformance):
        harness = ExampleHarness()

Each test runs the provider's real plugin (loaded through its entry point,
or :attr:`ProviderHarness.plugin`) in mdgate's real connection runtime, the
session the daemon runs, against a fresh fake server, on a clock the suite
moves (:class:`~mdgate._clock.ManualClock`): stall and authentication retry
are checked at their configured times, not by sleeping. Every failure
message starts ``conformance: <behaviour>:``. Golden files are recorded with
``python -m mdgate.testing.conformance --record module:HarnessClass`` (or
:func:`record_golden`). See docs/conformance.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from mdgate._errors import SubscriptionRejected
from mdgate._providers.states import ProviderState
from mdgate.testing._conformance_run import (
    GOLDEN_TS,
    ConformanceError,
    Run,
    fail,
    frame_of,
    golden_files,
    record_golden,
    run_provider,
    tick_fields,
)
from mdgate.testing._harness import ProviderHarness

__all__ = [
    "ConformanceError",
    "ProviderConformance",
    "ProviderHarness",
    "check_auth_failure",
    "check_clean_shutdown",
    "check_connect",
    "check_golden",
    "check_limit_capacity_refused",
    "check_limit_per_connection",
    "check_limit_per_message",
    "check_malformed",
    "check_reconnect",
    "check_stall",
    "check_subscribe",
    "check_unsubscribe",
    "main",
    "record_golden",
]

_GRACE = 0.3  # real seconds given to a runtime that should NOT act (the manual clock stands still)


# ---------------------------------------------------------------------------- the checks


async def check_connect(harness: ProviderHarness) -> None:
    """The provider connects to the fake and is ``connected``, with no plugin fault."""
    b = "connect and handshake"
    async with run_provider(harness) as run:
        if len(run.fake.connections) != 1:
            raise fail(b, f"expected 1 open connection at the fake, found {len(run.fake.connections)}")
        if run.faults():
            raise fail(b, f"plugin faults while connecting: {run.faults()}")


async def check_subscribe(harness: ProviderHarness) -> None:
    """Subscribing reaches the fake (recorded there) and each instrument's ticks flow, normalized."""
    b = "subscribe"
    async with run_provider(harness) as run:
        run.add(harness.instruments)
        codes = set(harness.instruments.values())
        await run.until(b, f"the fake never acknowledged subscriptions of {sorted(codes)}",
                        lambda: codes <= run.fake.subscribed)
        asked = {c for req in run.fake.subscribe_requests for c in req}
        if not asked <= codes:
            raise fail(b, f"subscribed codes nobody asked for: {sorted(asked - codes)}")
        await _ticks_flow(run, b, harness.instruments, 101.25)


async def _ticks_flow(run: Run, b: str, instruments: Mapping[str, str], price: float) -> None:
    # One tick per instrument arrives, normalized: instrument, price, time, provider code.
    spec = run.session.spec
    for i, (instrument, code) in enumerate(instruments.items()):
        ts = GOLDEN_TS + 1000 * i
        await run.harness.send_tick(run.fake, code, price + i, ts)
        (tick,) = await run.ticks(b, 1)
        got = (tick.instrument, tick.price, tick.ts, tick.provider)
        if got != (instrument, price + i, ts, spec.code):
            raise fail(b, f"a tick of {code} sent as {(instrument, price + i, ts, spec.code)} "
                          f"arrived as {got}")


async def check_golden(harness: ProviderHarness) -> None:
    """Every golden file's recorded frames decode to exactly its expected ticks."""
    b = "normalization matches golden files"
    files = golden_files(harness)
    if not files:
        raise fail(b, f"no golden files in {harness.golden_dir} (record them: python -m "
                      "mdgate.testing.conformance --record module:HarnessClass)")
    for path in files:
        doc = json.loads(path.read_text())
        expected: list[dict[str, Any]] = doc["ticks"]
        async with run_provider(harness, instruments=doc["instruments"]) as run:
            for item in doc["frames"]:
                await run.fake.send(frame_of(item))
            got = [tick_fields(t) for t in await run.ticks(f"{b}: {path.name}", len(expected))]
            if got != expected:
                raise fail(b, f"{path.name}: expected ticks {expected}, got {got} (if the change is "
                              "intended, re-record the file and review the difference)")
            if run.session.decode_errors:
                raise fail(b, f"{path.name}: decode errors {run.session.decode_errors}")


async def check_unsubscribe(harness: ProviderHarness) -> None:
    """Unsubscribing one instrument reaches the fake; the others keep flowing."""
    b = "unsubscribe"
    (keep, keep_code), (_, drop_code) = list(harness.instruments.items())[:2]
    async with run_provider(harness, instruments=harness.instruments) as run:
        run.session.remove(drop_code)
        await run.until(b, f"the fake never saw {drop_code} unsubscribed",
                        lambda: drop_code not in run.fake.subscribed)
        if keep_code not in run.fake.subscribed:
            raise fail(b, f"unsubscribing {drop_code} also dropped {keep_code} at the fake")
        if not any(drop_code in req for req in run.fake.unsubscribe_requests):
            raise fail(b, f"no unsubscribe request named {drop_code}: {run.fake.unsubscribe_requests}")
        await _ticks_flow(run, b, {keep: keep_code}, 55.5)


async def check_reconnect(harness: ProviderHarness) -> None:
    """After a dropped and after a cleanly closed connection, the new one resubscribes everything."""
    b = "reconnect resubscribes everything"
    codes = set(harness.instruments.values())
    async with run_provider(harness, instruments=harness.instruments) as run:
        for n, how in enumerate(("dropped (TCP reset)", "closed by the server"), 1):
            last = run.fake.history[-1].id
            if how.startswith("dropped"):
                run.fake.drop()
            else:
                await run.fake.close_all()

            def resubscribed(last: int = last) -> bool:
                return any(c.id > last and codes <= set(c.subscribed) for c in run.fake.connections)

            await run.until(b, f"after the connection was {how}, no new connection subscribed all of "
                               f"{sorted(codes)}", resubscribed, nudge=run.session.runtime.backoff_max)
            await _ticks_flow(run, b, harness.instruments, 77.25)
            if run.session.reconnects < n:
                raise fail(b, f"{n} reconnects happened, the status counts {run.session.reconnects}")


async def check_stall(harness: ProviderHarness) -> None:
    """A silent subscribed connection is reconnected after the stall timeout, not before."""
    b = "stall detection"
    codes = set(harness.instruments.values())
    async with run_provider(harness, instruments=harness.instruments) as run:
        stall = run.session.stall_timeout
        if not stall:
            raise fail(b, "the provider has no stall timeout (ProviderSpec.stall_timeout)")
        first = run.fake.history[-1]
        run.fake.go_silent()
        await run.clock.advance(stall * 0.9)
        if first.closed or run.fake.accepted != 1 or run.state is not ProviderState.CONNECTED:
            raise fail(b, f"reconnected before the stall timeout ({stall:g} s): {run.describe()}")
        await run.clock.advance(stall * 0.2 + 1.0)
        await run.until(b, f"the silent connection was not closed {stall:g} s after its last frame",
                        lambda: first.closed)
        await run.until(b, "no new connection subscribed everything after the stall",
                        lambda: any(c.id > first.id and codes <= set(c.subscribed)
                                    for c in run.fake.connections),
                        nudge=run.session.runtime.backoff_max)
        error, reconnects = run.session.last_error or "", run.session.reconnects
        if "stall" not in error or reconnects < 1:
            raise fail(b, f"the reconnect was not reported as a stall: last_error {error!r}, "
                          f"reconnects {reconnects}")
        await _ticks_flow(run, b, harness.instruments, 66.75)


async def check_malformed(harness: ProviderHarness) -> None:
    """A malformed frame is counted as a decode error; the good ticks around it arrive; no reconnect."""
    b = "malformed frame counted without losing ticks"
    instrument, code = next(iter(harness.instruments.items()))
    async with run_provider(harness, instruments=harness.instruments) as run:
        await harness.send_tick(run.fake, code, 10.5, GOLDEN_TS)
        await harness.send_malformed(run.fake)
        await harness.send_tick(run.fake, code, 11.5, GOLDEN_TS + 1000)
        ticks = await run.ticks(b, 2, timeout=5.0, what="a good tick was lost around a malformed frame: ")
        if [(t.instrument, t.price) for t in ticks] != [(instrument, 10.5), (instrument, 11.5)]:
            got = [tick_fields(t) for t in ticks]
            raise fail(b, f"expected ticks 10.5 then 11.5 of {instrument}, got {got}")
        errors = dict(run.session.decode_errors)
        if sum(errors.values()) != 1 or "decoder_error" in errors:
            raise fail(b, f"expected exactly one decode error (a DecodeError from the decoder), "
                          f"counted {errors}")
        if run.fake.accepted != 1 or run.state is not ProviderState.CONNECTED:
            raise fail(b, f"the malformed frame ended the connection: {run.describe()}")
        if run.faults():
            raise fail(b, f"plugin faults: {run.faults()}")


async def check_limit_per_message(harness: ProviderHarness) -> None:
    """No subscribe request carries more than ``max_per_message`` codes; all are subscribed."""
    b = "limit per message"
    async with run_provider(harness) as run:
        spec = run.session.spec
        extra = harness.limit_codes(spec.max_per_message + 1)
        run.add(extra)
        codes = set(extra.values())
        await run.until(b, f"not all {len(codes)} codes were subscribed at the fake",
                        lambda: codes <= run.fake.subscribed)
        sizes = [len(req) for req in run.fake.subscribe_requests]
        if max(sizes) > spec.max_per_message:
            raise fail(b, f"subscribe requests of {max(sizes)} codes; ProviderSpec.max_per_message is "
                          f"{spec.max_per_message}")


async def check_limit_per_connection(harness: ProviderHarness) -> None:
    """Past ``max_per_connection`` codes a further connection opens; no connection holds more."""
    b = "limit per connection"
    async with run_provider(harness) as run:
        spec = run.session.spec
        per, conns = spec.max_per_connection, spec.max_connections
        count = per + 1 if conns > 1 else per
        extra = harness.limit_codes(count)
        run.add(extra)
        codes = set(extra.values())
        await run.until(b, f"not all {len(codes)} codes were subscribed at the fake",
                        lambda: codes <= run.fake.subscribed, timeout=30.0)
        worst = max(len(c.subscribed) for c in run.fake.connections)
        if worst > per:
            raise fail(b, f"a connection holds {worst} codes; ProviderSpec.max_per_connection is {per}")
        if conns > 1 and len([c for c in run.fake.connections if c.subscribed]) < 2:
            raise fail(b, f"{count} codes did not open a second connection")


async def check_limit_capacity_refused(harness: ProviderHarness) -> None:
    """One code past ``max_per_connection * max_connections`` is refused with a message naming the limit."""
    b = "limit per connection"
    async with run_provider(harness, connect=False) as run:
        spec = run.session.spec
        capacity = spec.max_per_connection * spec.max_connections
        if capacity > 1000:
            return  # too many codes to fill here; the runtime's own tests check the rule
        codes = harness.limit_codes(capacity + 1)
        last = codes.popitem()
        run.add(codes)
        with pytest.raises(SubscriptionRejected) as info:
            run.add(dict([last]))
        if "limit" not in str(info.value):
            raise fail(b, f"the refusal does not name the limit: {info.value}")


async def check_auth_failure(harness: ProviderHarness) -> None:
    """Refused credentials: ``auth_failed``, at most one retry per ``auth_retry``, no reconnect storm."""
    b = "authentication failure without a reconnect storm"
    async with run_provider(harness, instruments=harness.instruments) as run:
        retry, fake = run.session.runtime.auth_retry, run.fake
        harness.expire_credentials(fake)
        fake.drop()
        await run.until(b, "the dropped connection was not noticed",
                        lambda: run.state is not ProviderState.CONNECTED)
        before = fake.handshakes
        await run.clock.advance(run.session.runtime.backoff_max)
        await run.until(b, "no reconnect attempt after the drop", lambda: fake.handshakes > before)
        await _quiet(run)
        first = fake.handshakes
        chunks = 5
        for _ in range(chunks):  # auth_retry * 0.95 of the manual clock, in chunks: a storm shows in each
            seen = fake.handshakes
            await run.clock.advance(retry * 0.95 / chunks)
            with anyio.move_on_after(_GRACE):
                await fake.wait_until(lambda f, n=seen: f.handshakes > n)  # type: ignore[misc]
            await _quiet(run)
        storm = fake.handshakes - first
        if storm > 1:
            raise fail(b, f"{storm} connection attempts within auth_retry ({retry:g} s) after the "
                          "credentials were refused (expected at most 1: raise mdgate.AuthenticationError)")
        if run.state is not ProviderState.AUTH_FAILED:
            raise fail(b, f"state {run.state.value} after the credentials were refused, not auth_failed "
                          f"(raise mdgate.AuthenticationError): {run.describe()}")
        await run.clock.advance(retry * 0.1)
        await run.until(b, f"no new attempt once auth_retry ({retry:g} s) had passed",
                        lambda: fake.handshakes > first)


async def _quiet(run: Run) -> None:
    # Wait until the attempt in progress (if any) has ended: no open connection at the fake.
    with anyio.move_on_after(10.0):
        await run.fake.wait_until(lambda f: not f.connections and run.state is not ProviderState.CONNECTED)


async def check_clean_shutdown(harness: ProviderHarness) -> None:
    """Stopping the runtime closes every connection, raises nothing and leaves no plugin fault."""
    b = "clean shutdown"
    async with run_provider(harness, instruments=harness.instruments) as run:
        await _ticks_flow(run, b, harness.instruments, 42.0)
        await run.stop()
        if run.crashed is not None:
            raise fail(b, f"the session raised {run.crashed!r}")
        await run.until(b, "connections left open at the fake after the shutdown",
                        lambda: not run.fake.connections)
        if run.faults():
            raise fail(b, f"plugin faults: {run.faults()}")
        if run.session.decode_errors:
            raise fail(b, f"decode errors: {run.session.decode_errors}")


# ---------------------------------------------------------------------------- the pytest class


class ProviderConformance:
    """
    The suite as a pytest class: subclass it as ``TestConformance`` in the
    provider's tests and set :attr:`harness`.
    """

    harness: ClassVar[ProviderHarness]

    @pytest.fixture
    def anyio_backend(self) -> str:
        """The fakes and the runtime run on asyncio."""
        return "asyncio"

    @pytest.mark.anyio
    async def test_connect_and_handshake(self) -> None:
        """See :func:`check_connect`."""
        await check_connect(self.harness)

    @pytest.mark.anyio
    async def test_subscribe(self) -> None:
        """See :func:`check_subscribe`."""
        await check_subscribe(self.harness)

    @pytest.mark.anyio
    async def test_normalization_golden(self) -> None:
        """See :func:`check_golden` (a harness without golden files fails, saying how to record them)."""
        await check_golden(self.harness)

    @pytest.mark.anyio
    async def test_unsubscribe(self) -> None:
        """See :func:`check_unsubscribe`."""
        await check_unsubscribe(self.harness)

    @pytest.mark.anyio
    async def test_reconnect_resubscribes_everything(self) -> None:
        """See :func:`check_reconnect`."""
        await check_reconnect(self.harness)

    @pytest.mark.anyio
    async def test_stall_detection(self) -> None:
        """See :func:`check_stall`."""
        await check_stall(self.harness)

    @pytest.mark.anyio
    async def test_malformed_frame_counted_without_losing_ticks(self) -> None:
        """See :func:`check_malformed`."""
        await check_malformed(self.harness)

    @pytest.mark.anyio
    async def test_limit_per_message(self) -> None:
        """See :func:`check_limit_per_message`."""
        await check_limit_per_message(self.harness)

    @pytest.mark.anyio
    async def test_limit_per_connection(self) -> None:
        """See :func:`check_limit_per_connection` and :func:`check_limit_capacity_refused`."""
        await check_limit_per_connection(self.harness)
        await check_limit_capacity_refused(self.harness)

    @pytest.mark.anyio
    async def test_authentication_failure_without_storm(self) -> None:
        """See :func:`check_auth_failure`."""
        await check_auth_failure(self.harness)

    @pytest.mark.anyio
    async def test_clean_shutdown(self) -> None:
        """See :func:`check_clean_shutdown`."""
        await check_clean_shutdown(self.harness)


# ---------------------------------------------------------------------------- recording


def _load_harness(spec: str) -> ProviderHarness:
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"expected module:HarnessClass, got {spec!r}")
    obj = getattr(importlib.import_module(module), name)
    harness = obj() if isinstance(obj, type) else obj
    if not isinstance(harness, ProviderHarness):
        raise SystemExit(f"{spec} is not a ProviderHarness")
    return harness


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mdgate.testing.conformance --record module:HarnessClass [--name NAME]``."""
    parser = argparse.ArgumentParser(prog="python -m mdgate.testing.conformance",
                                     description="(Re)record a provider's golden files from its fake server.")
    parser.add_argument("--record", metavar="MODULE:HARNESS", required=True,
                        help="the harness (a ProviderHarness subclass or instance), "
                             "e.g. tests.test_conformance:MyHarness")
    parser.add_argument("--name", default="ticks", help="the golden file's name (default: ticks)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path.cwd()))
    harness = _load_harness(args.record)
    path = anyio.run(record_golden, harness, args.name)
    sys.stdout.write(f"recorded {path}\n")
    return 0


if __name__ == "__main__":
    # run the imported module's main, so that harnesses subclass the same ProviderHarness
    from mdgate.testing.conformance import main as _main

    raise SystemExit(_main())
