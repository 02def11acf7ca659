"""
The repository's documentation links resolve, and nothing cites a document
that is not in the repository.

* No file of the repository names the team's private notes (the protocol
  research note or the design card): readers cannot follow such a citation.
  Wire-format facts live in ``docs/protocols/``, design in ``docs/*.md``.
* Every relative Markdown link (``[text](path#anchor)``) in a ``.md`` file
  points at an existing file, and its anchor at an existing heading.
* Every ``docs/...md#anchor`` pointer written in any other file (comments,
  docstrings) names an existing file under the repository root and an
  existing heading.

Anchors are GitHub's heading slugs.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Spelled in pieces so that this file does not cite them itself.
_PRIVATE = ("protocols", "design")
_CITATION = re.compile(r"\b(?:" + "|".join(_PRIVATE) + r")\.md\b", re.IGNORECASE)

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`[^`]*`")
_MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SOURCE_POINTER = re.compile(r"(?<![\w./-])(docs/[\w./-]*\.md)(?:#([\w-]+))?")
_EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


def _repo_files() -> list[Path]:
    """Tracked files plus new, not ignored ones (what the next commit would hold)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    files = []
    for name in out.split("\0"):
        path = ROOT / name
        if name and path.is_file():  # a tracked file deleted in the work tree is skipped
            files.append(path)
    return files


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", "replace")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading text (before the ``-1``, ``-2`` of duplicates)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _lines_outside_fences(text: str) -> list[tuple[int, str]]:
    out = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
            continue
        if fence is None:
            out.append((number, line))
    return out


@cache
def anchors(path: Path) -> frozenset[str]:
    """The heading anchors of a Markdown file, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _lines_outside_fences(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def _check_target(target: Path, anchor: str | None, where: str, problems: list[str]) -> None:
    if not target.exists():
        shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
        problems.append(f"{where}: {shown} does not exist")
        return
    if anchor and target.is_file() and target.suffix == ".md" and anchor not in anchors(target):
        problems.append(f"{where}: no heading with anchor #{anchor} in {target.relative_to(ROOT)}")


def markdown_link_problems(path: Path, text: str) -> list[str]:
    """Broken relative links (file or anchor) of one Markdown file holding ``text``."""
    problems: list[str] = []
    rel = path.relative_to(ROOT)
    for number, line in _lines_outside_fences(text):
        for m in _MD_LINK.finditer(_INLINE_CODE.sub("", line)):
            url = m.group(1)
            if url.startswith(_EXTERNAL):
                continue
            file_part, _, anchor = url.partition("#")
            target = path if not file_part else (path.parent / file_part).resolve()
            _check_target(target, anchor or None, f"{rel}:{number}: ({url})", problems)
    return problems


def source_pointer_problems(path: Path, text: str) -> list[str]:
    """Broken ``docs/...md#anchor`` pointers in a non-Markdown file."""
    problems: list[str] = []
    rel = path.relative_to(ROOT)
    for number, line in enumerate(text.splitlines(), 1):
        for m in _SOURCE_POINTER.finditer(line):
            file_part, anchor = m.group(1), m.group(2)
            _check_target(ROOT / file_part, anchor, f"{rel}:{number}: {m.group(0)}", problems)
    return problems


def citation_problems(path: Path, text: str) -> list[str]:
    """Lines of one file citing a document that is not in the repository."""
    rel = path.relative_to(ROOT)
    return [
        f"{rel}:{number}: {line.strip()[:120]}"
        for number, line in enumerate(text.splitlines(), 1)
        if _CITATION.search(line)
    ]


@pytest.fixture(scope="module")
def repo_texts() -> list[tuple[Path, str]]:
    out = []
    for path in _repo_files():
        if path == Path(__file__).resolve():
            continue  # the checker's own examples
        text = _text(path)
        if text is not None:
            out.append((path, text))
    return out


def test_no_citation_of_documents_outside_the_repository(repo_texts: list[tuple[Path, str]]) -> None:
    problems = [p for path, text in repo_texts for p in citation_problems(path, text)]
    assert not problems, (
        "cite docs/protocols/ or docs/*.md instead of documents outside the repository:\n"
        + "\n".join(problems)
    )


def test_relative_markdown_links_resolve(repo_texts: list[tuple[Path, str]]) -> None:
    markdown = [(path, text) for path, text in repo_texts if path.suffix == ".md"]
    assert ROOT / "docs" / "protocols" / "dhan.md" in [path for path, _ in markdown]
    problems = [p for path, text in markdown for p in markdown_link_problems(path, text)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_pointers_in_source_resolve(repo_texts: list[tuple[Path, str]]) -> None:
    problems = [
        p for path, text in repo_texts if path.suffix != ".md" for p in source_pointer_problems(path, text)
    ]
    assert not problems, "broken docs/ pointers:\n" + "\n".join(problems)


def test_protocol_pages_have_the_anchors_the_code_uses() -> None:
    # The sections the plugins point at; renaming a heading must update the pointers.
    dhan = anchors(ROOT / "docs" / "protocols" / "dhan.md")
    yahoo = anchors(ROOT / "docs" / "protocols" / "yahoo.md")
    assert {"packet-header", "quote-packet", "full-packet", "disconnect-codes", "last-trade-time"} <= dhan
    assert {"pricingdata", "what-the-decoder-uses", "rest-history", "the-fake-server"} <= yahoo


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Quote packet", "quote-packet"),
        ("`[providers.dhan]`", "providersdhan"),
        ("1. The package", "1-the-package"),
        ("What the decoder uses", "what-the-decoder-uses"),
        ("Exit codes & errors", "exit-codes--errors"),
        ("snake_case key", "snake_case-key"),
    ],
)
def test_slug_matches_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_checks_catch_broken_links() -> None:
    # The checkers flag what they should and only that. The probe file is never
    # written: it only places the text in docs/protocols/ for relative links.
    probe = ROOT / "docs" / "protocols" / "_probe.md"
    good = "[q](dhan.md#quote-packet) [r](../routing.md) [w](https://x.y)"
    assert markdown_link_problems(probe, good) == []
    assert markdown_link_problems(probe, "[q](dhan.md#no-such-section)")
    assert markdown_link_problems(probe, "[n](nothing.md)")
    assert markdown_link_problems(probe, "```\n[n](nothing.md)\n```\n`[n](nothing.md)`") == []
    assert source_pointer_problems(probe, "see docs/protocols/dhan.md#quote-packet") == []
    assert source_pointer_problems(probe, "see docs/protocols/dhan.md#no-such-section")
    assert source_pointer_problems(probe, "see docs/protocols/nothing.md")
    assert citation_problems(probe, "as in " + _PRIVATE[0] + ".md section 3")
    assert citation_problems(probe, "as in the " + _PRIVATE[1] + ".md card")
    assert citation_problems(probe, "see docs/protocols/dhan.md and docs/protocols/README.md") == []
