"""
``mdgate install`` and ``mdgate uninstall``: pip, run in the interpreter that
runs mdgate (``sys.executable -m pip``), so that a plugin lands where mdgate
finds its entry points, whichever environment mdgate was installed in.

Before pip runs, the environment's install directories (site-packages and
the scripts directory) must be writable: otherwise pip would fall back to a
user installation the operator did not ask for, or fail half-way. pip's
own output is shown as it comes; pip failing is exit code 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import click

from mdgate._cli.errors import CommandFailed

__all__ = ["install", "install_dirs", "pip_command", "run_pip", "uninstall", "unwritable"]


def install_dirs() -> list[Path]:
    """Where pip installs for this interpreter: site-packages (pure and platform) and scripts."""
    paths = sysconfig.get_paths()
    found: list[Path] = []
    for key in ("purelib", "platlib", "scripts"):
        path = Path(paths[key])
        if path not in found:
            found.append(path)
    return found


def unwritable(dirs: Sequence[Path]) -> list[Path]:
    """Those of ``dirs`` this process cannot write (a missing one: when its nearest parent is not)."""
    bad: list[Path] = []
    for path in dirs:
        probe = path
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not os.access(probe, os.W_OK | os.X_OK):
            bad.append(path)
    return bad


def _check_writable(action: str) -> None:
    bad = unwritable(install_dirs())
    if bad:
        raise CommandFailed(
            f"cannot {action} {bad[0]}: not writable for this user ({sys.executable} runs mdgate); "
            "install mdgate in a virtual environment you own (python -m venv ~/.mdgate; "
            "~/.mdgate/bin/pip install mdgate) and run that mdgate, or run this as the user "
            "who owns that directory"
        )


def pip_command(*args: str) -> list[str]:
    """``python -m pip ARGS...`` for the interpreter that runs mdgate."""
    return [sys.executable, "-m", "pip", *args]


def run_pip(argv: Sequence[str]) -> None:
    """
    Run pip (its output goes straight to the terminal).

    Raises:
        CommandFailed: pip cannot be started or exits non-zero (exit code 1).
    """
    try:
        code = subprocess.call(list(argv))
    except OSError as exc:
        raise CommandFailed(f"cannot run pip ({argv[0]}): {exc}") from None
    if code != 0:
        raise CommandFailed(f"pip {argv[3]} failed (exit code {code}; its output is above)")


@click.command("install", short_help="install plugins (pip, in mdgate's environment)")
@click.argument("packages", nargs=-1, metavar="PACKAGE...")
@click.option("-U", "--upgrade", is_flag=True, help="upgrade the packages to their newest versions")
@click.option("-e", "--editable", metavar="PATH", help="install the project at PATH in editable mode")
def install(packages: tuple[str, ...], upgrade: bool, editable: str | None) -> None:
    """
    Install plugin packages with pip, into the environment mdgate runs in.

    PACKAGE is anything pip takes: a name, name==1.2, a path, a URL.
    Needs write access to that environment's site-packages.
    """
    if not packages and editable is None:
        raise click.UsageError("nothing to install: give PACKAGE... or -e PATH")
    args = ["install", *(["--upgrade"] if upgrade else []), *(["--editable", editable] if editable else [])]
    _check_writable("install into")
    run_pip(pip_command(*args, *packages))


@click.command("uninstall", short_help="uninstall plugins (pip, in mdgate's environment)")
@click.argument("packages", nargs=-1, required=True, metavar="PACKAGE...")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
def uninstall(packages: tuple[str, ...], yes: bool) -> None:
    """Uninstall plugin packages with pip, from the environment mdgate runs in."""
    _check_writable("uninstall from")
    run_pip(pip_command("uninstall", *(["--yes"] if yes else []), *packages))
