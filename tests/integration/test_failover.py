"""Automatic failover and fail-back between two providers serving one exchange."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest
from mdgate_example.config import ExampleConfig, parse_config
from mdgate_example.protocol import ExampleDecoder, encode_subscribe, encode_unsubscribe
from mdgate_example.testing import FakeExampleServer as ExampleFeed

from mdgate import Endpoint, ProviderSpec, hookimpl
from mdgate._config import Settings
from mdgate.testing import GatewayClient, GatewayHandle, running_gateway, settings_from_toml

pytestmark = pytest.mark.anyio


class TwoProviders:
    """alpha (code A) and beta (code B) both serve exchange DUO (alpha declared first: primary)."""

    @hookimpl
    def mdgate_providers(self):
        return [ProviderSpec(n, n[0].upper(), ("DUO",), parse_config=parse_config) for n in ("alpha", "beta")]

    @hookimpl
    def mdgate_connect(self, provider: str, config: ExampleConfig, connection: int):
        return Endpoint(url=config.url, display_url=config.url) if provider in ("alpha", "beta") else None

    @hookimpl
    def mdgate_subscribe(self, provider, config, codes):
        return [encode_subscribe(codes)] if provider in ("alpha", "beta") else None

    @hookimpl
    def mdgate_unsubscribe(self, provider, config, codes, remaining):
        return [encode_unsubscribe(codes)] if provider in ("alpha", "beta") else None

    @hookimpl
    def mdgate_normalize(self, provider, config):
        return ExampleDecoder(provider, provider[0].upper()) if provider in ("alpha", "beta") else None

    @hookimpl
    def mdgate_instrument_code(self, provider, config, exchange, symbol):
        return symbol if provider in ("alpha", "beta") else None


def duo_settings(tmp_path: Path, alpha_url: str, beta_url: str) -> Settings:
    """Short timings: failover after 0.5 s down, fail-back after 0.8 s healthy."""
    return settings_from_toml(
        f"""
[runtime]
backoff_initial = 0.05
backoff_max = 0.1
failover_after = 0.5
failback_after = 0.8
[providers.alpha]
url = "{alpha_url}"
[providers.beta]
url = "{beta_url}"
""",
        {"MDGATE_LOAD_PLUGINS": ""},
        tmp_path,
    )


def duo_gateway(settings: Settings) -> AbstractAsyncContextManager[GatewayHandle]:
    """A running gateway with only the two test providers (alpha primary, beta backup) installed."""
    return running_gateway(
        settings, extra_plugins=[("duo", TwoProviders())], environ={"MDGATE_LOAD_PLUGINS": ""}
    )


async def test_failover_to_backup_and_failback_to_primary(tmp_path):
    async with ExampleFeed() as beta:
        alpha = ExampleFeed()
        await alpha.__aenter__()
        port = alpha.port
        settings = duo_settings(tmp_path, f"ws://127.0.0.1:{port}", beta.url)
        async with (
            duo_gateway(settings) as gw,
            GatewayClient.connect(gw.ws_url) as c,
        ):
            await gw.wait_for(lambda s: s["providers"]["beta"]["state"] == "connected")
            await c.subscribe("DUO:FOO")
            await alpha.wait_until(lambda f: "FOO" in f.subscribed)
            await alpha.send_tick("FOO", 1.0)
            assert (await c.ticks(1))[0]["provider"] == "A"
            assert beta.subscribe_requests == []

            # kill the primary: nothing listens on its port any more
            await alpha.__aexit__(None, None, None)
            await beta.wait_until(lambda f: "FOO" in f.subscribed, timeout=5)
            await beta.send_tick("FOO", 2.0)
            t = (await c.ticks(1))[0]
            assert (t["provider"], t["price"]) == ("B", 2.0)
            sw = gw.status()["routing"]["switches"][-1]
            assert (sw["from_provider"], sw["to_provider"]) == ("alpha", "beta") and "failover" in sw[
                "reason"
            ]

            # bring the primary back on the same port: after the hold-down, FOO moves back
            async with ExampleFeed(port=port) as alpha2:
                await alpha2.wait_until(lambda f: "FOO" in f.subscribed, timeout=10)
                await beta.wait_until(lambda f: "FOO" not in f.subscribed, timeout=5)
                await alpha2.send_tick("FOO", 3.0)
                t = (await c.ticks(1))[0]
                assert (t["provider"], t["price"]) == ("A", 3.0)
                sw = gw.status()["routing"]["switches"][-1]
                assert sw["to_provider"] == "alpha" and "fail-back" in sw["reason"]
                # the client never had to resubscribe
                assert gw.gateway.subs.refs("DUO:FOO") == 1


async def test_auth_failed_primary_fails_over_at_once(tmp_path):
    async with ExampleFeed() as alpha, ExampleFeed() as beta:
        alpha.refuse_auth = True
        settings = settings_from_toml(
            f"""
[runtime]
backoff_initial = 0.05
failover_after = 30
failback_after = 30
[providers.alpha]
url = "{alpha.url}"
[providers.beta]
url = "{beta.url}"
""",
            {"MDGATE_LOAD_PLUGINS": ""},
            tmp_path,
        )
        async with (
            duo_gateway(settings) as gw,
            GatewayClient.connect(gw.ws_url) as c,
        ):
            await gw.wait_for(lambda s: s["providers"]["beta"]["state"] == "connected")
            await c.subscribe("DUO:FOO")
            # alpha refuses at the first subscribe -> auth_failed -> moved at once (not after 30 s)
            with anyio.fail_after(5):
                await beta.wait_until(lambda f: "FOO" in f.subscribed)
            assert gw.status()["providers"]["alpha"]["state"] == "auth_failed"
