"""Structured logs: JSON lines in production, key=value on a terminal, never a secret.

Everything goes through the standard library's root logger, so aiohttp's, twilio's and our own
structlog lines come out in one format, each carrying the context bound with
``structlog.contextvars.bind_contextvars(alert_id=...)``. `redact` runs last on every line. What
Python itself would print to stderr (an uncaught exception, one ignored in a destructor, one in a
thread, an asyncio loop's "Task exception was never retrieved") is logged the same way: in
production every line on stderr is JSON.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from alertd import errors, model

# Phone numbers and push tokens: only their last characters are logged.
MASKED = frozenset({"phone", "to", "address", "push_token", "token"})
# Credentials: never logged at all.
HIDDEN = frozenset({"auth_token", "secret", "password", "authorization", "api_key", "token_secret"})
E164 = re.compile(r"(?<![\w+])\+\d{8,15}(?!\d)")
CREDENTIAL = re.compile(r"(?i)\b(basic|bearer)\s+[\w.~+/=-]+")
# At WARNING at least, whatever the level: the twilio client logs request headers, Basic
# credentials included, at DEBUG; hpack logs decoded HTTP/2 headers (FCM's bearer token) at DEBUG;
# APScheduler logs every run of every job (housekeeping runs each second) at INFO.
QUIET = ("twilio", "hpack", "apscheduler")

_handler: logging.Handler | None = None
_python = logging.getLogger("python")  # the voice of what Python would print itself


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """A structlog processor: masks addresses, hides credentials, wherever they appear."""
    return {key: _clean(key, value) for key, value in event_dict.items()}


def _clean(key: Any, value: Any) -> Any:
    name = key.lower() if isinstance(key, str) else None
    if name in HIDDEN:
        return "***"
    if name in MASKED and isinstance(value, str):
        return model.mask(value)
    if isinstance(value, str):
        return CREDENTIAL.sub(r"\1 ***", E164.sub(lambda m: model.mask(m.group()), value))
    if isinstance(value, Mapping):
        return {k: _clean(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and name != "exc_info":
        return [_clean(None, v) for v in value]
    return value


def configure(level: str = "info", fmt: str = "auto", stream: TextIO = sys.stderr) -> None:
    """Send every log line to `stream`; call again to reconfigure (tests do)."""
    global _handler
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise errors.ConfigError(problems=[f"log.level: unknown level {level!r}"])
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream)
    _handler.setFormatter(_formatter(_renderer(fmt, stream)))
    root.addHandler(_handler)
    root.setLevel(numeric)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # Under a big fan-out a housekeeping pass can outlast its 1 s interval; APScheduler then warns
    # that it skipped the next one. That is the intended behaviour (max_instances=1), not news.
    logging.getLogger("apscheduler.scheduler").setLevel(max(numeric, logging.ERROR))
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    sys.unraisablehook = _unraisable
    threading.excepthook = _thread_uncaught
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Loggers created at import time must follow a later configure(): no caching.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A logger, for a module that has no other use for structlog."""
    return structlog.get_logger(name)


def watch(loop: asyncio.AbstractEventLoop) -> None:
    """Log what the loop reports (a task's exception never retrieved, a callback's failure) here."""
    loop.set_exception_handler(_loop_exception)


def _loop_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    detail = {k: repr(v) for k, v in context.items() if k not in ("message", "exception")}
    structlog.get_logger("asyncio").error(
        context.get("message", "unhandled exception in the event loop"),
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None, **detail,
    )


def _uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    _python.critical("uncaught exception", exc_info=(kind, exc, tb))


def _unraisable(unraisable: Any) -> None:
    exc = unraisable.exc_value
    info = (unraisable.exc_type, exc, unraisable.exc_traceback) if exc is not None else None
    where = unraisable.err_msg or "Exception ignored in"
    _python.error("%s: %r", where, unraisable.object, exc_info=info)


def _thread_uncaught(args: Any) -> None:
    if args.exc_type is SystemExit:  # a thread's way to end, as for the default hook
        return
    info = (args.exc_type, args.exc_value, args.exc_traceback)
    _python.error("uncaught exception in thread %s", getattr(args.thread, "name", "?"), exc_info=info)


def _shared() -> list[Any]:
    """What both structlog's and the standard library's records go through first."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(fmt: str, stream: TextIO) -> Any:
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if fmt == "json" or (fmt == "auto" and not tty):
        return structlog.processors.JSONRenderer(ensure_ascii=False, default=_jsonable)
    if fmt in ("auto", "console"):
        return structlog.dev.ConsoleRenderer(colors=tty, exception_formatter=structlog.dev.plain_traceback)
    raise errors.ConfigError(problems=[f"log.format: expected auto, json or console, got {fmt!r}"])


def _formatter(renderer: Any) -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text first so that redact sees (and masks) what they contain.
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


def _jsonable(value: Any) -> Any:
    """What JSON has no type for: a time as ISO 8601 (`"2026-12-04T21:12:31+00:00"`, not a repr)."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return repr(value)
