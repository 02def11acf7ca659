"""
What a user would run instead of mdgate, decode-only: the providers' own SDKs.

``python benchmarks/_e2e_sdk.py yfinance URL SYMBOLS`` runs yfinance 1.7.0's
``AsyncWebSocket`` (``subscribe`` then ``listen`` with a handler that counts
the decoded messages); ``python benchmarks/_e2e_sdk.py dhanhq URL CODES``
runs dhanhq 2.3.0's ``MarketFeed`` (its own event loop, synchronous
``run()``, ``on_message`` counting parsed packets); ``mdgate-yahoo`` and
``mdgate-dhan`` run mdgate's own receive and decode alone (the gateway's provider
WebSocket and the plugin's decoder), as a baseline in the same run. Nothing is
stored or forwarded. The process never closes its connection cleanly (yfinance spins
on a clean server close, docs/protocols/yahoo.md#the-yfinance-client): it
exits with ``os._exit``.

Protocol on stdin/stdout (a reader thread; the SDK owns the main thread)::

    <- READY                         after the first subscribe went out
    -> start                         reset the counter
    -> stop <expected> <timeout_s>
    <- RESULT {"messages": n, "window_s": s, "cpu_s": c}
    -> quit
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any


class Counter:
    """Messages decoded, shared between the SDK's thread and the stdin thread."""

    def __init__(self) -> None:
        self.n = 0
        self.last = 0.0
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()

    def hit(self, *_: Any) -> None:
        """The SDK's message handler."""
        self.n += 1
        self.last = time.monotonic()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _control(counter: Counter) -> None:
    for raw in sys.stdin:
        cmd = raw.split()
        if not cmd:
            continue
        if cmd[0] == "start":
            counter.n = 0
            counter.t0 = time.monotonic()
            counter.cpu0 = time.process_time()
        elif cmd[0] == "stop":
            expected, timeout = int(cmd[1]), float(cmd[2])
            deadline = time.monotonic() + timeout
            last, quiet = -1, time.monotonic()
            while time.monotonic() < deadline and counter.n < expected:
                if counter.n != last:
                    last, quiet = counter.n, time.monotonic()
                elif time.monotonic() - quiet > 1.0:
                    break
                time.sleep(0.02)
            window = max(counter.last - counter.t0, 1e-3)
            _say("RESULT " + json.dumps({"messages": counter.n, "window_s": window,
                                         "cpu_s": time.process_time() - counter.cpu0}))
        elif cmd[0] == "quit":
            break
    os._exit(0)


def run_yfinance(url: str, symbols: list[str], counter: Counter) -> None:
    """yfinance AsyncWebSocket: subscribe, then listen() with a counting handler."""
    import asyncio

    from yfinance.live import AsyncWebSocket

    async def go() -> None:
        ws = AsyncWebSocket(url=url, verbose=False)
        await ws.subscribe(symbols)
        _say("READY")
        await ws.listen(counter.hit)

    asyncio.run(go())


def run_dhanhq(url: str, codes: list[str], counter: Counter) -> None:
    """dhanhq MarketFeed (v2, Quote mode): run() with a counting on_message."""
    from dhanhq import DhanContext
    from dhanhq.marketfeed import MarketFeed

    MarketFeed.market_feed_wss = url
    ctx = DhanContext(os.environ.get("DHAN_CLIENT_ID", "1000000001"),
                      os.environ.get("DHAN_ACCESS_TOKEN", "test-token"))
    instruments = [(MarketFeed.NSE, code.split(":")[1], MarketFeed.Quote) for code in codes]

    def on_connect(_: Any) -> None:
        _say("READY")

    feed = MarketFeed(ctx, instruments, version="v2", on_connect=on_connect, on_message=counter.hit)
    feed.run()


def run_mdgate(provider: str, url: str, codes: list[str], counter: Counter) -> None:
    """
    mdgate's own receive and decode, nothing else: the provider WebSocket the gateway uses
    (picows, its messages handed to a sink inside the read callback) and the plugin's
    decoder, on asyncio. The same unit as the SDKs: one count per message decoded.
    """
    import asyncio

    from mdgate._providers.transport import open_websocket

    if provider == "yahoo":
        from mdgate_yahoo import plugin
        from mdgate_yahoo.config import parse_config as parse_yahoo

        config: Any = parse_yahoo({"url": url}, {})
    else:
        from mdgate_dhan import plugin  # type: ignore[no-redef]
        from mdgate_dhan.config import parse_config as parse_dhan

        config = parse_dhan({"url": url}, os.environ)

    async def go() -> None:
        ws = await open_websocket(provider, plugin.mdgate_connect(provider, config, 0))
        decoder = plugin.mdgate_normalize(provider, config)
        assert decoder is not None
        for code in codes:  # as a connection does once the subscribe went out (the name is moot here)
            decoder.track(code, f"BENCH:{code}")
        feed, hit = decoder.feed, counter.hit

        def sink(frame: Any) -> None:
            feed(frame, time.time_ns() // 1_000_000)
            hit()

        ws.set_sink(sink, lambda: None)
        for frame in plugin.mdgate_subscribe(provider, config, codes) or ():
            await ws.send(frame)
        _say("READY")
        await asyncio.Event().wait()

    asyncio.run(go())


def main() -> None:
    """Run one SDK (or mdgate's receive and decode: ``mdgate-yahoo``, ``mdgate-dhan``) until told to quit."""
    sdk, url, codes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    counter = Counter()
    threading.Thread(target=_control, args=(counter,), daemon=True).start()
    if sdk == "yfinance":
        run_yfinance(url, codes, counter)
    elif sdk.startswith("mdgate-"):
        run_mdgate(sdk.removeprefix("mdgate-"), url, codes, counter)
    else:
        run_dhanhq(url, codes, counter)


if __name__ == "__main__":
    main()
