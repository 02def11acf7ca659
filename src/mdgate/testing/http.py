"""Local HTTP fakes for tests: a provider's REST API served on loopback from a handler class."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["QuietHandler", "serve_http"]


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers JSON with :meth:`reply_json`."""

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test's output clean (the default writes every request to stderr)."""

    def reply(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        """Answer ``status`` with ``data``."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def reply_json(self, status: int, body: Any) -> None:
        """Answer ``status`` with ``body`` as JSON."""
        self.reply(status, json.dumps(body).encode())


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """
    Serve ``handler`` on a free port of 127.0.0.1 in a thread; yield ``http://127.0.0.1:PORT``.

    The server is shut down and its thread joined on exit.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
