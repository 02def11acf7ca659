"""
The click command line in-process: logging configured once, the one exit-code
table for built-in and plugin commands, plugin commands through the public
context, faulty plugins contained.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.abc
import click
import pytest

import mdgate._app
import mdgate._lazylog as _lazylog
import mdgate._logging
import mdgate._providers.registry
from mdgate import CommandContext, ConfigError, MdgateError, hookimpl, pass_context
from mdgate._cli import main
from mdgate._cli.common import _REGISTRIES, registry
from mdgate._cli.root import build_cli, invoke
from mdgate._config import LoggingSettings
from mdgate._providers.registry import load_registry


@pytest.fixture
def logging_calls(monkeypatch: pytest.MonkeyPatch) -> list[LoggingSettings]:
    """Every configure_logging call (the real one is not made: the test process keeps its logging)."""
    calls: list[LoggingSettings] = []
    monkeypatch.setattr(
        mdgate._logging, "configure_logging", lambda settings, stream=None: calls.append(settings)
    )
    return calls


class FakeGateway:
    #: Whether the cyclic garbage collector ran: while it was built, once it served.
    collector: ClassVar[dict[str, bool]] = {}

    def __init__(self, settings: Any, registry: Any = None, *, config_path: str | None = None,
                 role: str = "all") -> None:
        self.settings = settings
        # as the real one: the plugins it is handed, else loaded again
        self.registry = registry or mdgate._providers.registry.load_registry(settings.environ)
        FakeGateway.collector["built"] = gc.isenabled()

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started(0)
        await anyio.sleep(0.01)  # serving
        FakeGateway.collector["serving"] = gc.isenabled()

    def reload(self) -> None: ...

    def stop(self) -> None: ...


def test_run_configures_logging_once_from_the_config(
    logging_calls: list[LoggingSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(mdgate._app, "Gateway", FakeGateway)
    config = tmp_path / "gw.toml"
    config.write_text('[logging]\nlevel = "debug"\nformat = "json"\n')
    assert main(["run", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]) == 0
    assert logging_calls == [LoggingSettings(level="debug", format="json")]


def test_run_loads_the_plugins_once(logging_calls: list[LoggingSettings], monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    """The gateway is handed the plugins the command line loaded (for its commands), not left to load them."""
    loads: list[object] = []
    real = mdgate._providers.registry.load_registry

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(mdgate._providers.registry, "load_registry", counted)
    monkeypatch.setattr(mdgate._app, "Gateway", FakeGateway)
    config = tmp_path / "gw.toml"
    config.write_text("")
    assert main(["run", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]) == 0
    assert len(loads) == 1


def test_run_starts_without_the_cyclic_collector_and_serves_with_it(
    logging_calls: list[LoggingSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(mdgate._app, "Gateway", FakeGateway)
    FakeGateway.collector.clear()
    config = tmp_path / "gw.toml"
    config.write_text("")
    assert gc.isenabled()
    assert main(["run", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]) == 0
    assert FakeGateway.collector == {"built": False, "serving": True}
    assert gc.isenabled()


@pytest.mark.parametrize(("argv", "configured"), [
    (["plugins"], True), (["plugins", "--json"], True), (["routes"], True),
    (["--help"], False), ([], False),  # nothing to log: no logging set up (structlog not even imported)
])
def test_other_commands_configure_warnings_only_logging_once(
    logging_calls: list[LoggingSettings], argv: list[str], configured: bool, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./mdgate.toml
    monkeypatch.delenv("MDGATE_DATABASE_URL", raising=False)
    monkeypatch.setattr(_lazylog, "_used", False)  # as in a fresh process
    assert main(argv) == 0
    assert logging_calls == ([LoggingSettings(level="warning", format="console")] if configured else [])


def test_help_sets_up_logging_before_a_plugin_fault_is_logged(
    logging_calls: list[LoggingSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_lazylog, "_used", False)
    seen: list[int] = []
    real = _lazylog.LazyLogger.__getattr__

    def spy(self: _lazylog.LazyLogger, attr: str) -> object:
        method = real(self, attr)
        seen.append(len(logging_calls))  # set-ups run by the time the line is written
        return method

    monkeypatch.setattr(_lazylog.LazyLogger, "__getattr__", spy)
    from mdgate._providers.faults import log

    monkeypatch.setattr(log, "_log", None)
    from mdgate._cli.common import registry

    registry(CommandContext())  # what --help does to list the plugins' commands
    log.warning("plugin_fault_example")
    assert seen[0] == 1 and logging_calls == [LoggingSettings(level="warning", format="console")]


def test_configuring_logging_twice_is_refused() -> None:
    obj = CommandContext()
    obj._logging = "commands"
    obj.ensure_logging()  # idempotent
    with pytest.raises(RuntimeError, match="twice"):
        obj._configure_logging(LoggingSettings())


# -- plugin commands -----------------------------------------------------------------


class AcmeCommands:
    """A third-party plugin's commands, written against the public API only."""

    @hookimpl
    def mdgate_add_commands(self, cli: click.Group) -> None:
        @cli.group("acme")
        def acme() -> None:
            """Acme tools."""

        @acme.command("port")
        @pass_context
        def port(obj: CommandContext) -> None:
            click.echo(obj.settings.server.port)

        @acme.command("fail")
        @click.argument("kind")
        def fail(kind: str) -> int:
            if kind == "usage":
                raise click.UsageError("acme needs more")
            if kind == "config":
                raise ConfigError("providers.acme.url", "missing")
            if kind == "runtime":
                raise MdgateError("acme is down\nsecond line")
            if kind == "bug":
                raise KeyError("bug")
            return 3


