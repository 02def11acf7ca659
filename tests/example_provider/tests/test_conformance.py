"""
The example provider runs mdgate's provider conformance suite (docs/conformance.md).

Re-record the golden files (after a reviewed change of the decoder) from the
repository root, with the example provider installed::

    python -m mdgate.testing.conformance --record tests.example_provider.tests.test_conformance:ExampleHarness
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mdgate.testing import FakeProviderServer
from mdgate.testing.conformance import ProviderConformance, ProviderHarness


class ExampleHarness(ProviderHarness):
    """The example provider against its fake feed (``mdgate_example.testing.FakeExampleServer``)."""

    provider = "example"
    instruments: ClassVar = {"EXAMPLE:ACME": "ACME", "EXAMPLE:BETA": "BETA"}
    golden_dir = Path(__file__).parent / "golden"

    def make_fake(self) -> FakeProviderServer[Any]:
        """A new example feed."""
        from mdgate_example.testing import FakeExampleServer

        return FakeExampleServer()

    def provider_config(self, fake: FakeProviderServer[Any]) -> dict[str, object]:
        """``[providers.example]`` pointing at the fake, with a token."""
        return {"url": fake.url, "token": "conformance-token"}

    async def send_tick(self, fake: FakeProviderServer[Any], code: str, price: float, ts_ms: int) -> None:
        """One ``{"s","p","t"}`` object."""
        from mdgate_example.testing import FakeExampleServer

        assert isinstance(fake, FakeExampleServer)
        await fake.send_tick(code, price, ts_ms, q=1, v=100)

    async def send_malformed(self, fake: FakeProviderServer[Any]) -> None:
        """A frame that is not JSON."""
        await fake.send_malformed()

    def expire_credentials(self, fake: FakeProviderServer[Any]) -> None:
        """The feed answers every subscribe with an ``auth`` error."""
        fake.expire_credentials()


class TestConformance(ProviderConformance):
    harness = ExampleHarness()
