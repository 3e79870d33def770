"""Time buckets for the "requests over time" chart: a bucket size that gives tens of columns, not
thousands, whatever the period's length, and every bucket present (empty ones too)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from reports.period import Period


@dataclass(frozen=True, slots=True)
class Buckets:
    unit: str  # hour | day | week | month
    starts: tuple[dt.datetime, ...]

    def sql(self, column: str = "ts") -> str:
        """SQL expression mapping a timestamp to its bucket's start (matching `starts`)."""
        if self.unit == "month":
            return f"date_trunc('month', {column})"
        origin = self.starts[0].isoformat(sep=" ")
        return f"time_bucket(INTERVAL '1 {self.unit}', {column}, TIMESTAMP '{origin}')"

    def labels(self) -> list[str]:
        fmt = {"hour": "%m-%d %H:00", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m"}[self.unit]
        return [s.strftime(fmt) for s in self.starts]


def choose(period: Period) -> Buckets:
    span = period.end - period.start
    if span <= dt.timedelta(days=3):
        unit, step = "hour", dt.timedelta(hours=1)
        first = period.start.replace(minute=0, second=0, microsecond=0)
    elif span <= dt.timedelta(days=120):
        unit, step = "day", dt.timedelta(days=1)
        first = period.start.replace(hour=0, minute=0, second=0, microsecond=0)
    elif span <= dt.timedelta(days=731):
        unit, step = "week", dt.timedelta(weeks=1)
        first = period.start.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        starts: list[dt.datetime] = []
        cur = period.start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        while cur < period.end:
            starts.append(cur)
            cur = cur.replace(year=cur.year + (cur.month == 12), month=cur.month % 12 + 1)
        return Buckets("month", tuple(starts))
    starts = []
    cur = first
    while cur < period.end:
        starts.append(cur)
        cur += step
    return Buckets(unit, tuple(starts))
