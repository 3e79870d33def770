"""Log output: JSON lines with UTC timestamps, the decision line's fields, connection noise off."""

from __future__ import annotations

import json
import logging
import types

import pytest
from mitmproxy import exceptions

from addons.core import logs


def record(msg: str, *args: object, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("phigate", logging.WARNING, __file__, 1, msg, args,
                          (type(exc), exc, None) if exc else None)
    r.__dict__.update(extra)
    return r


def test_json_lines_carry_utc_time_level_logger_message_and_extra_fields() -> None:
    line = logs.JsonFormatter().format(record("reloaded %s", "rules/policy.yaml", hold_id="h1"))
    doc = json.loads(line)
    assert "\n" not in line
    assert doc["ts"].endswith("Z") and doc["ts"][10] == "T"
    assert (doc["level"], doc["logger"], doc["msg"], doc["hold_id"]) == (
        "warning", "phigate", "reloaded rules/policy.yaml", "h1")


def test_an_exception_is_logged_by_type_only() -> None:
    # An exception's text and traceback can quote request data (a body, a header).
    doc = json.loads(logs.JsonFormatter().format(record("failed", exc=ValueError("MRN 1234567"))))
    assert doc["exc_type"] == "ValueError" and "1234567" not in json.dumps(doc)


def test_the_decision_line_has_exactly_the_listed_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "phigate.decision")
    logs.decision(request_id="r1", subject="alice", backend="chroma", operation="search", collection="notes",
                  decision="allow", rule="allow-search", status=200, latency_ms=3.2, reason=None, hold_id=None,
                  path="/secret/path")
    (r,) = caplog.records
    doc = json.loads(logs.JsonFormatter().format(r))
    assert doc["msg"] == "decision"
    assert {k for k in doc if k not in ("ts", "level", "logger", "msg")} == set(logs.DECISION_FIELDS)
    assert "/secret/path" not in json.dumps(doc) and "/secret/path" not in r.getMessage()
    assert "subject=alice" in r.getMessage() and "status=200" in r.getMessage()


def test_connection_lines_are_off_unless_asked_for() -> None:
    conn = logging.getLogger(logs.CONNECTION_LOGGER)
    logs.configure(set(), types.SimpleNamespace(phigate_log_connections=False))
    assert not conn.isEnabledFor(logging.INFO) and conn.isEnabledFor(logging.WARNING)
    logs.configure({"phigate_log_connections"}, types.SimpleNamespace(phigate_log_connections=True))
    assert conn.level == logging.NOTSET  # back to the console's verbosity
    logs.set_connections(False)


@pytest.mark.parametrize("bad", ["JSON", "yaml", ""])
def test_an_unknown_log_format_is_refused_naming_the_choices(bad: str) -> None:
    opts = types.SimpleNamespace(phigate_log_format=bad, phigate_log_connections=False)
    with pytest.raises(exceptions.OptionsError, match=f"phigate_log_format: got {bad!r}, expected one of text, json"):
        logs.configure({"phigate_log_format"}, opts)
