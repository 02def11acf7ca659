"""
The Dhan provider runs mdgate's provider conformance suite (docs/conformance.md).

Re-record the golden files (after a reviewed change of the decoder) from
``plugins/mdgate-dhan``::

    python -m mdgate.testing.conformance --record tests.test_conformance:DhanHarness
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mdgate.testing import FakeProviderServer
from mdgate.testing.conformance import ProviderConformance, ProviderHarness
from mdgate_dhan.testing import FakeDhanServer

TOKEN = "conformance-token"
CLIENT = "1100998877"


class DhanHarness(ProviderHarness):
    """The Dhan provider against :class:`FakeDhanServer` (expired credentials: disconnect 808)."""

    provider = "dhan"
    instruments: ClassVar = {"NSE:RELIANCE": "NSE_EQ:2885", "NSE:INFY": "NSE_EQ:1594"}
    golden_dir = Path(__file__).parent / "golden"

    def make_fake(self) -> FakeProviderServer[Any]:
        """A new fake feed expecting this harness's credentials."""
        return FakeDhanServer(token=TOKEN, client_id=CLIENT)

    def provider_config(self, fake: FakeProviderServer[Any]) -> dict[str, object]:
        """``[providers.dhan]`` pointing at the fake, with its credentials."""
        return {"url": fake.url, "client_id": CLIENT, "access_token": TOKEN}

    async def send_tick(self, fake: FakeProviderServer[Any], code: str, price: float, ts_ms: int) -> None:
        """One Quote packet (Dhan's LTT has whole seconds)."""
        assert isinstance(fake, FakeDhanServer)
        await fake.send_quote(code, price, ts_ms)


class TestConformance(ProviderConformance):
    harness = DhanHarness()
