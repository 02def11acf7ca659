"""
The ``mdgate`` click group: the built-in commands, the plugins' commands
(``mdgate_add_commands``, loaded only when a command needs them), ``--config``
accepted before or after any command, and :func:`invoke`, which runs a
command line and maps whatever it raises to one stderr line and an exit code
(:mod:`mdgate._cli.errors`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

import click

from mdgate._cli.context import CommandContext
from mdgate._cli.errors import error_line, exit_code

__all__ = ["CONFIG_HELP", "RootGroup", "adopt", "build_cli", "invoke", "main"]

CONFIG_HELP: Final = "TOML configuration file (default: ./mdgate.toml when present)"


class HelpFormatter(click.HelpFormatter):
    """click's help, with argparse's lower-case ``usage:`` (scripts grep for it)."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        """Write the usage line, ``usage: mdgate ...`` unless ``prefix`` says otherwise."""
        super().write_usage(prog, args, "usage: " if prefix is None else prefix)


class Context(click.Context):
    """The click context of every ``mdgate`` command (its help style)."""

    formatter_class = HelpFormatter


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:  # parsed in command-line order: the one given last wins
        ctx.ensure_object(CommandContext).config_path = value


def adopt(command: click.Command) -> None:
    """
    Give ``command`` and its sub-commands (recursively) ``--config PATH``
    (and ``-c`` unless the command uses ``-c`` itself) and mdgate's help style.
    """
    command.context_class = Context
    flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
    if "--config" not in flags:
        names = ["--config"] if "-c" in flags else ["--config", "-c"]
        command.params.append(
            click.Option(names, metavar="PATH", expose_value=False, callback=_remember_config,
                         help=CONFIG_HELP)
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            adopt(sub)


class RootGroup(click.Group):
    """
    The root group: built-in commands are found without loading plugins
    (``mdgate run`` configures logging before anything is loaded); the
    plugins' commands are added on first need (an unknown command name,
    help, completion), each plugin's faults contained.
    """

    context_class = Context

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._plugins_added = False

    def add_plugin_commands(self, ctx: click.Context) -> None:
        """Let every plugin add its commands (``mdgate_add_commands``), once."""
        if self._plugins_added:
            return
        self._plugins_added = True
        from mdgate._cli.common import registry
        from mdgate._providers.calls import add_commands

        builtins = dict(self.commands)
        add_commands(registry(ctx.ensure_object(CommandContext)), self)
        self.commands.update(builtins)  # a plugin cannot replace a built-in command
        for command in self.commands.values():
            adopt(command)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``: a built-in one, else one a plugin adds."""
        if cmd_name not in self.commands:
            self.add_plugin_commands(ctx)
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, the plugins' included."""
        self.add_plugin_commands(ctx)
        return sorted(self.commands)


def build_cli() -> RootGroup:
    """The ``mdgate`` command group with the built-in commands (plugins add theirs on first need)."""
    from mdgate import __version__
    from mdgate._cli.backfill import backfill
    from mdgate._cli.demo import demo
    from mdgate._cli.doctor import doctor
    from mdgate._cli.export import export
    from mdgate._cli.inspect import history, plugins, status, tail
    from mdgate._cli.install import install, uninstall
    from mdgate._cli.recording import record, replay
    from mdgate._cli.run import run
    from mdgate._cli.scaffold import new_provider

    @click.group(
        cls=RootGroup,
        invoke_without_command=True,
        help="mdgate: market-data gateway. Many providers in, one normalized tick stream out.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.version_option(__version__, "--version", prog_name="mdgate", message="%(prog)s %(version)s")
    @click.pass_context
    def cli(ctx: click.Context) -> None:
        if ctx.invoked_subcommand is None:
            click.echo(ctx.get_help())
        elif ctx.invoked_subcommand not in ("run", "record", "replay"):  # these: from [logging]
            ctx.ensure_object(CommandContext).ensure_logging()

    assert isinstance(cli, RootGroup)
    for command in (run, plugins, status, tail, history, backfill):
        cli.add_command(command)
    cli.add_command(install)
    cli.add_command(uninstall)
    cli.add_command(new_provider)
    cli.add_command(doctor)
    cli.add_command(export)
    cli.add_command(demo)
    cli.add_command(record)
    cli.add_command(replay)
    adopt(cli)
    return cli


def invoke(
    command: click.Command, argv: Sequence[str] | None = None, obj: CommandContext | None = None
) -> int:
    """
    Run ``command`` on ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    A failure click or mdgate expects is one ``mdgate: error: ...`` line on
    stderr and its exit code (:func:`mdgate._cli.errors.exit_code`); anything
    else (a bug) propagates with its traceback.
    """
    try:
        result = command.main(
            args=list(sys.argv[1:] if argv is None else argv), prog_name="mdgate",
            standalone_mode=False, obj=obj or CommandContext(),
        )
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if code is None:
            raise
        sys.stderr.write(error_line(exc) + "\n")
        return code
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mdgate`` command."""
    return invoke(build_cli(), argv)
