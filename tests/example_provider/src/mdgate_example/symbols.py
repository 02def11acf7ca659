"""Instrument names <-> the example feed's symbols: ``EXAMPLE:ACME`` is ``ACME``."""

from __future__ import annotations

from typing import Final

__all__ = ["EXCHANGES", "example_symbol"]

#: Exchanges this provider can serve.
EXCHANGES: Final[tuple[str, ...]] = ("EXAMPLE",)


def example_symbol(exchange: str, symbol: str) -> str | None:
    """
    Derive the feed's symbol for ``EXCHANGE:SYMBOL``.

    Returns:
        The symbol unchanged on ``EXAMPLE``, ``None`` on any other exchange.
    """
    return symbol if exchange in EXCHANGES else None
