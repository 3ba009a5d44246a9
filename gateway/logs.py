"""Logging setup: every line on stderr is one JSON object, whoever logged it.

`JsonFormatter` renders a record as `{"ts", "level", "logger", ...}`. A record whose message
is a dict (the request log, gateway/requestlog.py) has its fields merged in at the top level,
so log pipelines can filter on `status` or `model` without parsing a string; any other
message becomes `msg`, with `exc` holding a formatted traceback when there is one.

Invariants: the output is valid JSON for every record (values orjson cannot encode are
rendered with `str`); the three envelope keys are never overwritten by a dict message's
fields; uvicorn's own loggers are routed through the same handler (see `cli.server_config`,
which passes `log_config=None` so uvicorn does not install its plain-text formatters).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

_ENVELOPE = ("ts", "level", "logger")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, dict) and not record.args:
            for key, value in record.msg.items():
                if key not in _ENVELOPE:
                    entry[str(key)] = value
        else:
            entry["msg"] = record.getMessage()
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send every logger's records, as JSON lines, to `stream` (stderr) from `level` up."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter())
    # force: replaces whatever an imported library configured before us.
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
