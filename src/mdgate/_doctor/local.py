"""
The checks of ``mdgate doctor`` that look at this machine only: the
configuration, the plugins, the providers' credentials, the routes of the
``always`` instruments, the listen port.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mdgate._config import DEFAULT_CONFIG_FILE, Settings
from mdgate._doctor.result import CheckResult, failed, passed
from mdgate._errors import ConfigError, InstrumentError, MdgateError, NoRouteError, ProviderDisabled
from mdgate._providers.faults import secret_values
from mdgate._routing.router import ProviderConfigs, Router
from mdgate._routing.table import empty_hint

if TYPE_CHECKING:
    from mdgate._providers.registry import PluginInfo, Registry
    from mdgate._routing.table import RouteTable

__all__ = [
    "check_config", "check_credentials", "check_plugins", "check_port", "check_routes", "config_source",
    "healthz", "parse_configs",
]

#: Variables read besides ``MDGATE_<SECTION>__<KEY>``.
_URL_VARIABLES: Final = ("MDGATE_DATABASE_URL", "MDGATE_REDIS_URL")


def config_source(config_path: str | None) -> str:
    """Where the settings are read from: ``--config``, else ``./mdgate.toml`` when present."""
    if config_path is not None:
        return config_path
    if Path(DEFAULT_CONFIG_FILE).is_file():
        return DEFAULT_CONFIG_FILE
    return "built-in defaults (no --config, no ./mdgate.toml)"


def _env_names(environ: Mapping[str, str]) -> list[str]:
    return sorted(
        name for name, value in environ.items()
        if value and name.startswith("MDGATE_") and ("__" in name or name in _URL_VARIABLES)
    )


def check_config(
    load: Callable[[], Settings], config_path: str | None, environ: Mapping[str, str],
) -> tuple[CheckResult, Settings | None]:
    """
    Load the settings with ``load`` (file and environment).

    Returns:
        The result (the source used, or the key and message of the problem)
        and the settings (``None`` when they did not load).
    """
    where = config_source(config_path)
    names = _env_names(environ)
    try:
        settings = load()
    except ConfigError as exc:
        detail = f"{where}: {exc}"
        if exc.key == "--config":
            return failed("config", detail, "pass an existing TOML file with --config PATH"), None
        return failed("config", detail, f"fix {exc.key} (docs/configuration.md)"), None
    env = f"; environment: {', '.join(names)}" if names else ""
    return passed("config", f"{settings.source or where}{env}"), settings


# -- plugins ---------------------------------------------------------------------------


def _origin(info: PluginInfo) -> str:
    where = "built in" if info.builtin else " ".join(filter(None, [info.distribution, info.version]))
    return f"{where or info.module}, API {info.api or '?'}"


def _plugin_summary(reg: Registry) -> str:
    loaded = [i for i in reg.plugins if i.status == "loaded"]
    providers = [f"{p} ({_origin(i)})" for i in loaded for p in i.providers]
    stores = [f"{i.name} ({_origin(i)})" for i in loaded if "mdgate_store" in i.hooks]
    sources = [f"{i.name} ({_origin(i)})" for i in loaded if "mdgate_route_source" in i.hooks]
    parts = [
        f"providers: {', '.join(providers) or 'none'}",
        f"stores: {', '.join(stores) or 'none'}",
        f"route sources: {', '.join(sources) or 'none'}",
    ]
    off = [f"{i.name} ({i.status})" for i in reg.plugins if i.status in ("blocked", "not allowed")]
    if off:
        parts.append(f"not loaded: {', '.join(off)}")
    warnings = [f"{i.name}: {w}" for i in loaded for w in i.warnings]
    if warnings:
        parts.append(f"warnings: {'; '.join(warnings)}")
    return "; ".join(parts)


def check_plugins(reg: Registry) -> CheckResult:
    """Every plugin loaded: the providers, stores and route sources found, or each failed one and why."""
    broken = [i.error or f"plugin {i.name!r} failed" for i in reg.plugins if i.status == "failed"]
    discovery = reg.faults.status().get("entry_points")
    if discovery is not None:
        broken.append(f"plugin discovery failed: {discovery['last_error']}")
    summary = _plugin_summary(reg)
    if broken:
        return failed(
            "plugins", f"{len(broken)} failed: {'; '.join(broken)}; loaded: {summary}",
            "fix or uninstall the plugin (`mdgate uninstall DISTRIBUTION`), "
            "or leave it out with MDGATE_DISABLE_PLUGINS=NAME",
        )
    return passed("plugins", summary)


# -- credentials ---------------------------------------------------------------------


def parse_configs(reg: Registry, settings: Settings) -> tuple[ProviderConfigs, dict[str, str], list[str]]:
    """
    Run every provider's ``parse_config``, one by one (a problem in one does not hide another's).

    Returns:
        The configurations (or why each provider is disabled), the problems
        by provider (a bad table, a plugin fault: each is a failure), and the
        secret values the configurations hold (to be masked in any output).
    """
    configs: dict[str, object] = {}
    disabled: dict[str, str] = {}
    problems: dict[str, str] = {}
    secrets: list[str] = []
    for name, hooks in reg.providers.items():
        try:
            config = hooks.spec.parse_config(settings.providers.get(name, {}), settings.environ)
        except ProviderDisabled as exc:
            disabled[name] = exc.message
            continue
        except ConfigError as exc:
            disabled[name] = problems[name] = str(exc)
            continue
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin bug: this provider only
            why = f"plugin {hooks.plugin!r} faulted in parse_config: {reg.faults.describe(exc)}"
            disabled[name] = problems[name] = why
            continue
        configs[name] = config
        secrets.extend(secret_values(config))
    return ProviderConfigs(configs, disabled), problems, secrets


def _wanted(reg: Registry, settings: Settings, name: str) -> bool:
    """The operator set the provider up: a ``[providers.NAME]`` table or one of its variables."""
    spec = reg.providers[name].spec
    return name in settings.providers or any(settings.environ.get(var) for var in spec.secrets)


def check_credentials(
    reg: Registry, settings: Settings, configs: ProviderConfigs, problems: Mapping[str, str],
) -> CheckResult:
    """
    Each provider the operator set up has what it needs to run (its
    credentials present, its table valid). A provider nobody set up is
    listed as off, not failed. Never shows a value, only variable names.
    """
    found: list[str] = []
    bad: list[str] = []
    for name, hooks in reg.providers.items():
        spec = hooks.spec
        if name in problems:
            bad.append(f"{name}: {problems[name]}")
        elif name in configs.disabled:
            if _wanted(reg, settings, name):
                bad.append(f"{name}: {configs.disabled[name]}")
            else:
                found.append(f"{name}: off (not configured)")
        elif not spec.secrets:
            found.append(f"{name}: ready (declares no credentials)")
        else:
            env = [var for var in spec.secrets if settings.environ.get(var)]
            origin = f"environment: {', '.join(env)}" if env else f"[providers.{name}]"
            found.append(f"{name}: credentials present ({origin})")
    if bad:
        return failed(
            "credentials", "; ".join(bad + found),
            "set the missing credentials (docs/configuration.md), or remove the provider's "
            "settings to leave it off",
        )
    return passed("credentials", "; ".join(found) or "no provider installed")


# -- routes ------------------------------------------------------------------------------


def _resolve(router: Router, configs: ProviderConfigs, name: str) -> tuple[str | None, str | None]:
    """``(provider, None)`` serving ``name`` now, or ``(None, why not)``."""
    try:
        routes = router.resolve(name)
    except (NoRouteError, InstrumentError) as exc:
        return None, str(exc)
    live = [r for r in routes if r.provider not in configs.disabled]
    if live:
        return live[0].provider, None
    off = ", ".join(f"{r.provider} ({configs.disabled[r.provider]})" for r in routes)
    return None, f"every candidate is disabled: {off}"


def check_routes(
    reg: Registry, settings: Settings, configs: ProviderConfigs, table: RouteTable,
) -> CheckResult:
    """Every ``[subscriptions] always`` instrument resolves to an enabled provider in ``table``."""
    if not table.exchanges:
        return failed("routes", f"the routing table ({table.source}) is empty", empty_hint(table.source))
    router = Router(reg, configs, table)
    served: list[str] = []
    missing: list[str] = []
    for name in settings.subscriptions.always:
        provider, why = _resolve(router, configs, name)
        if provider is None:
            missing.append(f"{name} ({why})")
        else:
            served.append(f"{name} -> {provider}")
    always = settings.subscriptions.always
    if missing:
        where = ("`mdgate routes set` / `mdgate instruments add`" if table.source == "postgresql"
                 else "[exchanges] / [instruments] in the config file")
        return failed(
            "routes", f"{len(missing)} of {len(always)} always instrument(s) have no route "
            f"({table.source}): {'; '.join(missing)}",
            f"add a route ({where}), enable the provider, or fix the name in [subscriptions] always",
        )
    if not always:
        return passed("routes", f"no [subscriptions] always instruments; {len(table.exchanges)} exchange(s) "
                                f"routed ({table.source})")
    return passed("routes", f"{len(always)} always instrument(s) resolve ({table.source}): "
                            f"{', '.join(served)}")


# -- port ------------------------------------------------------------------------------------


def _local(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def healthz(host: str, port: int, timeout: float) -> tuple[int, str] | None:
    """``GET /healthz`` at ``host:port``: ``(status, body)``, or ``None`` when nothing answers HTTP."""
    import httpx

    try:
        resp = httpx.get(f"http://{_local(host)}:{port}/healthz", timeout=timeout)
    except httpx.HTTPError:
        return None
    return resp.status_code, resp.text[:200]


def check_port(
    host: str, port: int, timeout: float,
    probe: Callable[[str, int, float], tuple[int, str] | None] = healthz,
) -> CheckResult:
    """
    The listen address is free, or a gateway answers there (``GET /healthz`` is ``ok``).

    Args:
        host, port: ``[server]`` host and port.
        timeout: seconds allowed for the ``/healthz`` request.
        probe: the request (tests may replace it).
    """
    from mdgate._cli.frontdoor import ListenError, check_listen

    where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    try:
        check_listen(host, port)
    except ConfigError as exc:
        return failed("port", f"{where}: {exc}", f"fix {exc.key} (an address of this machine)")
    except ListenError as exc:
        answer = probe(host, port, timeout)
        if answer is not None and answer[0] == 200 and answer[1].strip() == "ok":
            return passed("port", f"{where}: a gateway is running there (/healthz answered ok)")
        seen = "no HTTP answer" if answer is None else f"/healthz answered HTTP {answer[0]}"
        return failed("port", f"{where}: {exc} ({seen}: not an mdgate gateway)",
                      "stop that process, or choose another [server] port (or `mdgate run --port`)")
    except MdgateError as exc:
        return failed("port", f"{where}: {exc}", None)
    return passed("port", f"{where} is free")