class BrokenCommands:
    @hookimpl
    def mdgate_add_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command("half"))
        raise RuntimeError("commands bug")


def acme_context(*plugins: tuple[str, object]) -> CommandContext:
    obj = CommandContext({})
    _REGISTRIES[obj] = load_registry({"MDGATE_LOAD_PLUGINS": ""}, extra=list(plugins))
    obj._logging = "test"  # the test process keeps its logging
    return obj


def test_plugin_command_reads_settings_of_config_given_after_it(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[server]\nport = 9911\n")
    obj = acme_context(("acme", AcmeCommands()))
    assert invoke(build_cli(), ["acme", "port", "--config", str(config)], obj) == 0
    assert capsys.readouterr().out == "9911\n"
    obj = acme_context(("acme", AcmeCommands()))
    assert invoke(build_cli(), ["-c", str(config), "acme", "port"], obj) == 0
    assert capsys.readouterr().out == "9911\n"


@pytest.mark.parametrize(("kind", "code", "line"), [
    ("usage", 2, "mdgate: error: acme needs more\n"),
    ("config", 2, "mdgate: error: providers.acme.url: missing\n"),
    ("runtime", 1, "mdgate: error: acme is down; second line\n"),
    ("other", 3, ""),
])
def test_plugin_command_failures_use_the_one_exit_code_table(kind: str, code: int, line: str,
                                                            capsys: Any) -> None:
    assert invoke(build_cli(), ["acme", "fail", kind], acme_context(("acme", AcmeCommands()))) == code
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", line)


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(KeyError):
        invoke(build_cli(), ["acme", "fail", "bug"], acme_context(("acme", AcmeCommands())))


def test_usage_error_of_plugin_command_is_one_line_exit_2(capsys: Any) -> None:
    assert invoke(build_cli(), ["acme", "fail"], acme_context(("acme", AcmeCommands()))) == 2
    assert capsys.readouterr().err == (
        "mdgate: error: Missing argument 'KIND'. (see `mdgate acme fail --help`)\n"
    )


def test_faulty_add_commands_is_contained(capsys: Any) -> None:
    obj = acme_context(("broken", BrokenCommands()), ("acme", AcmeCommands()))
    assert invoke(build_cli(), ["half"], obj) == 2  # what it added before failing was taken back
    assert "No such command 'half'" in capsys.readouterr().err
    assert registry(obj).faults.status()["broken"]["by_hook"] == {"mdgate_add_commands": 1}
    assert invoke(build_cli(), ["acme", "fail", "x"], obj) == 3  # the others work


def test_a_plugin_cannot_replace_a_builtin_command(capsys: Any) -> None:
    class Hijack:
        @hookimpl
        def mdgate_add_commands(self, cli: click.Group) -> None:
            cli.add_command(click.Command("plugins", callback=lambda: 7))

    cli, obj = build_cli(), acme_context(("hijack", Hijack()))
    assert invoke(cli, ["--help"], obj) == 0  # the plugins' commands are added to this group now
    capsys.readouterr()
    assert invoke(cli, ["plugins", "--json"], obj) == 0
    assert '"name": "hijack"' in capsys.readouterr().out


def test_interrupt_is_130(capsys: Any) -> None:
    class Interrupt:
        @hookimpl
        def mdgate_add_commands(self, cli: click.Group) -> None:
            @cli.command("wait")
            def wait() -> None:
                raise KeyboardInterrupt

    assert invoke(build_cli(), ["wait"], acme_context(("interrupt", Interrupt()))) == 130
    # click ends the ^C line first (a newline), then the one error line
    assert capsys.readouterr().err.lstrip("\n") == "mdgate: interrupted\n"


def test_the_documented_plugin_command_example_works(tmp_path: Path, capsys: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/cli.md", "exec"), namespace)
    plugin = type("Acme", (), {"mdgate_add_commands": staticmethod(namespace["mdgate_add_commands"])})()
    monkeypatch.chdir(tmp_path)  # no ./mdgate.toml
    empty, codes = tmp_path / "empty.csv", tmp_path / "codes.csv"
    empty.write_text("")
    codes.write_text("NSE:ACME,AC1\n")
    assert invoke(build_cli(), ["acme", "import-codes", str(empty)], acme_context(("acme", plugin))) == 1
    assert capsys.readouterr().err == f"mdgate: error: {empty} has no codes\n"
    assert invoke(build_cli(), ["acme", "import-codes", str(codes)], acme_context(("acme", plugin))) == 2
    assert capsys.readouterr().err.startswith("mdgate: error: no database configured")


def test_builtin_commands_table_agrees_with_the_commands() -> None:
    """The short help ``mdgate --help`` shows without importing a command is the command's own."""
    import importlib

    from mdgate._cli.root import BUILTINS, build_cli

    cli = build_cli()
    for name, (module, attr, short) in BUILTINS.items():
        command = getattr(importlib.import_module(module), attr)
        assert (command.name, command.short_help) == (name, short)
        assert cli.get_command(click.Context(cli), name) is command


def test_help_imports_no_command_module() -> None:
    import subprocess
    import sys

    code = ("import sys, io, contextlib; from mdgate._cli.root import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out: main(['--help'])\n"
            "assert 'new-provider' in out.getvalue() and 'run the gateway' in out.getvalue()\n"
            "print(' '.join(m for m in sys.modules if m.startswith('mdgate._cli.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = done.stdout.split()
    names = ("run", "export", "demo", "doctor", "inspect", "recording", "scaffold", "install", "backfill")
    commands = {f"mdgate._cli.{m}" for m in names}
    assert not commands & set(loaded), loaded
