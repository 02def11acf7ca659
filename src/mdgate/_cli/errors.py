"""
Exit codes and the one failure line: the single place that turns an
exception raised by any command, built in or a plugin's, into what the
operator sees.

======  =========================================================
code    meaning
======  =========================================================
0       done (``run``: stopped by SIGTERM/SIGINT)
1       the machine or the network, as it is now
        (:class:`~mdgate.MdgateError`, a click error that is not a
        usage error)
2       what was written: a bad option or argument
        (:class:`click.UsageError`), a configuration problem
        (:class:`~mdgate.ConfigError`)
130     interrupted (Ctrl-C)
======  =========================================================

Every failure is one line on stderr, ``mdgate: error: ...``; a traceback is
shown only for an exception nobody expected (a bug).
"""

from __future__ import annotations

from typing import Final

import click

from mdgate._errors import ConfigError, MdgateError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "CommandFailed",
    "error_line",
    "exit_code",
]

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
EXIT_CONFIG: Final = 2
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


class CommandFailed(MdgateError):
    """A command could not do its job for a reason of the moment (exit code 1)."""


def exit_code(exc: BaseException) -> int | None:
    """
    The exit code for ``exc``; ``None`` for an exception that is not
    expected (a bug: the caller lets it propagate with its traceback).
    """
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        return EXIT_INTERRUPTED
    if isinstance(exc, (click.UsageError, ConfigError)):
        return EXIT_USAGE
    if isinstance(exc, click.ClickException):
        return EXIT_RUNTIME if exc.exit_code == 0 else exc.exit_code
    if isinstance(exc, MdgateError):
        return EXIT_RUNTIME
    return None


def _usage_message(exc: click.UsageError) -> str:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError) and exc.ctx is not None:
        command = exc.ctx.command
        names = command.list_commands(exc.ctx) if isinstance(command, click.Group) else []
        return f"missing command: one of {', '.join(names)}" if names else "missing argument"
    return exc.format_message()


def error_line(exc: BaseException) -> str:
    """The one stderr line (without newline) for an exception :func:`exit_code` maps."""
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        return "mdgate: interrupted"
    if isinstance(exc, click.UsageError):
        message = _usage_message(exc)
        if exc.ctx is not None and type(exc) is not click.UsageError:  # click's parse errors
            message += f" (see `{exc.ctx.command_path} --help`)"
        return f"mdgate: error: {message}"
    if isinstance(exc, click.ClickException):
        return f"mdgate: error: {exc.format_message()}"
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return f"mdgate: error: {text}"
