"""
:class:`CommandContext`: what every ``mdgate`` command, a plugin's included,
gets as its click context object (``ctx.obj``; :data:`pass_context` hands it
to a command's function).

It holds the ``--config`` path (given before or after the command, the last
one wins), loads the settings lazily from that file and the environment, and
offers the services a plugin's command needs without importing mdgate's
private modules (storing instrument mappings in the routing database).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import click

if TYPE_CHECKING:
    from mdgate._config import LoggingSettings, Settings
    from mdgate._routing.table import InstrumentMapping

__all__ = ["NO_DATABASE", "CommandContext", "pass_context"]

#: The usage error of a database command without a database URL.
NO_DATABASE: Final = (
    "no database configured: pass --database-url, set MDGATE_DATABASE_URL "
    "or [database] url in the config file"
)


class CommandContext:
    """
    The state one ``mdgate`` invocation shares between its commands.

    Attributes:
        environ: the environment the settings are read from (a copy of
            ``os.environ`` unless given).
        config_path: the ``--config PATH`` given on the command line, or
            ``None`` (then ``./mdgate.toml`` is read when it exists).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """
        Args:
            environ: the environment to read settings from; ``None`` = ``os.environ``.
        """
        self.environ: dict[str, str] = dict(os.environ if environ is None else environ)
        self.config_path: str | None = None
        self._settings: Settings | None = None
        self._logging: str | None = None

    @property
    def settings(self) -> Settings:
        """
        The settings from ``--config`` (or ``./mdgate.toml``) and the environment, loaded once.

        Raises:
            ConfigError: the file cannot be read or a value is wrong (exit code 2).
        """
        if self._settings is None:
            from mdgate._config import load_settings

            self._settings = load_settings(self.config_path, self.environ)
        return self._settings

    def use_settings(self, settings: Settings) -> None:
        """Run the command with ``settings`` (a command that adjusts them, such as ``record``)."""
        self._settings = settings

    def database_url(self, explicit: str | None = None) -> str | None:
        """
        The routing database's URL: ``explicit`` (a ``--database-url``), else
        ``MDGATE_DATABASE_URL``, else ``[database] url`` of the settings; ``None`` when none is set.

        Raises:
            ConfigError: the settings had to be read and are wrong.
        """
        if explicit:
            return explicit
        if self.environ.get("MDGATE_DATABASE_URL"):
            return self.environ["MDGATE_DATABASE_URL"]
        url = self.settings.database.url
        return url.reveal() if url is not None else None

    def store_instrument_mappings(
        self, mappings: Sequence[InstrumentMapping], *, database_url: str | None = None
    ) -> int:
        """
        Create instruments as needed and upsert their provider codes in the routing database.

        Args:
            mappings: e.g. ``InstrumentMapping("NSE:RELIANCE", "dhan", "NSE_EQ:2885")``;
                later duplicates win.
            database_url: the database (default: :meth:`database_url`).

        Returns:
            The number of mappings now stored.

        Raises:
            click.UsageError: no database is configured (exit code 2).
            MdgateError: the database cannot be reached, or a provider or
                exchange is unknown to it (nothing is stored; exit code 1).
        """
        dsn = self.database_url(database_url)
        if not dsn:
            raise click.UsageError(NO_DATABASE)
        from mdgate.plugins.pg_routes.instruments import upsert_instrument_mappings

        return upsert_instrument_mappings(dsn, mappings)

    @staticmethod
    def print_json(document: object) -> None:
        """Print ``document`` as one JSON document on stdout (what ``--json`` prints)."""
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")

    # -- mdgate's own commands ------------------------------------------------------------

    def _configure_logging(self, settings: LoggingSettings | None = None) -> None:
        """
        Configure logging for this invocation: ``settings`` (``mdgate run``),
        else warnings only, to stderr. Called at most once per invocation.

        Raises:
            RuntimeError: logging was configured already (a bug).
        """
        if self._logging is not None:
            raise RuntimeError(f"logging configured twice (first for {self._logging})")
        from mdgate._config import LoggingSettings
        from mdgate._logging import configure_logging

        self._logging = "run" if settings is not None else "commands"
        if settings is None:
            # commands other than `run` log warnings only, to stderr (never mixed with their output)
            settings = LoggingSettings(level="warning", format="console")
        configure_logging(settings, stream=sys.stderr)

    def ensure_logging(self) -> None:
        """Configure warnings-only logging unless logging is configured already (``run``: its own)."""
        if self._logging is None:
            self._configure_logging()


#: Decorator handing a command's function the :class:`CommandContext` as first argument.
pass_context = click.make_pass_decorator(CommandContext, ensure=True)
