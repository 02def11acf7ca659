"""What one check of ``mdgate doctor`` found: :class:`CheckResult`, and how it is printed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from mdgate._providers.faults import scrub

__all__ = ["NOT_RUN", "CheckResult", "failed", "passed", "skipped"]

#: The detail of a check that needs a configuration that did not load.
NOT_RUN: Final = "not run: the configuration did not load"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """
    One check's outcome.

    Attributes:
        name: the check (``config``, ``plugins``, ``credentials``...).
        ok: ``True`` passed, ``False`` failed, ``None`` did not apply (or was not run).
        detail: what was found, in one line (no secret).
        hint: what to do about a failure (``None`` when there is nothing to do).
    """

    name: str
    ok: bool | None
    detail: str
    hint: str | None = None

    def line(self, marks: tuple[str, str, str] = ("✓", "✗", "-")) -> str:
        """
        The one text line: ``✓ name: detail``, ``✗ name: detail — hint`` or ``- name: detail``.

        Args:
            marks: the signs of passed, failed and not applicable.
        """
        mark = marks[2] if self.ok is None else marks[0] if self.ok else marks[1]
        text = f"{mark} {self.name}: {self.detail}"
        return f"{text} — {self.hint}" if self.hint and self.ok is False else text

    def document(self) -> dict[str, Any]:
        """The check as ``--json`` prints it: ``name``, ``ok``, ``detail``, ``hint``."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}

    def scrubbed(self, hidden: Iterable[str]) -> CheckResult:
        """A copy with ``hidden`` values and any credential in the texts masked."""
        values = list(hidden)
        hint = None if self.hint is None else scrub(self.hint, values)
        return CheckResult(self.name, self.ok, scrub(self.detail, values), hint)


def passed(name: str, detail: str) -> CheckResult:
    """A check that passed."""
    return CheckResult(name, True, detail)


def failed(name: str, detail: str, hint: str | None = None) -> CheckResult:
    """A check that failed, with what to do about it."""
    return CheckResult(name, False, detail, hint)


def skipped(name: str, detail: str) -> CheckResult:
    """A check that did not apply, or could not run (``detail`` says why)."""
    return CheckResult(name, None, detail)
