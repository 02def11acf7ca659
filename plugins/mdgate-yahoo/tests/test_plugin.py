"""The plugin as the core sees it: entry point, spec, hooks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mdgate import Endpoint, ProviderSpec
from mdgate._errors import ConfigError
from mdgate._providers.registry import Registry, load_registry
from mdgate_yahoo import plugin
from mdgate_yahoo.config import YahooConfig, parse_config
from mdgate_yahoo.protocol import YahooDecoder
from mdgate_yahoo.testing import encode_pricing


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry({"MDGATE_LOAD_PLUGINS": "yahoo"})


@pytest.fixture
def cfg() -> YahooConfig:
    return parse_config({"url": "ws://127.0.0.1:1/?version=2"}, {})


def test_entry_point_discovered_and_loaded(registry: Registry) -> None:
    (info,) = [p for p in registry.plugins if p.name == "yahoo"]
    assert info.status == "loaded", info.error
    assert info.module == "mdgate_yahoo.plugin"
    assert info.providers == ["yahoo"]
    assert {"mdgate_connect", "mdgate_normalize", "mdgate_subscribe"} <= set(info.hooks)


def test_spec_declares_limits(registry: Registry) -> None:
    spec = registry.provider("yahoo").spec
    assert isinstance(spec, ProviderSpec)
    assert (spec.name, spec.code) == ("yahoo", "YF")
    assert spec.exchanges == ("NASDAQ", "NYSE", "NSE", "BSE")
    assert (spec.max_per_message, spec.max_per_connection, spec.max_connections) == (
        100,
        100,
        50,
    )
    assert (spec.heartbeat_interval, spec.stall_timeout) == (15.0, 30.0)
    assert "url" in spec.settings
    assert "stall_timeout" in spec.settings
    assert spec.secrets == ()


def test_spec_parse_config_error_names_key(registry: Registry) -> None:
    spec = registry.provider("yahoo").spec
    with pytest.raises(ConfigError, match=r"providers\.yahoo\.tokn"):
        spec.parse_config({"tokn": "x"}, {})
    assert isinstance(spec.parse_config({}, {}), YahooConfig)


def test_hooks_through_registry_return_frames(registry: Registry, cfg: YahooConfig) -> None:
    hooks = registry.provider("yahoo")
    endpoint = hooks.connect(provider="yahoo", config=cfg, connection=0)
    assert isinstance(endpoint, Endpoint)
    assert endpoint.url == "ws://127.0.0.1:1/?version=2"
    assert endpoint.handshake == ()
    sub = hooks.subscribe(provider="yahoo", config=cfg, codes=["AAPL", "RELIANCE.NS"])
    assert [json.loads(f) for f in sub] == [{"subscribe": ["AAPL", "RELIANCE.NS"]}]
    unsub = hooks.unsubscribe(provider="yahoo", config=cfg, codes=["AAPL"], remaining=["X"])
    assert [json.loads(f) for f in unsub] == [{"unsubscribe": ["AAPL"]}]
    beat = hooks.heartbeat(provider="yahoo", config=cfg, codes=["AAPL", "X"])
    assert [json.loads(f) for f in beat] == [{"subscribe": ["AAPL", "X"]}]
    assert hooks.heartbeat(provider="yahoo", config=cfg, codes=[]) == []
    code = hooks.instrument_code(provider="yahoo", config=cfg, exchange="NSE", symbol="RELIANCE")
    assert code == "RELIANCE.NS"


def test_normalize_hook_fresh_decoder_per_call(registry: Registry, cfg: YahooConfig) -> None:
    hooks = registry.provider("yahoo")
    a = hooks.normalize(provider="yahoo", config=cfg)
    b = hooks.normalize(provider="yahoo", config=cfg)
    assert isinstance(a, YahooDecoder)
    assert a is not b
    a.track("AAPL", "NASDAQ:AAPL")
    assert a.feed(encode_pricing(id="AAPL", price=1.5, time=1), 2)[0].instrument == "NASDAQ:AAPL"


@pytest.mark.parametrize(
    ("hook", "kwargs"),
    [
        (plugin.mdgate_connect, {"connection": 0}),
        (plugin.mdgate_subscribe, {"codes": ["AAPL"]}),
        (plugin.mdgate_unsubscribe, {"codes": ["AAPL"], "remaining": []}),
        (plugin.mdgate_heartbeat, {"codes": ["AAPL"]}),
        (plugin.mdgate_normalize, {}),
        (plugin.mdgate_instrument_code, {"exchange": "NSE", "symbol": "RELIANCE"}),
        (
            plugin.mdgate_backfill,
            {"instrument": "NASDAQ:AAPL", "code": "AAPL", "start_ms": 0, "end_ms": 1},
        ),
    ],
)
def test_hooks_other_provider_none(hook: Any, kwargs: dict[str, Any], cfg: YahooConfig) -> None:
    assert hook(provider="dhan", config=cfg, **kwargs) is None


def test_backfill_hook_disabled_none() -> None:
    cfg = parse_config({"backfill": False}, {})
    assert (
        plugin.mdgate_backfill(
            provider="yahoo",
            config=cfg,
            instrument="NASDAQ:AAPL",
            code="AAPL",
            start_ms=0,
            end_ms=1,
        )
        is None
    )


async def test_backfill_hook_empty_range_no_request(cfg: YahooConfig) -> None:
    # end before start: nothing to fetch, yfinance never imported or called
    pending = plugin.mdgate_backfill(
        provider="yahoo",
        config=cfg,
        instrument="NASDAQ:AAPL",
        code="AAPL",
        start_ms=10,
        end_ms=5,
    )
    assert pending is not None
    assert await pending == []
