"""The reporting period: [start, end) in UTC, parsed from the CLI's --from/--to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


class PeriodError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.datetime  # inclusive, naive UTC (the ledger's TIMESTAMP columns are naive UTC)
    end: dt.datetime  # exclusive

    @property
    def label(self) -> str:
        last = self.end - dt.timedelta(microseconds=1)
        if self.start.time() == dt.time(0) and self.end.time() == dt.time(0):
            return f"{self.start:%Y-%m-%d} to {last:%Y-%m-%d} (UTC, inclusive)"
        return f"{self.start:%Y-%m-%d %H:%M:%S} to {self.end:%Y-%m-%d %H:%M:%S} UTC (end exclusive)"

    def sql_bounds(self) -> tuple[str, str]:
        """SQL TIMESTAMP literals. Built from datetimes, never from user text, so safe to inline."""
        return (f"TIMESTAMP '{self.start.isoformat(sep=' ')}'", f"TIMESTAMP '{self.end.isoformat(sep=' ')}'")


def _parse(value: str, what: str) -> tuple[dt.datetime, bool]:
    """A date (YYYY-MM-DD) or an ISO datetime; returns (naive UTC datetime, was_date_only)."""
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(0)), True
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PeriodError(f"{what}: cannot read {value!r}; expected a date YYYY-MM-DD or an ISO 8601 time") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed, False


def parse_period(date_from: str, date_to: str) -> Period:
    """--to is inclusive when it is a date (the whole day), exclusive when it is a time."""
    start, _ = _parse(date_from, "--from")
    end, date_only = _parse(date_to, "--to")
    if date_only:
        end += dt.timedelta(days=1)
    if end <= start:
        raise PeriodError(f"--to ({date_to}) is before --from ({date_from}); expected --from <= --to")
    return Period(start, end)
