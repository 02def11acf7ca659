"""
``mdgate doctor``: checks of an installation, each one line, in this order:

1. ``config``: the configuration loads (file and environment);
2. ``plugins``: every plugin loads (providers, stores, route sources found);
3. ``credentials``: every provider set up has its credentials (names only, never values);
4. ``redis``: when configured, reachable and writable;
5. ``postgres``: when configured, reachable, schema current, routes readable;
6. ``routes``: every ``[subscriptions] always`` instrument resolves to an enabled provider;
7. ``port``: the listen address is free, or a gateway answers there;
8. ``clock``: the local clock against a provider's tick timestamps.

:func:`run_checks` yields :class:`CheckResult` objects one by one (the
command prints each as it comes); the checks themselves are functions of
what they are handed (settings, registry, timeouts) in
:mod:`~mdgate._doctor.local`, :mod:`~mdgate._doctor.services` and
:mod:`~mdgate._doctor.clock`. Every text is scrubbed of every secret value
known (provider variables, tokens, URL passwords, parsed credentials).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from mdgate._doctor.result import NOT_RUN, CheckResult, skipped

if TYPE_CHECKING:
    from mdgate._config import Settings
    from mdgate._providers.registry import Registry

__all__ = ["CHECKS", "CheckResult", "run_checks"]

#: The checks, in the order they run and print.
CHECKS: Final = ("config", "plugins", "credentials", "redis", "postgres", "routes", "port", "clock")


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _environ_secrets(reg: Registry, environ: Mapping[str, str]) -> set[str]:
    """Secret values known from the environment alone."""
    names = {var for hooks in reg.providers.values() for var in hooks.spec.secrets} | {"MDGATE_TOKEN"}
    found = {environ[n] for n in names if environ.get(n)}
    for var in ("MDGATE_REDIS_URL", "MDGATE_DATABASE_URL"):
        password = _password(environ.get(var, ""))
        if password:
            found.add(password)
    return found


def _settings_secrets(settings: Settings) -> set[str]:
    found = {token.reveal() for token in settings.server.tokens}
    for url in (settings.redis.url, settings.database.url):
        password = _password(url.reveal()) if url is not None else None
        if password:
            found.add(password)
    return found


def run_checks(
    load: Callable[[], Settings], reg: Registry, config_path: str | None, environ: Mapping[str, str],
    timeout: float,
) -> Iterator[CheckResult]:
    """
    Run every check, yielding each result as it is known (in :data:`CHECKS` order).

    Args:
        load: loads the settings (raises ``ConfigError``).
        reg: the loaded plugins.
        config_path: ``--config``, for saying where the settings came from.
        environ: the environment the settings are read from.
        timeout: seconds allowed to each network check (and the clock check's run).
    """
    from mdgate._doctor import local, services
    from mdgate._doctor.clock import check_clock

    hidden = _environ_secrets(reg, environ)
    result, settings = local.check_config(load, config_path, environ)
    if settings is not None:
        hidden |= _settings_secrets(settings)
    yield result.scrubbed(hidden)
    yield local.check_plugins(reg).scrubbed(hidden)
    if settings is None:
        for name in CHECKS[2:]:
            yield skipped(name, NOT_RUN)
        return
    configs, problems, secrets = local.parse_configs(reg, settings)
    hidden |= set(secrets)
    yield local.check_credentials(reg, settings, configs, problems).scrubbed(hidden)
    yield services.check_redis(settings, timeout).scrubbed(hidden)
    result, table = services.check_postgres(settings, timeout)
    yield result.scrubbed(hidden)
    if table is None and settings.database.url is None:
        from mdgate._routing.router import config_table

        table = config_table(reg, settings)
    if table is None:
        yield skipped("routes", "not run: the routing database cannot be read (see postgres)")
    else:
        yield local.check_routes(reg, settings, configs, table).scrubbed(hidden)
    yield local.check_port(settings.server.host, settings.server.port, timeout).scrubbed(hidden)
    if table is None:
        yield skipped("clock", "not run: no routing table to pick an instrument (see postgres)")
    else:
        yield check_clock(reg, settings, configs, table, timeout).scrubbed(hidden)
