"""Structured logs for the daemons: one line per event, plain text or JSON.

    log.info("round committed", extra=fields(round=3, nodes=4))

plain:  2026-12-04T23:41:05.378Z INFO coordinator round committed round=3 nodes=4
json:   {"ts": "...", "level": "INFO", "logger": "coordinator", "msg": "round committed", "round": 3, ...}
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

FORMATS = ("plain", "json")


def fields(**values: Any) -> dict[str, Any]:
    """The `extra` argument that attaches key/value fields to a log record."""
    return {"fields": values}


def _ts(record: logging.LogRecord) -> str:
    t = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = getattr(record, "fields", {})
        tail = "".join(f" {k}={v}" for k, v in extra.items())
        line = f"{_ts(record)} {record.levelname} {record.name} {record.getMessage()}{tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(fmt: str = "plain", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger to one handler on stderr (journald picks it up under systemd)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
