"""
Every code example of docs/writing-a-provider.md runs, in the order written.

The convention (stated in the document's introduction too): a fenced block
is preceded, on the line just above its opening fence, by an HTML comment
that says what to do with it:

* ``<!-- run -->`` before a ``sh`` block: run by ``bash -e`` (it must exit 0;
  a block running ``mdgate tail`` must print a tick); before a ``python``
  block: run by the venv's ``python`` (it must exit 0: its asserts hold);
* ``<!-- file: PATH -->``: the block's text is written to ``PATH``.

Only ``text`` blocks (directory trees, output) go without a comment; any
other unmarked block fails :func:`test_every_code_example_is_marked`.

The blocks run in one simulated shell session: the working directory a
``sh`` block ends in is where the next block runs (``cd mdgate-acme``
carries over), starting in an empty temporary directory. The environment
is a fresh virtual environment seeing this project's packages (as in
``tests/integration/test_scaffold.py``: nothing is downloaded) with its
``bin`` first on ``PATH`` (``python``, ``mdgate``), only the scaffolded
plugin loaded (``MDGATE_LOAD_PLUGINS=acme``). The ports the document uses,
9999 (the fake feed) and 8765 (the gateway), are replaced by free ones.
Background processes a block leaves behind are ended by their process
group, the block's own ``bash``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_scaffold import Venv

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-a-provider.md"
PORTS = ("9999", "8765")

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*(run|file:\s*(\S+))\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of the document."""

    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    action: str | None  # "run", "file" or None (unmarked)
    path: str | None = None  # for "file"


def blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, with the comment just above each."""
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        mark = _MARK.match(lines[i - 1]) if i else None
        action = None if mark is None else ("run" if mark.group(1) == "run" else "file")
        out.append(Block(i + 1, m.group(1), "\n".join(lines[i + 1:end]) + "\n", action,
                         mark.group(2) if mark else None))
        i = end + 1
    return out


def test_every_code_example_is_marked() -> None:
    found = blocks(DOC.read_text())
    unmarked = [f"line {b.line}: ```{b.lang}" for b in found if b.action is None and b.lang != "text"]
    assert not unmarked, "mark these blocks <!-- run --> or <!-- file: PATH --> (or make them text):\n" + \
        "\n".join(unmarked)
    wrong = [f"line {b.line}: {b.action} ```{b.lang}" for b in found
             if b.action == "run" and b.lang not in ("sh", "python")]
    assert not wrong, "only sh and python blocks can run:\n" + "\n".join(wrong)
    kinds = {(b.action, b.lang) for b in found}
    assert {("run", "sh"), ("run", "python"), ("file", "toml")} <= kinds


def test_the_convention_is_parsed_as_documented() -> None:
    text = (
        "<!-- run -->\n```sh\necho hi\n```\n\n```toml\nx = 1\n```\n"
        "<!-- file: a.toml -->\n```toml\ny = 2\n```\n"
    )
    assert blocks(text) == [
        Block(2, "sh", "echo hi\n", "run"),
        Block(6, "toml", "x = 1\n", None),
        Block(10, "toml", "y = 2\n", "file", "a.toml"),
    ]


def _free_ports(n: int) -> list[str]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_sh(block: Block, code: str, cwd: Path, venv: Venv, state: Path) -> tuple[Path, str]:
    script = f'cd "{cwd}"\n{code}\npwd > "{state}"\n'
    proc = subprocess.Popen(["bash", "-e", "-c", script], env=venv.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        out = b"(timed out)"
    finally:
        try:  # whatever the block left running in the background
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"docs line {block.line}: sh block failed:\n{code}\n{out.decode()}"
    return Path(state.read_text().strip()), out.decode()


@pytest.mark.timeout(600)
def test_the_examples_run_in_order(tmp_path: Path) -> None:
    venv = Venv(tmp_path / "venv", plugins="acme")
    work = tmp_path / "work"
    work.mkdir()
    ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
    cwd, ran, streamed = work, 0, False
    for block in blocks(DOC.read_text()):
        if block.action is None:
            continue
        code = re.sub(r"\b(" + "|".join(PORTS) + r")\b", lambda m: ports[m.group(1)], block.code)
        if block.action == "file":
            assert block.path
            (cwd / block.path).write_text(code)
        elif block.lang == "sh":
            cwd, out = _run_sh(block, code, cwd, venv, tmp_path / "cwd")
            if "mdgate tail" in code:  # tail exits 0 after --seconds without ticks too: ticks must show
                tick = re.search(r"ACME:ALPHA\s+\d+\.\d+ ACME\b", out)
                assert tick, f"docs line {block.line}: no tick\n{out}"
                streamed = True
        else:
            script = tmp_path / f"example_{block.line}.py"
            script.write_text(code)
            result = venv.run(str(script), cwd=cwd)
            assert result.returncode == 0, (
                f"docs line {block.line}: python block failed:\n{code}\n{result.stdout}{result.stderr}"
            )
        ran += 1
    assert ran >= 8 and streamed
    assert (work / "mdgate-acme" / "tests" / "golden" / "ticks.json").is_file()
