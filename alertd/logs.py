"""Structured logs: JSON lines in production, key=value on a terminal, never a secret.

Everything goes through the standard library's root logger, so aiohttp's, twilio's and our own
structlog lines come out in one format, each carrying the context bound with
``structlog.contextvars.bind_contextvars(alert_id=...)``. `redact` runs last on every line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
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


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
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
        return structlog.processors.JSONRenderer(ensure_ascii=False)
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
