"""Shared helpers for the Yahoo plugin tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


def _load(name: str) -> list[dict[str, Any]]:
    variants: list[dict[str, Any]] = json.loads((DATA / name).read_text())["variants"]
    return variants


@pytest.fixture
def load_variants() -> Any:
    """Return a loader of the variants of one ``tests/data`` file."""
    return _load
