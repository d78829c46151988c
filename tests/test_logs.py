"""Logs: JSON lines with the alert's id, no phone number in clear, never a credential."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import subprocess
import sys
import threading

import pytest
import structlog

from alertd import errors, logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def capture():
    """Configure logging into a buffer; put the process's logging back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level for name in logs.QUIET})
    hooks = (sys.excepthook, sys.unraisablehook, threading.excepthook)  # configure() takes them over
    buffers = []

    def configure(level="info", fmt="auto", stream=None):
        stream = stream if stream is not None else io.StringIO()
        buffers.append(stream)
        logs.configure(level, fmt, stream)
        return stream

    yield configure
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
    sys.excepthook, sys.unraisablehook, threading.excepthook = hooks


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_alert_id_bound_in_context(capture):
    out = capture()
    structlog.contextvars.bind_contextvars(alert_id="alr-42")
    structlog.get_logger("alertd.dispatcher").info("batch_sent", count=3)
    logging.getLogger("aiohttp.client").warning("connection reset")
    first, second = lines(out)
    assert first["event"] == "batch_sent" and first["count"] == 3 and first["level"] == "info"
    assert first["alert_id"] == second["alert_id"] == "alr-42"
    assert second["logger"] == "aiohttp.client" and second["event"] == "connection reset"
    assert first["timestamp"].endswith("Z")


def test_phone_numbers_and_push_tokens_are_masked_everywhere(capture):
    out = capture()
    log = structlog.get_logger("alertd.test")
    log.info("sending", to="+33612345678", push_token="fcm-token-abcdef123", note="retry +33698765432 later")
    logging.getLogger("aiohttp.client").warning("failed for %s", "+33611111222")
    text = out.getvalue()
    for clear in ("+33612345678", "fcm-token-abcdef", "+33698765432", "+33611111222"):
        assert clear not in text
    first, second = lines(out)
    assert first["to"] == "…678" and first["push_token"] == "…123"
    assert first["note"] == "retry …432 later"
    assert second["event"] == "failed for …222"


def test_credentials_are_never_printed(capture):
    out = capture(level="debug")
    log = structlog.get_logger("alertd.test")
    log.info("configured", auth_token="tw-s3cr3t", headers={"Authorization": "Bearer fcm-s3cr3t"})
    log.info("calling gateway", detail="Authorization: Basic QUM6czNjcjN0")
    # The twilio client logs its request headers at DEBUG: that logger stays at WARNING.
    logging.getLogger("twilio.http_client").debug("Headers: Authorization: Basic twilio-s3cr3t")
    logging.getLogger("twilio.http_client").info("-- BEGIN Twilio API Request -- twilio-s3cr3t")
    text = out.getvalue()
    assert "s3cr3t" not in text and "QUM6czNjcjN0" not in text
    first, second = lines(out)
    assert first["auth_token"] == "***" and first["headers"] == {"Authorization": "***"}
    assert second["detail"] == "Authorization: Basic ***"


def test_exceptions_are_rendered_and_redacted(capture):
    out = capture()
    try:
        raise RuntimeError("rejected +33612345678")
    except RuntimeError:
        structlog.get_logger("alertd.test").exception("send_failed")
    (line,) = lines(out)
    assert "RuntimeError: rejected …678" in line["exception"]


def test_key_value_lines_on_a_terminal(capture):
    out = capture(stream=Terminal())
    structlog.get_logger("alertd.test").info("started", listen="127.0.0.1:8080", auth_token="x")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colours on a terminal
    assert "started" in text and "listen=127.0.0.1:8080" in text and "auth_token=***" in text
    assert not text.startswith("{")


def test_level_filters_lines(capture):
    out = capture(level="warning")
    structlog.get_logger("alertd.test").info("hidden")
    structlog.get_logger("alertd.test").warning("shown")
    assert [line["event"] for line in lines(out)] == ["shown"]


def test_unknown_level_or_format_is_a_configuration_error(capture):
    with pytest.raises(errors.ConfigError):
        capture(level="chatty")
    with pytest.raises(errors.ConfigError):
        capture(fmt="xml")


# What Python would print itself: an uncaught exception, one in a destructor, one in a thread, a
# task's exception never retrieved. Each must come out as one JSON line, redacted like any other.
UNRULY = """
import asyncio, gc, threading
from alertd import logs

logs.configure("info", "auto")

class Broken:
    def __del__(self):
        raise RuntimeError("in a destructor")

async def fail():
    raise ValueError("never retrieved +33612345678")

async def main():
    logs.watch(asyncio.get_running_loop())
    task = asyncio.ensure_future(fail())
    await asyncio.sleep(0)
    del task
    gc.collect()

asyncio.run(main())
Broken()
gc.collect()
thread = threading.Thread(target=lambda: 1 / 0, name="worker")
thread.start()
thread.join()
raise LookupError("uncaught")
"""


def test_what_python_would_print_itself_is_logged_as_json():
    done = subprocess.run([sys.executable, "-c", UNRULY], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stderr.splitlines()]  # every line, or it fails here
    by_error = {r["exception"].strip().rsplit("\n", 1)[-1]: r for r in records}
    assert set(by_error) == {
        "ValueError: never retrieved …678", "RuntimeError: in a destructor",
        "ZeroDivisionError: division by zero", "LookupError: uncaught",
    }
    assert by_error["ValueError: never retrieved …678"]["event"] == "Task exception was never retrieved"
    assert by_error["LookupError: uncaught"]["level"] == "critical"


def test_a_time_is_logged_as_iso_8601_not_as_a_python_repr(capture):
    out = capture()
    when = dt.datetime(2026, 12, 4, 21, 12, 31, tzinfo=dt.UTC)
    structlog.get_logger("alertd.dispatcher").info("delivery failed", retry_at=when)
    assert lines(out)[0]["retry_at"] == "2026-12-04T21:12:31+00:00"
