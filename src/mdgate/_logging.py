"""
Logging configuration: called once, by the CLI only.

structlog renders JSON lines (one event per line; for machines) unless the
output is a terminal, where it uses the console renderer. Standard-library
loggers (websockets, redis, psycopg) go through the same pipeline at WARNING.

Tracebacks never carry frame locals, in either format: a local may hold a
token, a password or a client's message, and a log line is not the place for
them. JSON logs get structlog's dict tracebacks with ``show_locals=False``;
the console gets a plain standard-library traceback (no rich/better-exceptions
locals, even when those packages are installed).
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Final, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import ExcInfo

from mdgate._config import LoggingSettings

__all__ = ["configure_logging", "plain_traceback"]

#: Frames kept per traceback (the first and last halves of a deeper stack).
MAX_FRAMES: Final = 50


def plain_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """Write ``exc_info``'s traceback to ``sio`` without frame locals (console renderer)."""
    sio.write("\n")
    exc = traceback.TracebackException(*exc_info, capture_locals=False)
    sio.write("".join(exc.format()).rstrip("\n"))


def configure_logging(settings: LoggingSettings, *, stream: object = None) -> None:
    """Configure structlog and stdlib logging from ``[logging]``."""
    out = stream or sys.stderr
    fmt = settings.format
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    level = getattr(logging, settings.level.upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False, max_frames=MAX_FRAMES, use_rich=False)
        ))
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=getattr(out, "isatty", lambda: False)(), exception_formatter=plain_traceback,
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        # not cached: `mdgate run` reconfigures after the CLI configured warnings-only
        # logging, and nothing logs per tick, so the proxy lookup costs nothing that matters
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))
