"""Configuration loading: precedence, validation messages naming keys, secrets."""

from __future__ import annotations

import pytest

from mdgate._config import Secret, load_settings, mask_url
from mdgate._errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "mdgate.toml"
    p.write_text(text)
    return p


def test_load_settings_no_file_defaults():
    s = load_settings(None, {})
    assert s.server.port == 8765 and s.server.host == "127.0.0.1"
    assert s.redis.url is None and s.database.url is None
    assert s.server.compression is False


def test_load_settings_full_example_from_design(tmp_path):
    p = write(
        tmp_path,
        """
[server]
host = "127.0.0.1"
port = 8765
tokens = []
[redis]
url = "redis://127.0.0.1:6379/0"
[database]
url = "postgresql://127.0.0.1/mdgate"
[providers.yahoo]
url = "wss://streamer.finance.yahoo.com/?version=2"
[providers.dhan]
url = "wss://api-feed.dhan.co"
[instruments."NSE:RELIANCE"]
dhan = "NSE_EQ:2885"
yahoo = "RELIANCE.NS"
""",
    )
    s = load_settings(p, {})
    assert s.redis.url == Secret("redis://127.0.0.1:6379/0")
    assert s.instruments == {"NSE:RELIANCE": {"dhan": "NSE_EQ:2885", "yahoo": "RELIANCE.NS"}}
    assert s.providers["yahoo"]["url"].startswith("wss://")


def test_environment_takes_precedence(tmp_path):
    p = write(tmp_path, '[redis]\nurl = "redis://file/0"\n[server]\nport = 1000\n')
    s = load_settings(
        p,
        {
            "MDGATE_REDIS_URL": "redis://env/1",
            "MDGATE_SERVER__PORT": "2000",
            "MDGATE_DATABASE_URL": "postgresql://env/db",
            "MDGATE_SUBSCRIPTIONS__ALWAYS": "NSE:RELIANCE, nasdaq:aapl",
        },
    )
    assert s.redis.url is not None and s.redis.url.reveal() == "redis://env/1"
    assert s.server.port == 2000
    assert s.database.url is not None and s.database.url.reveal() == "postgresql://env/db"
    assert s.subscriptions.always == ("NSE:RELIANCE", "nasdaq:aapl")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nprot = 1\n", "server.prot"),
        ("[server]\nport = 'x'\n", "server.port"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\ncompression = 1\n", "server.compression"),
        ("[serverr]\n", "serverr"),
        ("[runtime]\nbackoff_max = -1\n", "runtime.backoff_max"),
        ("[runtime]\nbackoff_initial = 0\n", "runtime.backoff_initial"),
        ("[runtime]\nbackoff_initial = 5.0\nbackoff_max = 1.0\n", "runtime.backoff_max"),
        ("[runtime]\nauth_retry = 0\n", "runtime.auth_retry"),
        ("[server]\nmax_clients = 0\n", "server.max_clients"),
        ("[server]\nclient_buffer_bytes = 1024\n", "server.client_buffer_bytes"),
        ("[logging]\nlevel = 'loud'\n", "logging.level"),
        ("[subscriptions]\nalways = ['RELIANCE']\n", "subscriptions.always[0]"),
        ("[instruments.'bad']\nyahoo = 'X'\n", "instruments.bad"),
        ("[instruments.'NSE:X']\nyahoo = 3\n", "instruments.NSE:X.yahoo"),
        ("server = 3\n", "server"),
        ("[providers]\nyahoo = 3\n", "providers"),
        ("not toml [", "--config"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {})
    assert info.value.key == key
    assert key in str(info.value)


def test_bad_env_value_names_the_key():
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"MDGATE_SERVER__PORT": "eighty"})
    assert info.value.key == "server.port"


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml", {})


def test_secrets_never_in_repr_or_str(tmp_path):
    s = load_settings(
        write(tmp_path, '[server]\ntokens = ["hunter2"]\n[redis]\nurl = "redis://:pw@h/0"\n'), {}
    )
    assert "hunter2" not in repr(s) and "pw@" not in repr(s)
    assert str(s.server.tokens[0]) == "***"
    assert s.server.tokens[0].reveal() == "hunter2"


def test_mask_url_masks_password_and_query_values():
    assert mask_url("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    assert mask_url("wss://feed?token=abc&clientId=1") == "wss://feed?token=***&clientId=***"
    assert mask_url("postgresql://h/db") == "postgresql://h/db"
