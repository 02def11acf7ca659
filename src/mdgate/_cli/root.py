"""
The ``mdgate`` click group: the built-in commands, the plugins' commands
(``mdgate_add_commands``, loaded only when a command needs them), ``--config``
accepted before or after any command, and :func:`invoke`, which runs a
command line and maps whatever it raises to one stderr line and an exit code
(:mod:`mdgate._cli.errors`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, Final

import click

from mdgate._cli.context import CommandContext
from mdgate._cli.errors import error_line, exit_code

__all__ = ["CONFIG_HELP", "LazyCommand", "RootGroup", "adopt", "build_cli", "invoke", "main"]

CONFIG_HELP: Final = "TOML configuration file (default: ./mdgate.toml when present)"

#: The built-in commands: name -> (module, attribute, short help). A command's module is
#: imported when the command is used, not to list it in ``mdgate --help`` (the short help here
#: is the command's own; tests/unit/test_cli.py checks that they agree).
BUILTINS: Final[dict[str, tuple[str, str, str]]] = {
    "backfill": ("mdgate._cli.backfill", "backfill", "fetch one-minute bars from a provider's REST API"),
    "demo": ("mdgate._cli.demo", "demo", "the gateway on a bundled recording (offline)"),
    "doctor": ("mdgate._cli.doctor", "doctor",
               "check the installation: config, plugins, credentials, services, routes, port, clock"),
    "export": ("mdgate._cli.export", "export", "write stored ticks or bars as CSV or Parquet"),
    "history": ("mdgate._cli.inspect", "history", "print stored ticks or bars"),
    "install": ("mdgate._cli.install", "install", "install plugins (pip, in mdgate's environment)"),
    "new-provider": ("mdgate._cli.scaffold", "new_provider", "write a new provider package to start from"),
    "plugins": ("mdgate._cli.inspect", "plugins", "list installed plugins and providers"),
    "record": ("mdgate._cli.recording", "record", "run the gateway, recording every provider frame"),
    "replay": ("mdgate._cli.recording", "replay", "play a recording through the gateway"),
    "run": ("mdgate._cli.run", "run", "run the gateway"),
    "status": ("mdgate._cli.inspect", "status", "show a running gateway's status"),
    "tail": ("mdgate._cli.inspect", "tail", "print ticks of instruments as they arrive"),
    "uninstall": ("mdgate._cli.install", "uninstall", "uninstall plugins (pip, in mdgate's environment)"),
}


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


class LazyCommand(click.Command):
    """
    A command listed by its name and short help, its module imported when it is
    used (run, its help, completion), not to list it in ``mdgate --help``: what a
    built-in plugin adds (``module:attribute`` names the real command). The root
    group puts the real command in its place on first use; another group that
    holds one runs the real command all the same.
    """

    def __init__(self, name: str, target: str, short_help: str) -> None:
        super().__init__(name, short_help=short_help)
        self.target = target

    def load(self) -> click.Command:
        """The real command (its module imported now if it was not yet)."""
        module, _, attr = self.target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        """The real command's context: a group runs ``ctx.command``, the real one."""
        return self.load().make_context(info_name, args, parent=parent, **extra)


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
        for name in BUILTINS:  # a plugin cannot replace a built-in command
            self.commands.pop(name, None)
        self.commands.update(builtins)
        for command in self.commands.values():
            adopt(command)

    def builtin(self, name: str) -> click.Command:
        """The built-in command ``name``, its module imported now if it was not yet."""
        command = self.commands.get(name)
        if command is None:
            module, attr, _ = BUILTINS[name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            adopt(command)
            self.commands[name] = command
        return command

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``: a built-in one, else one a plugin adds."""
        if cmd_name in BUILTINS:
            return self.builtin(cmd_name)
        if cmd_name not in self.commands:
            self.add_plugin_commands(ctx)
        command = self.commands.get(cmd_name)
        if isinstance(command, LazyCommand):
            command = self.commands[cmd_name] = command.load()
            adopt(command)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, the plugins' included."""
        self.add_plugin_commands(ctx)
        return sorted(set(self.commands) | set(BUILTINS))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The ``Commands:`` section of the help: built-in ones from :data:`BUILTINS` (not imported)."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None and name in BUILTINS:
                rows.append((name, BUILTINS[name][2]))  # each built-in's short_help is explicit: shown whole
            elif command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def build_cli() -> RootGroup:
    """The ``mdgate`` command group with the built-in commands (plugins add theirs on first need)."""
    from mdgate import __version__

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
