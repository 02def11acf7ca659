"""Tracebacks in the log never show frame locals (a local may hold a client's token)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from mdgate._config import LoggingSettings
from mdgate._logging import configure_logging

SECRET = "tok-3f9a1c-SECRET"


def handle_request(raw: str) -> None:
    token = raw.split()[1]  # a local holding the client's token, as in a request handler
    assert token
    raise ValueError("malformed request")


def fail_in_group(raw: str) -> None:
    try:
        handle_request(raw)
    except ValueError as exc:
        password = SECRET + "-pw"
        assert password
        raise ExceptionGroup("task group failed", [exc, RuntimeError("second")]) from None


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_carry_frame_locals(fmt: str) -> None:
    out = io.StringIO()
    configure_logging(LoggingSettings(level="debug", format=fmt), stream=out)
    raw = f"subscribe {SECRET} NSE:RELIANCE"
    try:
        handle_request(raw)
    except ValueError:
        structlog.get_logger("mdgate.test").exception("request_failed")
    try:
        handle_request(raw)
    except ValueError:  # a library logging through the standard library (websockets, asyncio)
        logging.getLogger("websockets.server").exception("connection handler failed")
    try:
        fail_in_group(raw)
    except ExceptionGroup:
        structlog.get_logger("mdgate.test").exception("run_failed")
    text = out.getvalue()
    # the tracebacks are there: frames, types and messages ...
    for expected in ("request_failed", "connection handler failed", "run_failed",
                     "handle_request", "malformed request", "ValueError", "fail_in_group"):
        assert expected in text
    # ... but no frame's locals
    assert SECRET not in text
