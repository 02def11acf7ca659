"""The hook implementations, called directly and through the plugin registry."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from mdgate._errors import SubscriptionRejected
from mdgate._provider import Decoder, Endpoint
from mdgate._providers.registry import load_registry
from mdgate_dhan import plugin
from mdgate_dhan.config import parse_config
from mdgate_dhan.protocol import DhanDecoder, encode_ticker
from mdgate_dhan.symbols import KNOWN_INSTRUMENTS

ENV = {"DHAN_CLIENT_ID": "1100223344", "DHAN_ACCESS_TOKEN": "tok/with+special=chars"}


@pytest.fixture
def cfg():  # type: ignore[no-untyped-def]
    return parse_config({"mode": "full"}, ENV)


def test_spec_declares_dhan_limits_and_secrets() -> None:
    (spec,) = plugin.mdgate_providers()
    assert (spec.name, spec.code) == ("dhan", "DHAN")
    assert {"NSE", "BSE"} <= set(spec.exchanges)
    assert (spec.max_per_message, spec.max_per_connection, spec.max_connections) == (
        100,
        5000,
        5,
    )
    assert spec.heartbeat_interval is None
    assert spec.stall_timeout == 30
    assert spec.secrets == ("DHAN_CLIENT_ID", "DHAN_ACCESS_TOKEN", "DHAN_ACCESS_TOKEN_FILE")
    assert spec.parse_config is parse_config
    assert "ltt_offset_seconds" in spec.settings


def test_connect_builds_v2_query_and_masked_display_url(cfg) -> None:  # type: ignore[no-untyped-def]
    ep = plugin.mdgate_connect(provider="dhan", config=cfg, connection=3)
    assert isinstance(ep, Endpoint)
    parts = urlsplit(ep.url)
    assert f"{parts.scheme}://{parts.netloc}" == "wss://api-feed.dhan.co"
    query = parse_qs(parts.query)
    assert query == {
        "version": ["2"],
        "token": ["tok/with+special=chars"],
        "clientId": ["1100223344"],
        "authType": ["2"],
    }
    assert ep.display_url == ("wss://api-feed.dhan.co?version=2&token=***&clientId=***&authType=2")


def test_hooks_return_none_for_other_providers(cfg) -> None:  # type: ignore[no-untyped-def]
    assert plugin.mdgate_connect(provider="yahoo", config=cfg, connection=0) is None
    assert plugin.mdgate_subscribe(provider="yahoo", config=cfg, codes=["x"]) is None
    assert plugin.mdgate_unsubscribe(provider="yahoo", config=cfg, codes=["x"], remaining=[]) is None
    assert plugin.mdgate_normalize(provider="yahoo", config=cfg) is None
    assert (
        plugin.mdgate_instrument_code(provider="yahoo", config=cfg, exchange="NSE", symbol="RELIANCE") is None
    )
    assert (
        plugin.mdgate_backfill(
            provider="yahoo",
            config=cfg,
            instrument="NSE:RELIANCE",
            code="NSE_EQ:2885",
            start_ms=0,
            end_ms=1,
        )
        is None
    )


def test_subscribe_uses_configured_mode(cfg) -> None:  # type: ignore[no-untyped-def]
    frames = plugin.mdgate_subscribe(provider="dhan", config=cfg, codes=["NSE_EQ:2885"])
    assert frames is not None
    (msg,) = [json.loads(f) for f in frames]
    assert msg["RequestCode"] == 21
    frames = plugin.mdgate_unsubscribe(provider="dhan", config=cfg, codes=["NSE_EQ:2885"], remaining=[])
    assert frames is not None
    assert json.loads(frames[0])["RequestCode"] == 22


def test_subscribe_bad_code_raises_subscription_rejected(cfg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SubscriptionRejected, match=r"RELIANCE\.NS"):
        plugin.mdgate_subscribe(provider="dhan", config=cfg, codes=["RELIANCE.NS"])


def test_normalize_returns_fresh_decoder_with_offset() -> None:
    cfg = parse_config({"ltt_offset_seconds": 0}, ENV)
    a = plugin.mdgate_normalize(provider="dhan", config=cfg)
    b = plugin.mdgate_normalize(provider="dhan", config=cfg)
    assert isinstance(a, DhanDecoder) and a is not b
    contract: Decoder = a  # mypy checks DhanDecoder against the Decoder protocol
    contract.track("NSE_EQ:2885", "NSE:RELIANCE")
    (tick,) = contract.feed(encode_ticker("NSE_EQ:2885", 1.0, 19_800), 5)
    assert tick.ts == 19_800_000  # offset 0 keeps the raw LTT


def test_instrument_code_answers_only_from_known_table(cfg) -> None:  # type: ignore[no-untyped-def]
    def code(exchange: str, symbol: str) -> str | None:
        return plugin.mdgate_instrument_code(provider="dhan", config=cfg, exchange=exchange, symbol=symbol)

    assert code("NSE", "RELIANCE") == "NSE_EQ:2885"
    assert code("BSE", "RELIANCE") == "BSE_EQ:500325"
    assert code("NSE", "NIFTY") == "IDX_I:13"
    assert code("NSE", "WIPRO") is None  # no guessing


def test_known_instruments_are_valid_codes() -> None:
    from mdgate._model import parse_instrument
    from mdgate_dhan.protocol import parse_code

    assert KNOWN_INSTRUMENTS["NSE:HDFCBANK"] == "NSE_EQ:1333"
    for instrument, code in KNOWN_INSTRUMENTS.items():
        parse_instrument(instrument)
        parse_code(code)


def test_backfill_unsupported_segment_returns_none(cfg) -> None:  # type: ignore[no-untyped-def]
    assert (
        plugin.mdgate_backfill(
            provider="dhan",
            config=cfg,
            instrument="NFO:X",
            code="NSE_FNO:1",
            start_ms=0,
            end_ms=1,
        )
        is None
    )
    assert (
        plugin.mdgate_backfill(
            provider="dhan",
            config=cfg,
            instrument="NSE:X",
            code="garbage",
            start_ms=0,
            end_ms=1,
        )
        is None
    )


def test_entry_point_loads_and_declares_dhan() -> None:
    registry = load_registry({"MDGATE_LOAD_PLUGINS": "dhan"})
    info = {i.name: i for i in registry.plugins}["dhan"]
    assert info.status == "loaded", info.error
    assert "dhan" in registry.providers
    hooks = registry.provider("dhan")
    assert hooks.spec.code == "DHAN"
    assert "mdgate_add_commands" in info.hooks
