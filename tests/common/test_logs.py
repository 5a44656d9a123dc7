"""Structured logs: plain key=value lines or one JSON object per line."""

import io
import json
import logging

import pytest

from common.logs import fields, setup_logging


@pytest.fixture(autouse=True)
def restore_root():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_lines_carry_the_event_fields():
    out = io.StringIO()
    setup_logging("json", stream=out)
    logging.getLogger("rosetta.test").info("round committed", extra=fields(round=3, nodes=4))
    doc = json.loads(out.getvalue())
    assert doc["msg"] == "round committed" and doc["round"] == 3 and doc["level"] == "INFO"
    assert doc["logger"] == "rosetta.test" and doc["ts"].endswith("Z")


def test_plain_lines_are_key_value():
    out = io.StringIO()
    setup_logging("plain", stream=out)
    logging.getLogger("rosetta.test").warning("upload rejected", extra=fields(reason="nan"))
    line = out.getvalue().strip()
    assert line.endswith("WARNING rosetta.test upload rejected reason=nan")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="log format"):
        setup_logging("xml")
