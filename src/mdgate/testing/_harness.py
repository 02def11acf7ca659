"""The description of one provider the conformance suite runs against (:class:`ProviderHarness`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from mdgate.testing.fake_server import FakeProviderServer

__all__ = ["ProviderHarness"]


class ProviderHarness(ABC):
    """
    What the suite needs to know about one provider (subclass it; :meth:`make_fake`
    and :meth:`send_tick` are protocol-specific and must be implemented).

    Attributes:
        provider: the provider's name (``ProviderSpec.name``).
        instruments: two or more instrument names -> the provider codes the fake serves.
        golden_dir: the directory of golden files (``*.json``: recorded frames ->
            expected ticks); required: record them with
            ``python -m mdgate.testing.conformance --record module:Harness``.
        plugin: the plugin object to register instead of loading the installed
            entry points (a module with ``@hookimpl`` functions); ``None``: entry points.
        environ: the environment the provider's ``parse_config`` sees.
    """

    provider: ClassVar[str] = ""
    instruments: ClassVar[Mapping[str, str]] = {}
    golden_dir: ClassVar[Path | None] = None
    plugin: ClassVar[object | None] = None
    environ: ClassVar[Mapping[str, str]] = {}

    @abstractmethod
    def make_fake(self) -> FakeProviderServer[Any]:
        """A new fake server for the provider, not started."""

    def provider_config(self, fake: FakeProviderServer[Any]) -> dict[str, object]:
        """The ``[providers.<name>]`` table pointing the provider at ``fake`` (started)."""
        return {"url": fake.url}

    @abstractmethod
    async def send_tick(self, fake: FakeProviderServer[Any], code: str, price: float, ts_ms: int) -> None:
        """Make ``fake`` send one valid tick of ``code`` at ``price``, dated ``ts_ms`` (epoch ms)."""

    async def send_malformed(self, fake: FakeProviderServer[Any]) -> None:
        """Make ``fake`` send one frame the decoder must reject (default: ``fake.send_malformed()``)."""
        await fake.send_malformed()

    def expire_credentials(self, fake: FakeProviderServer[Any]) -> None:
        """From now on ``fake`` refuses authentication (default: ``fake.expire_credentials()``)."""
        fake.expire_credentials()

    def limit_codes(self, count: int) -> dict[str, str]:
        """
        ``count`` further instruments -> valid codes, for the limit checks.

        The default appends 0, 1, 2... to the first instrument's code (a
        symbol, or a numeric id); override it when that is not a valid code.
        """
        first = next(iter(self.instruments.values()))
        return {f"CONFORMANCE:L{i}": f"{first}{i}" for i in range(count)}
