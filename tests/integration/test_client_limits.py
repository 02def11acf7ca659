"""Hostile and slow clients against a real gateway: every limit of [server], over real sockets."""

from __future__ import annotations

import json
import socket

import anyio
import anyio.lowlevel
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mdgate._serve.fanout import ClientOutbox
from mdgate._serve.limits import MAX_LABEL, MAX_NAMED
from mdgate.testing import GatewayClient, running_gateway

pytestmark = pytest.mark.anyio


def _server_socket(gw, index: int = 0) -> socket.socket:
    conns = sorted(gw.gateway.server.server.connections, key=id)
    return conns[index].transport.get_extra_info("socket")


# -- error frames, de-duplication, nesting --------------------------------------------


async def test_refused_names_bounded_in_error_frame(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        names = [f"MARS:R{i:04d}" for i in range(1000)]
        request = json.dumps({"op": "subscribe", "instruments": names})
        await c.send(request)
        err = await c.recv()
        assert err["code"] == "no_route"
        assert [e["instrument"] for e in err["errors"]] == names[:MAX_NAMED]
        assert err["more"] == 1000 - MAX_NAMED
        assert "1000 instruments refused" in err["message"] and "990 more" in err["message"]
        raw = json.dumps(err)
        assert len(raw) < 5000 and len(raw) < len(request)
        # a 60 KiB name is named by its first characters only
        await c.send({"op": "subscribe", "instruments": ["NSE:" + "X" * 60_000, "EXAMPLE:ACME"]})
        assert (await c.recv())["type"] == "subscribed"
        err = await c.recv()
        assert err["code"] == "bad_instrument"
        assert len(err["errors"][0]["instrument"]) == MAX_LABEL and len(json.dumps(err)) < 1000
        assert (await c.recv())["type"] == "snapshot"


async def test_duplicates_collapse_in_order(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        names = ["example:bolt", "EXAMPLE:ACME", "Example:Bolt"] * 300
        await c.send({"op": "subscribe", "instruments": names})
        sub = await c.recv()
        assert sub["instruments"] == ["EXAMPLE:BOLT", "EXAMPLE:ACME"]
        assert gw.gateway.subs.refs("EXAMPLE:BOLT") == 1


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deep_json_is_bad_json_and_connection_stays(feed, make_settings, depth):
    settings = make_settings(feed.url, extra="[server]\nmax_message_size = 262144\n")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url, max_size=2**20) as c:
        await c.send("[" * depth + "]" * depth)
        err = await c.recv()
        assert err["code"] == "bad_json" and "deep" in err["message"]
        await c.send('{"op": "subscribe", "instruments": ' + "[" * depth + "]" * depth + "}")
        assert (await c.recv())["code"] == "bad_json"
        sub, _ = await c.subscribe("EXAMPLE:ACME")
        assert sub["instruments"] == ["EXAMPLE:ACME"]
        assert gw.status()["server"]["internal_errors"] == 0


async def test_nested_items_named_by_type_not_repr(feed, make_settings):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        deep = "[" * 900 + "]" * 900
        await c.send('{"op": "subscribe", "instruments": [' + deep + ', {"a": 1}, 7]}')
        err = await c.recv()
        assert [e["instrument"] for e in err["errors"]] == ["<list>", "<dict>", "7"]
        await c.send('{"op": ' + deep + ', "instruments": ["EXAMPLE:ACME"]}')
        err = await c.recv()
        assert err["code"] == "bad_request" and "<list>" in err["message"]


async def test_request_failing_inside_gateway_gets_internal_error_and_connection_stays(
    feed, make_settings, monkeypatch,
):
    async with running_gateway(make_settings(feed.url)) as gw, GatewayClient.connect(gw.ws_url) as c:
        subs = gw.gateway.subs
        real = subs.acquire

        def broken(name: str) -> bool:
            if name == "EXAMPLE:BOOM":
                raise RuntimeError("a bug " + "x" * 10_000)
            return real(name)

        monkeypatch.setattr(subs, "acquire", broken)
        await c.send({"op": "subscribe", "instruments": ["EXAMPLE:BOOM"]})
        err = await c.recv()
        assert err["code"] == "internal" and "x" * 100 not in json.dumps(err)
        sub, _ = await c.subscribe("EXAMPLE:ACME")
        assert sub["instruments"] == ["EXAMPLE:ACME"]
        assert gw.status()["server"]["internal_errors"] == 1


async def test_big_request_yields_to_the_event_loop(feed, make_settings):
    # a 1,000-instrument request must not hold up the feed and the other clients while it is served:
    # it gives the loop a turn once it held it half a millisecond (here: every look at the clock)
    async with running_gateway(make_settings(feed.url)) as gw:
        now = [0.0]

        def clock() -> float:
            now[0] += 0.0005
            return now[0]

        gw.gateway.server.clock = clock
        spins = 0
        done = False

        async def spin() -> None:
            nonlocal spins
            while not done:
                spins += 1
                await anyio.lowlevel.checkpoint()

        message = json.dumps({"op": "subscribe", "instruments": [f"MARS:R{i:04d}" for i in range(1000)]})
        async with anyio.create_task_group() as tg:
            tg.start_soon(spin)
            await anyio.lowlevel.checkpoint()
            before = spins
            await gw.gateway.server._on_message(ClientOutbox(100, 1000), set(), message)
            during = spins - before
            done = True
        assert during >= 1000 // 16 - 1


# -- instruments per request and per client --------------------------------------------


async def test_request_over_max_instruments_per_request_refused_whole(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nmax_instruments_per_request = 5\n")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME")
        await c.send({"op": "subscribe", "instruments": [f"EXAMPLE:S{i}" for i in range(6)]})
        err = await c.recv()
        assert err["code"] == "limit" and "at most 5" in err["message"] and "names 6" in err["message"]
        assert gw.gateway.subs.refs("EXAMPLE:S0") == 0
        await c.send({"op": "unsubscribe", "instruments": [f"EXAMPLE:S{i}" for i in range(6)]})
        assert (await c.recv())["code"] == "limit"
        # nothing else lost: the earlier subscription still streams
        await feed.wait_until(lambda f: "ACME" in f.subscribed)
        await feed.send_tick("ACME", 3.0)
        assert (await c.ticks(1))[0]["price"] == 3.0
        assert gw.status()["server"]["limit_errors"] == 2


async def test_client_over_max_instruments_per_client_gets_limit_for_the_rest(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nmax_instruments_per_client = 3\n")
    async with running_gateway(settings) as gw, GatewayClient.connect(gw.ws_url) as c:
        await c.subscribe("EXAMPLE:ACME", "EXAMPLE:BOLT")
        await c.send({"op": "subscribe", "instruments": ["EXAMPLE:ACME", "EXAMPLE:CRUX", "EXAMPLE:DART",
                                                         "EXAMPLE:ECHO"]})
        sub = await c.recv()
        assert sub["instruments"] == ["EXAMPLE:ACME", "EXAMPLE:CRUX"]
        err = await c.recv()
        assert err["code"] == "limit"
        assert {e["instrument"]: e["code"] for e in err["errors"]} == {"EXAMPLE:DART": "limit",
                                                                      "EXAMPLE:ECHO": "limit"}
        assert "at most 3" in err["errors"][0]["message"]
        assert gw.gateway.subs.refs("EXAMPLE:DART") == 0
        # unsubscribing makes room again
        await c.send({"op": "unsubscribe", "instruments": ["EXAMPLE:BOLT"]})
        await c.recv_type("unsubscribed")
        sub, _ = await c.subscribe("EXAMPLE:DART")
        assert sub["instruments"] == ["EXAMPLE:DART"]
        # another client has its own allowance
        async with GatewayClient.connect(gw.ws_url) as c2:
            sub, _ = await c2.subscribe("EXAMPLE:BOLT", "EXAMPLE:ECHO", "EXAMPLE:FIZZ")
            assert len(sub["instruments"]) == 3


# -- connections ----------------------------------------------------------------------


async def _refused_status(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, open_timeout=5, **kwargs):
            pass
    return info.value.response.status_code


async def test_max_clients_503_counted_healthz_answers(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nmax_clients = 2\n")
    async with running_gateway(settings) as gw:
        async with connect(gw.ws_url), connect(gw.ws_url) as second:
            assert await _refused_status(gw.ws_url) == 503
            assert await _refused_status(gw.ws_url) == 503
            async with httpx.AsyncClient(base_url=gw.http_url) as http:
                assert (await http.get("/healthz")).status_code == 200
                doc = (await http.get("/status")).json()
            assert doc["server"]["refused"]["max_clients"] == 2
            assert doc["server"]["max_clients"] == 2
            await second.close()
            await gw.wait_for(lambda s: s["server"]["sockets"] <= 1)
            async with connect(gw.ws_url):  # a slot is free again
                pass


async def test_max_clients_per_address_503_other_address_admitted(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nmax_clients_per_address = 1\n")
    async with running_gateway(settings) as gw, connect(gw.ws_url):
        assert await _refused_status(gw.ws_url) == 503
        async with connect(gw.ws_url, local_addr=("127.0.0.2", 0)):
            assert gw.status()["server"]["refused"]["max_clients_per_address"] == 1


async def test_refused_clients_logged_rate_limited(feed, make_settings, caplog):
    settings = make_settings(feed.url, extra="[server]\nmax_clients = 1\n")
    async with running_gateway(settings) as gw, connect(gw.ws_url):
        lines = []

        class Lines:
            def warning(self, event, **kw):
                lines.append((event, kw))

        gw.gateway.server.ratelog.logger = Lines()
        for _ in range(20):
            assert await _refused_status(gw.ws_url) == 503
        assert gw.status()["server"]["refused"]["max_clients"] == 20
        assert [e for e, _ in lines] == ["client_refused"]
        assert lines[0][1]["reason"] == "max_clients"


async def test_idle_sockets_cannot_starve_healthz(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nmax_clients = 4\n")
    async with running_gateway(settings) as gw:
        cap = gw.gateway.server.limits.max_sockets
        idle = []
        try:
            for _ in range(cap + 20):  # sockets that never send a request
                s = socket.create_connection(("127.0.0.1", gw.port))
                idle.append(s)
            await gw.wait_for(lambda st: st["server"]["refused"]["sockets"] >= 20)
            assert gw.status()["server"]["sockets"] <= cap + 1
            async with httpx.AsyncClient(base_url=gw.http_url) as http:
                for _ in range(3):
                    assert (await http.get("/healthz", timeout=5)).status_code == 200
        finally:
            for s in idle:
                s.close()


# -- browsers -------------------------------------------------------------------------


async def _handshake(port: int, origin: str | None, host: str | None = None) -> int:
    """Status code of a raw WebSocket handshake on /ws with these Origin and Host headers."""
    headers = [f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket", "Connection: Upgrade",
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if origin is not None:
        headers.append(f"Origin: {origin}")
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(("GET /ws HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode())
            data = b""
            while b"\r\n" not in data:
                data += await stream.receive()
    return int(data.split()[1])


@pytest.mark.parametrize(
    ("extra", "origin", "host", "status"),
    [
        ("", None, None, 101),                                  # not a browser
        ("", "http://localhost:3000", None, 101),               # a loopback page, loopback gateway
        ("", "http://127.0.0.1:8080", None, 101),
        ("", "http://[::1]", None, 101),
        ("", "https://evil.example", None, 403),                # any other site
        ("", "null", None, 403),                                # sandboxed or file:// page
        ("", "http://evil.example:{port}", "evil.example:{port}", 403),  # DNS rebinding
        ('allowed_origins = ["https://desk.example"]', "https://desk.example", None, 101),
        ('allowed_origins = ["https://desk.example"]', "https://DESK.example:443", None, 101),
        ('allowed_origins = ["https://desk.example"]', "http://desk.example", None, 403),
        ('allowed_origins = ["https://desk.example"]', "https://other.example", None, 403),
        ('allowed_origins = ["*"]', "https://evil.example", None, 101),
        ('allowed_origins = ["null"]', "null", None, 101),
    ],
)
async def test_origin_allow_list(feed, make_settings, extra, origin, host, status):
    settings = make_settings(feed.url, extra=f"[server]\n{extra}\n")
    async with running_gateway(settings) as gw:
        port = gw.port
        origin = origin.format(port=port) if origin else origin
        assert await _handshake(port, origin, host.format(port=port) if host else None) == status
        assert gw.status()["server"]["refused"]["origin"] == (status == 403)


async def test_same_host_origin_when_not_listening_on_loopback(feed, make_settings):
    # listening on every address: only a page of the same host and port (e.g. behind a proxy)
    settings = make_settings(feed.url, extra='[server]\nhost = "0.0.0.0"\n')
    async with running_gateway(settings) as gw:
        gw.gateway.server.settings = settings.server  # running_gateway binds 127.0.0.1; judge as configured
        port = gw.port
        assert await _handshake(port, f"http://desk.example:{port}", f"desk.example:{port}") == 101
        assert await _handshake(port, "https://desk.example", "desk.example") == 101
        assert await _handshake(port, "http://localhost:3000", f"desk.example:{port}") == 403
        assert await _handshake(port, "http://desk.example:1", f"desk.example:{port}") == 403
        assert await _handshake(port, f"http://desk.example:{port}", None) == 403  # Host 127.0.0.1


# -- budget and slow clients ------------------------------------------------------------


async def test_client_that_stops_reading_receives_1008(feed, make_settings):
    settings = make_settings(feed.url, extra="[server]\nclient_queue = 100\ndrain_timeout = 0.3\n")
    names = [f"S{i}" for i in range(10)]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with running_gateway(settings) as gw:
        server = gw.gateway.server
        server.close_grace = 10.0  # the test reads again well within this
        sock.connect(("127.0.0.1", gw.port))
        async with connect(gw.ws_url, sock=sock, max_queue=1) as slow:
            _server_socket(gw).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await slow.send(json.dumps({"op": "subscribe", "instruments": [f"EXAMPLE:{n}" for n in names]}))
            await feed.wait_until(lambda f: set(names) <= f.subscribed)
            slow.transport.pause_reading()
            with anyio.fail_after(20):
                i = 0
                while server.stats.closed["slow"] == 0:
                    await feed.send(json.dumps([{"s": n, "p": 1.0 + i, "t": i, "v": i} for n in names]))
                    i += 1
                    await anyio.sleep(0.001)
            # the gateway gave up on the client: it dropped what it still held, and the close frame
            # waits behind what the socket holds; a client that reads again gets it
            slow.transport.resume_reading()
            with pytest.raises(ConnectionClosed) as info:
                with anyio.fail_after(10):
                    while True:
                        await slow.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            assert "too slow" in info.value.rcvd.reason
        await gw.wait_for(lambda s: s["server"]["sockets"] == 0)


async def test_client_flooding_requests_without_reading_closed_over_budget(feed, make_settings):
    budget = 65536
    settings = make_settings(feed.url, extra=f"[server]\nclient_buffer_bytes = {budget}\n")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with running_gateway(settings) as gw:
        server = gw.gateway.server
        sock.connect(("127.0.0.1", gw.port))
        async with connect(gw.ws_url, sock=sock, max_queue=1) as hostile:
            _server_socket(gw).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            hostile.transport.pause_reading()
            peak = 0
            request = json.dumps({"op": "subscribe", "instruments": [f"MARS:R{i}" for i in range(100)]})
            with anyio.fail_after(20):
                while server.stats.closed["over_budget"] == 0:
                    await hostile.send(request)
                    for o in server._outboxes:
                        peak = max(peak, o.nbytes + o.in_flight)
            assert peak <= budget
            assert gw.status()["server"]["closed"]["over_budget"] == 1
            hostile.transport.resume_reading()
            with pytest.raises(ConnectionClosed) as info:
                with anyio.fail_after(10):
                    while True:
                        await hostile.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            assert "over budget" in info.value.rcvd.reason
