"""The CLI front door's pieces: the listen check, the error dug out of task groups, --config anywhere."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from mdgate._cli.context import CommandContext, pass_context
from mdgate._cli.frontdoor import ListenError, check_listen, one_error, run_serving, use_uvloop
from mdgate._cli.root import adopt, build_cli, invoke
from mdgate._errors import ConfigError, MdgateError


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_check_listen(taken_port: int) -> None:
    check_listen("127.0.0.1", 0)  # free: nothing raised, nothing left bound
    with pytest.raises(ListenError, match=f"127.0.0.1:{taken_port}: address already in use"):
        check_listen("127.0.0.1", taken_port)
    with pytest.raises(ConfigError, match="not an address of this machine") as info:
        check_listen("192.0.2.1", 0)
    assert info.value.key == "server.host"
    with pytest.raises(ConfigError, match=r"cannot resolve 'nosuch\.invalid'"):
        check_listen("nosuch.invalid", 0)


def test_one_error_finds_the_cause_in_nested_groups(taken_port: int) -> None:
    with socket.socket() as sock, pytest.raises(OSError, match="in use") as bind_failure:
        sock.bind(("127.0.0.1", taken_port))
    assert bind_failure.value.errno == errno.EADDRINUSE
    nested = BaseExceptionGroup("outer", [
        ExceptionGroup("inner", [RuntimeError("cancelled sibling"), bind_failure.value]),
    ])
    err = one_error(nested, "127.0.0.1", taken_port)
    assert isinstance(err, ListenError) and "already in use" in str(err)
    # a ConfigError anywhere wins (it says what to fix)
    config = ConfigError("database", "schema is behind")
    group = ExceptionGroup("g", [bind_failure.value, ExceptionGroup("h", [config])])
    assert one_error(group, "h", 1) is config
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert isinstance(one_error(ExceptionGroup("g", [gai]), "bad.invalid", 1), ConfigError)
    other = one_error(OSError(errno.EMFILE, "Too many open files"), "h", 1)
    assert isinstance(other, MdgateError) and str(other) == "cannot start: too many open files"
    # anything else is a bug: shown with its traceback, not hidden behind one line
    assert one_error(ExceptionGroup("g", [KeyError("x")]), "h", 1) is None


def parsed_config(argv: list[str], cli: click.Group | None = None) -> str | None:
    """Parse ``argv`` down to its last sub-command (no command runs); the ``--config`` that won."""
    obj = CommandContext()
    cli = cli or build_cli()
    ctx = cli.make_context("mdgate", list(argv), obj=obj)
    while isinstance(ctx.command, click.Group) and ctx._protected_args + ctx.args:
        name, command, rest = ctx.command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert command is not None and name is not None
        ctx = command.make_context(name, rest, parent=ctx)
    return obj.config_path


def test_config_option_is_accepted_after_any_subcommand() -> None:
    # with the plugins' commands (db, routes, dhan...)
    assert parsed_config(["run", "--config", "a.toml"]) == "a.toml"
    assert parsed_config(["--config", "a.toml", "run"]) == "a.toml"
    assert parsed_config(["-c", "a.toml", "status", "-c", "b.toml"]) == "b.toml"
    assert parsed_config(["status"]) is None
    assert parsed_config(["db", "status", "--config", "c.toml"]) == "c.toml"
    assert parsed_config(["tail", "NSE:X", "--config", "d.toml"]) == "d.toml"
    assert parsed_config(["history", "NSE:X", "-c", "e.toml"]) == "e.toml"


def test_add_config_option_keeps_a_commands_own_c_flag() -> None:
    seen: dict[str, object] = {}

    @click.group()
    def cli() -> None:
        pass

    @cli.command("own")
    @click.option("-c", "count", type=int)
    @pass_context
    def own(obj: CommandContext, count: int) -> None:
        seen.update(count=count, config=obj.config_path)

    adopt(cli)
    assert invoke(cli, ["own", "-c", "3", "--config", "x.toml"]) == 0
    assert (seen["count"], seen["config"]) == (3, "x.toml")


# -- the event loop ([runtime] event_loop) --------------------------------------------------


def _loop_module(event_loop: str) -> str:
    async def main() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__

    return run_serving(main, "127.0.0.1", 0, event_loop)


def test_auto_runs_on_uvloop_when_installed_and_asyncio_on_asyncio() -> None:
    import uvloop  # noqa: F401  # in the dev extra: the test venv has it
    assert _loop_module("auto").startswith("uvloop")
    assert _loop_module("uvloop").startswith("uvloop")
    assert _loop_module("asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real(name, *a))
    assert not use_uvloop("auto") and not use_uvloop("asyncio")
    with pytest.raises(MdgateError, match=r"uvloop is not installed: pip install 'mdgate\[speed\]'"):
        use_uvloop("uvloop")
    assert _loop_module("auto").startswith("asyncio")


def test_event_loop_must_be_one_of_three(tmp_path: Path) -> None:
    from mdgate._config import load_settings

    path = tmp_path / "m.toml"
    path.write_text('[runtime]\nevent_loop = "trio"\n')
    with pytest.raises(ConfigError, match=r"runtime\.event_loop.*auto, asyncio, uvloop"):
        load_settings(path, {})
    path.write_text('[runtime]\nevent_loop = "asyncio"\n')
    assert load_settings(path, {}).runtime.event_loop == "asyncio"
