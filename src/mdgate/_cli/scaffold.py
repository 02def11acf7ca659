"""``mdgate new-provider NAME``: write a working provider package to start from."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["new_provider"]


@click.command("new-provider", short_help="write a new provider package to start from")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="create mdgate-NAME in this directory")
def new_provider(name: str, directory: Path) -> None:
    """
    Write mdgate-NAME/: a provider package in the shape of the built-in ones
    (plugin, config, protocol, symbols, a fake feed in testing.py, protocol
    tests and the conformance suite), ready for `mdgate install -e`. NAME is a
    lowercase identifier; an existing directory is never overwritten.
    """
    from mdgate._cli.errors import CommandFailed
    from mdgate._scaffold import ScaffoldError, write_provider

    try:
        root = write_provider(name, directory)
    except ScaffoldError as exc:  # the name or the place: what was written (exit 2)
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # the machine: a directory not writable, a full disk (exit 1)
        raise CommandFailed(f"cannot write the provider package: {exc}") from None
    click.echo(f"wrote {root}")
    click.echo(f"next: mdgate install -e {root} && (cd {root} && python -m pytest)")
    click.echo("guide: docs/writing-a-provider.md")
