"""gateway/logs.py: every record, whoever logs it and whatever it holds, is one JSON line."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.logs import JsonFormatter, configure_logging


def record(msg: object, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom \"quoted\"\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def parse(line: str) -> dict[str, object]:
    assert "\n" not in line
    parsed: dict[str, object] = orjson.loads(line)
    return parsed


def test_a_dict_message_becomes_top_level_fields_without_touching_the_envelope() -> None:
    line = JsonFormatter().format(record({"event": "request", "status": 200, "level": "fake",
                                          "path": Path("/x"), "ts": 0}))
    entry = parse(line)
    assert entry["event"] == "request" and entry["status"] == 200
    assert entry["level"] == "WARNING" and entry["logger"] == "gateway.test"
    assert entry["path"] == "/x"  # not JSON-encodable as such: rendered with str
    assert isinstance(entry["ts"], str) and entry["ts"].endswith("+00:00")
    assert "msg" not in entry


def test_text_messages_with_arguments_quotes_and_newlines_stay_one_line() -> None:
    entry = parse(JsonFormatter().format(record('backend %s said "%s"\nthen %d', "a", "no", 3)))
    assert entry["msg"] == 'backend a said "no"\nthen 3'


def test_exceptions_are_a_field() -> None:
    entry = parse(JsonFormatter().format(record("failed", exc=True)))
    assert entry["msg"] == "failed"
    assert "ValueError" in str(entry["exc"]) and "Traceback" in str(entry["exc"])


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_configure_logging_sends_every_logger_through_json_at_the_level() -> None:
    out = io.StringIO()
    configure_logging("warning", stream=out)
    logging.getLogger("gateway.requests").info({"event": "request"})  # below the level
    logging.getLogger("gateway.requests").warning({"event": "request", "status": 502})
    logging.getLogger("some.library").error("port %d in use", 8080)
    lines = out.getvalue().splitlines()
    entries = [parse(line) for line in lines]
    assert [e.get("status") for e in entries] == [502, None]
    assert entries[1]["msg"] == "port 8080 in use" and entries[1]["logger"] == "some.library"
