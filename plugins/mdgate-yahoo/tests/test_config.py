"""[providers.yahoo] parsing."""

from __future__ import annotations

from typing import Any

import pytest

from mdgate._errors import ConfigError
from mdgate_yahoo.config import DEFAULT_URL, YahooConfig, parse_config


def test_parse_config_empty_defaults() -> None:
    cfg = parse_config({}, {})
    assert cfg == YahooConfig()
    assert cfg.url == DEFAULT_URL == "wss://streamer.finance.yahoo.com/?version=2"
    assert (cfg.stall_timeout, cfg.heartbeat_interval) == (None, None)
    assert cfg.backfill is True


def test_parse_config_every_key_read() -> None:
    cfg = parse_config(
        {
            "url": "ws://127.0.0.1:9999/?version=2",
            "heartbeat_interval": 1,
            "stall_timeout": 0.5,
            "backfill": False,
            "backfill_prepost": True,
            "backfill_timeout": 5,
        },
        {},
    )
    assert cfg == YahooConfig("ws://127.0.0.1:9999/?version=2", 1.0, 0.5, False, True, 5.0)


def test_parse_config_frozen() -> None:
    cfg = parse_config({}, {})
    with pytest.raises(AttributeError):
        cfg.url = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"symbols": ["AAPL"]}, "providers.yahoo.symbols"),
        ({"url": 5}, "providers.yahoo.url"),
        ({"url": "https://streamer.finance.yahoo.com/"}, "providers.yahoo.url"),
        ({"stall_timeout": 0}, "providers.yahoo.stall_timeout"),
        ({"stall_timeout": "30"}, "providers.yahoo.stall_timeout"),
        ({"heartbeat_interval": -1}, "providers.yahoo.heartbeat_interval"),
        ({"heartbeat_interval": True}, "providers.yahoo.heartbeat_interval"),
        ({"backfill": "yes"}, "providers.yahoo.backfill"),
        ({"backfill_timeout": float("nan")}, "providers.yahoo.backfill_timeout"),
    ],
)
def test_parse_config_bad_key_error_names_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(table, {})
    assert ei.value.key == key
    assert str(ei.value).startswith(key)
