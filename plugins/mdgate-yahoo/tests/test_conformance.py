"""
The Yahoo provider runs mdgate's provider conformance suite (docs/conformance.md).

Re-record the golden files (after a reviewed change of the decoder) from
``plugins/mdgate-yahoo``::

    python -m mdgate.testing.conformance --record tests.test_conformance:YahooHarness
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mdgate.testing import FakeProviderServer
from mdgate.testing.conformance import ProviderConformance, ProviderHarness
from mdgate_yahoo.testing import FakeYahooServer


class YahooHarness(ProviderHarness):
    """The Yahoo provider against :class:`FakeYahooServer` (no credentials: expiring them means HTTP 401)."""

    provider = "yahoo"
    instruments: ClassVar = {"NASDAQ:AAPL": "AAPL", "NYSE:IBM": "IBM"}
    golden_dir = Path(__file__).parent / "golden"

    def make_fake(self) -> FakeProviderServer[Any]:
        """A new fake streamer."""
        return FakeYahooServer()

    async def send_tick(self, fake: FakeProviderServer[Any], code: str, price: float, ts_ms: int) -> None:
        """One PricingData frame with a trade size and the day volume."""
        assert isinstance(fake, FakeYahooServer)
        await fake.send_pricing(code, price=price, time=ts_ms, last_size=10, day_volume=1000,
                                quote_type=8, market_hours=1, price_hint=2)


class TestConformance(ProviderConformance):
    harness = YahooHarness()
