"""The gateway's log output: text or JSON lines, one decision line per request, no connection noise.

    --set phigate_log_format=json        one JSON object per line, UTC timestamps
    --set phigate_log_connections=true   mitmproxy's per-connection lines (off by default)

JSON replaces the formatter of mitmproxy's console handler (termlog), so every line, the
gateway's and mitmproxy's own, comes out in one format on one stream. The decision line carries
only the fields listed in DECISION_FIELDS: identifiers of the caller and of the rule, never a
token, a path, a query or a body (where PHI would travel).
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import orjson
from mitmproxy import exceptions

log = logging.getLogger("phigate.decision")

FORMATS = ("text", "json")
DECISION_FIELDS = ("request_id", "subject", "backend", "operation", "collection", "decision", "rule",
                   "status", "latency_ms", "reason", "hold_id")
# mitmproxy's connection handler logs "client connect", "server disconnect ..." at INFO for every
# connection: noise at any load, and a line per connection an operator cannot act on.
CONNECTION_LOGGER = "mitmproxy.proxy.server"
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def utc_iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC), level, logger, msg, and the record's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": utc_iso(record.created), "level": record.levelname.lower(),
                               "logger": record.name, "msg": getattr(record, "_json_msg", None) or record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: a traceback's locals and messages can quote request data.
            out["exc_type"] = record.exc_info[0].__name__
        return orjson.dumps(out).decode()


def json_line(logger: str, message: str, level: str = "info") -> str:
    """One JSON log line written outside the logging system (the launcher, before mitmproxy starts)."""
    return orjson.dumps({"ts": utc_iso(time.time()), "level": level, "logger": logger, "msg": message}).decode()


def _console_handlers() -> list[logging.Handler]:
    from mitmproxy.addons.termlog import TermLogHandler

    return [h for h in logging.getLogger().handlers if isinstance(h, TermLogHandler)]


_text_formatters: dict[int, logging.Formatter | None] = {}


def set_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"phigate_log_format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
    for h in _console_handlers():
        _text_formatters.setdefault(id(h), h.formatter)
        h.setFormatter(JsonFormatter() if fmt == "json" else _text_formatters[id(h)])


def set_connections(on: bool) -> None:
    logging.getLogger(CONNECTION_LOGGER).setLevel(logging.NOTSET if on else logging.WARNING)


def add_options(add: Any) -> None:
    """Declare the log options (called from the gateway addon's `load`)."""
    add("phigate_log_format", str, "text", "Log line format: text, or json (one object per line, UTC "
        "timestamps).")
    add("phigate_log_connections", bool, False, "Log mitmproxy's client/server connect and disconnect lines.")


def configure(updated: set[str], options: Any) -> None:
    """Apply the log options (called from the gateway addon's `configure`)."""
    if "phigate_log_format" in updated:
        try:
            set_format(str(options.phigate_log_format))
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from exc
    # Every time, not only when updated: mitmproxy announces an option to `configure` only once it
    # changes, and the default (off) must hold from the first configure on.
    set_connections(bool(options.phigate_log_connections))


def decision(**fields: Any) -> None:
    """The one line per request an operator reads: who, what, which rule, what came back, how fast."""
    if not log.isEnabledFor(logging.INFO):
        return
    extra = {k: fields.get(k) for k in DECISION_FIELDS}
    text = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
    log.info("decision %s", text, extra={**extra, "_json_msg": "decision"})
