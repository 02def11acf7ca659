"""
The ``mdgate`` command line, built on click (no logic of its own: it calls the modules).

    mdgate run                      run the gateway
    mdgate plugins                  installed plugins and their providers
    mdgate status                   a running gateway's /status as a table
    mdgate tail INSTRUMENT...       print ticks as they arrive
    mdgate history INSTRUMENT       stored ticks or bars
    mdgate backfill INSTRUMENT      one-minute bars from a provider's REST API

Plugins add more (``mdgate db``, ``mdgate routes``, ``mdgate dhan``...)
through the ``mdgate_add_commands`` hook. The group is in
:mod:`mdgate._cli.root`, exit codes and the error line in
:mod:`mdgate._cli.errors`, the plugins' context object in
:mod:`mdgate._cli.context`. This module stays light: ``import mdgate``
imports it (for :class:`~mdgate.CommandContext`).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mdgate`` command: run ``argv`` (default ``sys.argv[1:]``); the exit code."""
    from mdgate._cli.root import main as run_main

    return run_main(argv)
