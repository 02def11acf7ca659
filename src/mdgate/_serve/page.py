"""
The status page: ``GET /`` and its assets under ``GET /static/``.

The page is static HTML, CSS and JavaScript shipped inside the package
(``mdgate/_serve/static/``): no build step and no CDN, so that it works on a
machine with no internet. It holds no data itself: the browser reads
``/status`` and subscribes over ``/ws`` like any client, with the token it
was opened with (``/?token=...``). Only files that exist in that folder are
served, read once and kept (the folder is a few kilobytes).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

from websockets.http11 import Response

from mdgate._serve.http import bytes_response

__all__ = ["page_response"]

_TYPES: Final = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
}
#: Security headers of every page response: nothing from elsewhere, no framing.
_HEADERS: Final = (
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy",
     "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'"),
)


@functools.cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """Every file of the static folder: name -> (bytes, content type)."""
    folder = resources.files("mdgate._serve") / "static"
    out: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        kind = _TYPES.get(entry.name.rpartition(".")[2])
        if kind is not None and entry.is_file():
            out[entry.name] = (entry.read_bytes(), kind)
    return out


def page_response(path: str) -> Response | None:
    """
    The response for ``/`` (the page) or ``/static/NAME`` (an asset), or None
    when ``path`` names no file of the page. Names are looked up in the list of
    shipped files, never joined to a filesystem path.
    """
    name = "index.html" if path == "/" else path.removeprefix("/static/")
    found = _assets().get(name)
    if found is None:
        return None
    body, kind = found
    return bytes_response(200, body, kind, _HEADERS)
