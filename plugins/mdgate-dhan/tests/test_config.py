"""[providers.dhan] validation and secret handling."""

from __future__ import annotations

from typing import Any

import pytest

from mdgate._errors import ConfigError, ProviderDisabled
from mdgate_dhan import plugin
from mdgate_dhan.config import DhanConfig, parse_config

TOKEN = "eyJhbGciOiJIUzUxMiJ9.SECRET-TOKEN-VALUE.sig"
CLIENT = "1100223344"
ENV = {"DHAN_CLIENT_ID": CLIENT, "DHAN_ACCESS_TOKEN": TOKEN}


def test_parse_config_defaults_from_environment() -> None:
    cfg = parse_config({}, ENV)
    assert isinstance(cfg, DhanConfig)
    assert cfg.url == "wss://api-feed.dhan.co"
    assert cfg.mode == "quote"
    assert cfg.request_code == 17
    assert cfg.ltt_offset_seconds == 19_800
    assert cfg.rest_url == "https://api.dhan.co/v2"
    assert cfg.stall_timeout is None and cfg.heartbeat_interval is None
    assert cfg.access_token.reveal() == TOKEN
    assert cfg.client_id.reveal() == CLIENT


def test_parse_config_environment_wins_over_table() -> None:
    cfg = parse_config({"client_id": "1", "access_token": "table-token"}, ENV)
    assert cfg.client_id.reveal() == CLIENT
    assert cfg.access_token.reveal() == TOKEN


def test_parse_config_table_credentials_used_without_environment() -> None:
    cfg = parse_config({"client_id": "42", "access_token": "tok"}, {})
    assert (cfg.client_id.reveal(), cfg.access_token.reveal()) == ("42", "tok")


@pytest.mark.parametrize(
    "environ",
    [{}, {"DHAN_CLIENT_ID": CLIENT}, {"DHAN_ACCESS_TOKEN": TOKEN}, {"DHAN_CLIENT_ID": " "}],
)
def test_parse_config_missing_credentials_disables_naming_both_variables(
    environ: dict[str, str],
) -> None:
    with pytest.raises(ProviderDisabled) as info:
        parse_config({}, environ)
    assert "DHAN_CLIENT_ID" in str(info.value)
    assert "DHAN_ACCESS_TOKEN" in str(info.value)
    assert info.value.provider == "dhan"
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"urll": "x"}, "providers.dhan.urll"),
        ({"url": "https://api-feed.dhan.co"}, "providers.dhan.url"),
        ({"url": "wss://api-feed.dhan.co?version=2"}, "providers.dhan.url"),
        ({"url": 5}, "providers.dhan.url"),
        ({"mode": "depth"}, "providers.dhan.mode"),
        ({"ltt_offset_seconds": "19800"}, "providers.dhan.ltt_offset_seconds"),
        ({"ltt_offset_seconds": True}, "providers.dhan.ltt_offset_seconds"),
        ({"ltt_offset_seconds": 100_000}, "providers.dhan.ltt_offset_seconds"),
        ({"rest_url": "ftp://x"}, "providers.dhan.rest_url"),
        ({"stall_timeout": 0}, "providers.dhan.stall_timeout"),
        ({"heartbeat_interval": "10"}, "providers.dhan.heartbeat_interval"),
        ({"access_token": 12345}, "providers.dhan.access_token"),
    ],
)
def test_parse_config_bad_value_names_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(table, ENV)
    assert info.value.key == key


def test_parse_config_bad_secret_type_does_not_echo_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"access_token": 987654321}, {"DHAN_CLIENT_ID": CLIENT})
    assert "987654321" not in str(info.value)


def test_parse_config_accepts_every_documented_key() -> None:
    cfg = parse_config(
        {
            "url": "ws://127.0.0.1:9000",
            "mode": "full",
            "ltt_offset_seconds": 0,
            "rest_url": "http://127.0.0.1:9001/v2/",
            "stall_timeout": 5,
            "heartbeat_interval": 2.5,
        },
        ENV,
    )
    assert (cfg.mode, cfg.request_code, cfg.ltt_offset_seconds) == ("full", 21, 0)
    assert cfg.rest_url == "http://127.0.0.1:9001/v2"
    assert (cfg.stall_timeout, cfg.heartbeat_interval) == (5.0, 2.5)


def test_secrets_never_in_repr_str_or_display_url() -> None:
    cfg = parse_config({}, ENV)
    endpoint = plugin.mdgate_connect(provider="dhan", config=cfg, connection=0)
    assert endpoint is not None
    for text in (repr(cfg), str(cfg), endpoint.display_url, repr(endpoint.display_url)):
        assert TOKEN not in text
        assert CLIENT not in text
    assert TOKEN in endpoint.url and CLIENT in endpoint.url
