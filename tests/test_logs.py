"""Log lines: logfmt quoting as go-kit writes it, JSON objects, and fields passed through `extra=`."""

from __future__ import annotations

import json
import logging

import pytest

from relay.logs import JsonFormatter, LogfmtFormatter


def record(message: str, level: int = logging.WARNING, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("relay.server", level, __file__, 1, message, (), None)
    for key, value in fields.items():
        setattr(made, key, value)
    return made


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ('a "quote"', '"a \\"quote\\""'),
        ("key=value", '"key=value"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("", '""'),
        (42, "42"),
        ("ünïcode", "ünïcode"),
    ],
)
def test_logfmt_quotes_values_only_when_needed(value, written):
    """A value goes out bare unless a blank, `=`, quote, backslash or control character needs quoting."""
    line = LogfmtFormatter().format(record("scrape failed", error=value))
    assert line.endswith(f" error={written}")


def test_logfmt_line_has_time_level_logger_message_then_fields():
    """The fixed keys come first, in order, then the fields given with extra=."""
    line = LogfmtFormatter().format(record("scrape failed", upstream="ack", after_bytes=0))
    keys = [pair.split("=", 1)[0] for pair in line.split(" ")]
    assert keys[:4] == ["ts", "level", "logger", "msg"]
    assert line.split(" ")[1] == "level=warn"
    assert line.endswith('msg="scrape failed" upstream=ack after_bytes=0')


def test_json_is_one_object_a_line_with_the_same_fields():
    """JSON lines carry the same keys as logfmt, values as given (numbers stay numbers)."""
    line = JsonFormatter().format(record("scrape failed", logging.ERROR, upstream="ack", after_bytes=12))
    fields = json.loads(line)
    assert "\n" not in line
    assert fields["level"] == "error"
    assert fields["msg"] == "scrape failed"
    assert (fields["upstream"], fields["after_bytes"]) == ("ack", 12)
    assert fields["ts"].endswith("Z")


def test_an_exception_goes_into_one_field():
    """A logged traceback is one `exc` field, not extra lines that break line-based log shippers."""
    error = ValueError("boom")
    made = logging.LogRecord("relay", logging.ERROR, __file__, 1, "unexpected", (), (ValueError, error, None))
    line = LogfmtFormatter().format(made)
    assert "\n" not in line
    assert "ValueError: boom" in line
