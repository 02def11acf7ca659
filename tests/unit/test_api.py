"""Guards: the public API and the hook documentation stay complete."""

from __future__ import annotations

import inspect
import pathlib

import mdgate
from mdgate import hookspecs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ruff_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order (isort style): CONSTANTS, then Classes, then the rest, each alphabetical."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_all_sorted_and_complete():
    assert mdgate.__all__ == sorted(mdgate.__all__, key=_ruff_order)
    for name in mdgate.__all__:
        assert hasattr(mdgate, name), name


def hook_names():
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("mdgate_")]


def test_every_hookspec_has_a_docstring_with_version():
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "versionadded" in doc, name


def test_every_hook_documented_in_writing_a_provider_with_signature():
    text = (ROOT / "docs" / "writing-a-provider.md").read_text()
    for name in hook_names():
        sig = str(inspect.signature(getattr(hookspecs, name)))
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"{name}(" in text, name
        assert f"{name}({params})" in text, f"{name}{sig}"
