"""``mdgate doctor``: check the installation, one line per check (:mod:`mdgate._doctor`)."""

from __future__ import annotations

import sys

import click

from mdgate._cli.common import json_option, registry
from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.errors import EXIT_OK, EXIT_RUNTIME

__all__ = ["doctor"]


def _marks() -> tuple[str, str, str]:
    """``✓ ✗ -``, or ASCII signs when stdout cannot encode them."""
    try:
        "✓✗—".encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "+", "x", "-"
    return "✓", "✗", "-"


@click.command(
    "doctor",
    short_help="check the installation: config, plugins, credentials, services, routes, port, clock",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="seconds allowed to each network check, and to the providers for a tick (clock)")
@json_option
@pass_context
@click.pass_context
def doctor(ctx: click.Context, obj: CommandContext, timeout: float, as_json: bool) -> None:
    """
    Check this installation, one line per check: config, plugins,
    credentials, redis, postgres, routes, port, clock. Exit 0 when every
    check passed or did not apply, 1 when one failed. Secrets are never shown.
    """
    from mdgate._doctor import run_checks

    marks = _marks()
    results = []
    for result in run_checks(lambda: obj.settings, registry(obj), obj.config_path, obj.environ, timeout):
        results.append(result)
        if not as_json:
            text = result.line(marks)
            click.echo(text if marks[0] == "✓" else text.replace("—", "--"))
    ok = all(r.ok is not False for r in results)
    if as_json:
        obj.print_json({"ok": ok, "checks": [r.document() for r in results]})
    ctx.exit(EXIT_OK if ok else EXIT_RUNTIME)
