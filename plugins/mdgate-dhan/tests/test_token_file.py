"""
The access token from a file (``access_token_file`` / ``DHAN_ACCESS_TOKEN_FILE``):
precedence, bounded and quiet errors, re-reading, and hints that say what works.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from mdgate._config import load_settings
from mdgate._errors import AuthenticationError, ConfigError
from mdgate.testing import running_gateway
from mdgate_dhan.backfill import rest_error
from mdgate_dhan.config import MAX_TOKEN_FILE_BYTES, SETTINGS, parse_config
from mdgate_dhan.hints import TOKEN_HINT
from mdgate_dhan.protocol import DISCONNECT_REASONS, disconnect_error

CLIENT = "1100223344"
FILE_TOKEN = "eyJ.FILE-TOKEN.sig"
ENV_FILE_TOKEN = "eyJ.ENV-FILE-TOKEN.sig"
ENV_TOKEN = "eyJ.ENV-TOKEN.sig"
TABLE_TOKEN = "eyJ.TABLE-TOKEN.sig"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "dhan.token"
    path.write_text(FILE_TOKEN + "\n")  # a trailing newline, as `echo` writes it
    return path


def test_token_from_access_token_file(token_file: Path) -> None:
    cfg = parse_config({"access_token_file": str(token_file)}, {"DHAN_CLIENT_ID": CLIENT})
    assert cfg.access_token.reveal() == FILE_TOKEN
    assert cfg.access_token_file == str(token_file)
    assert FILE_TOKEN not in repr(cfg) and CLIENT not in repr(cfg)
    assert "access_token_file" in SETTINGS


def test_token_file_wins_over_token_values(tmp_path: Path, token_file: Path) -> None:
    env_file = tmp_path / "env.token"
    env_file.write_text(ENV_FILE_TOKEN)
    env = {"DHAN_CLIENT_ID": CLIENT, "DHAN_ACCESS_TOKEN": ENV_TOKEN}
    # a file in the table wins over DHAN_ACCESS_TOKEN (which cannot change while mdgate runs)
    assert parse_config({"access_token_file": str(token_file)}, env).access_token.reveal() == FILE_TOKEN
    # DHAN_ACCESS_TOKEN_FILE wins over the table's file and over every value
    env_with_file = {**env, "DHAN_ACCESS_TOKEN_FILE": str(env_file)}
    cfg = parse_config({"access_token_file": str(token_file)}, env_with_file)
    assert (cfg.access_token.reveal(), cfg.access_token_file) == (ENV_FILE_TOKEN, str(env_file))
    cfg = parse_config({"access_token": TABLE_TOKEN}, env_with_file)
    assert cfg.access_token.reveal() == ENV_FILE_TOKEN
    # without files: DHAN_ACCESS_TOKEN wins over the table's value, as before
    cfg = parse_config({"access_token": TABLE_TOKEN}, env)
    assert (cfg.access_token.reveal(), cfg.access_token_file) == (ENV_TOKEN, None)


def test_token_and_token_file_in_one_table_is_an_error(token_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"access_token": TABLE_TOKEN, "access_token_file": str(token_file)}, {})
    assert info.value.key == "providers.dhan.access_token_file"
    assert TABLE_TOKEN not in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing.token", "not found"),
        (lambda d: d, "not a regular file"),
        (lambda d: _write(d / "empty.token", b"  \n"), "is empty"),
        (lambda d: _write(d / "two.token", b"eyJ.SECRET-ONE.x\neyJ.SECRET-TWO.y\n"), "more than one word"),
        (lambda d: _write(d / "bin.token", b"eyJ.SECRET\xff\xfe"), "not UTF-8"),
        (lambda d: _write(d / "big.token", b"S" * (MAX_TOKEN_FILE_BYTES + 1)), "larger than"),
    ],
)
def test_bad_token_file_is_a_config_error_without_its_content(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    for table, env, key in (
        ({"access_token_file": str(path)}, {}, "providers.dhan.access_token_file"),
        ({}, {"DHAN_ACCESS_TOKEN_FILE": str(path)}, "DHAN_ACCESS_TOKEN_FILE"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(table, {"DHAN_CLIENT_ID": CLIENT, **env})
        assert info.value.key == key
        assert reason in info.value.message
        assert "SECRET" not in str(info.value) and "SSSS" not in str(info.value)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(ConfigError, match="not a regular file"):
        parse_config({"access_token_file": str(fifo)}, {"DHAN_CLIENT_ID": CLIENT})


async def test_reload_rereads_the_token_file(tmp_path: Path, token_file: Path) -> None:
    cfg = tmp_path / "mdgate.toml"
    cfg.write_text(f'[providers.dhan]\nclient_id = "{CLIENT}"\naccess_token_file = "{token_file}"\n')
    environ = {"MDGATE_LOAD_PLUGINS": "dhan"}
    async with running_gateway(load_settings(cfg, environ)) as gw:
        gw.gateway.config_path = str(cfg)
        session = gw.gateway.sessions["dhan"]
        assert session.config.access_token.reveal() == FILE_TOKEN
        await anyio.Path(token_file).write_text("eyJ.ROTATED.sig\n")
        with pytest.MonkeyPatch.context() as mp:  # reload reads os.environ: no DHAN_* there
            for var in ("DHAN_ACCESS_TOKEN", "DHAN_ACCESS_TOKEN_FILE", "DHAN_CLIENT_ID"):
                mp.delenv(var, raising=False)
            assert gw.gateway.reload()
            assert session.config.access_token.reveal() == "eyJ.ROTATED.sig"
            # a half-written file: the reload is refused, the old token kept
            await anyio.Path(token_file).write_text("")
            assert not gw.gateway.reload()
        assert session.config.access_token.reveal() == "eyJ.ROTATED.sig"


# -- hints: only what works -----------------------------------------------------------


def _hints() -> dict[str, str]:
    hints: dict[str, str] = {}
    for reason in DISCONNECT_REASONS:
        err = disconnect_error(reason)
        if isinstance(err, AuthenticationError) and err.hint:
            hints[f"feed {reason}"] = err.hint
    for status, body in ((401, {"errorCode": "DH-901"}), (403, None), (400, {"errorCode": "DH-902"})):
        err = rest_error(status, body)
        if isinstance(err, AuthenticationError) and err.hint:
            hints[f"rest {status}"] = err.hint
    return hints


def test_hints_say_what_works() -> None:
    hints = _hints()
    assert {"feed 806", "feed 807", "feed 808", "feed 809", "feed 810", "rest 401", "rest 403"} <= set(hints)
    for where, hint in hints.items():
        # a variable of the running process cannot change: never "set it and send SIGHUP"
        for var in ("DHAN_ACCESS_TOKEN", "DHAN_CLIENT_ID"):
            if f"{var} " in hint or f"{var})" in hint or hint.endswith(var):
                assert "restart" in hint, where
        if "SIGHUP" in hint:  # SIGHUP helps only when it changes something it re-reads
            assert "file" in hint or "[providers.dhan]" in hint, where
    for where in ("feed 807", "feed 809", "rest 401", "rest 403"):
        assert TOKEN_HINT in hints[where]
    assert "token file" in TOKEN_HINT and "SIGHUP" in TOKEN_HINT and "restart" in TOKEN_HINT
    # SIGHUP with an unchanged config retries nothing: the plan hint does not promise it
    assert "SIGHUP" not in hints["feed 806"]


def test_token_from_a_file_is_masked_in_plugin_fault_texts(tmp_path):
    """A token read from a file is hidden in every fault text, like one from the environment."""
    from mdgate._config import load_settings
    from mdgate._providers.registry import load_registry
    from mdgate._routing.router import parse_provider_configs

    token = "file-token-0123456789abcdef"
    path = tmp_path / "token"
    path.write_text(token + "\n")
    env = {"MDGATE_LOAD_PLUGINS": "dhan", "DHAN_CLIENT_ID": "1100998877", "DHAN_ACCESS_TOKEN_FILE": str(path)}
    registry = load_registry(env)
    parse_provider_configs(registry, load_settings(None, env))
    registry.faults.record("dhan", "mdgate_connect", RuntimeError(f"refused token {token}"))
    text = registry.faults.status()["dhan"]["last_error"]
    assert token not in text and "refused token" in text
