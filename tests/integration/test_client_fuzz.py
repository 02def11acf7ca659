"""Hypothesis: whatever a client sends, it gets protocol frames back and stays connected."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio

SENTINEL = {"op": "unsubscribe", "instruments": ["X:SENTINEL"]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
instrument_like = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["EXAMPLE:ACME", "example:bolt", "MARS:ROVER", "NSE:", ":X", "A:B:C"]),
    st.integers(),
    st.none(),
)
requests = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["subscribe", "unsubscribe", "dance", ""]),
         "instruments": st.one_of(st.lists(instrument_like, max_size=5), json_values)},
    ).map(json.dumps),
)
KNOWN = {"error", "subscribed", "unsubscribed", "snapshot", "ticks"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(requests, min_size=1, max_size=5))
async def test_any_client_message_gets_protocol_frames_and_connection_stays(feed, make_settings, messages):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        for message in messages:
            await c.send(message)
            await c.send(SENTINEL)
            while True:
                frame = await c.recv()
                assert frame.get("type") in KNOWN, frame
                if frame["type"] == "error":
                    assert frame["code"] in {"bad_json", "bad_request", "bad_instrument", "no_route",
                                             "unavailable"}
                    assert isinstance(frame["message"], str)
                if frame["type"] == "unsubscribed" and frame["instruments"] == ["X:SENTINEL"]:
                    break
        sub, _ = await c.subscribe("EXAMPLE:ACME")
        assert sub["instruments"] == ["EXAMPLE:ACME"]
