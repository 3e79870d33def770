"""Prometheus metrics: the one registry, and the small recording helpers the chain calls.

Served on the admin listener at `/metrics` (addons/holds/admin.py). Labels carry only bounded,
PHI-free values (backend, operation kind, decision, status code, refusal stage and reason,
identifier type, hold outcome): never a subject, a collection name, a path or a value.

One process: prometheus_client's default registry. Behind `--workers N`: its multiprocess mode.
The supervisor sets PROMETHEUS_MULTIPROC_DIR for every worker (addons/runtime/workers.py), each
worker writes its values to memory-mapped files there, and whichever worker the kernel hands a
scrape to (they share the admin port) sums every worker's files: the gateway is one scrape
target, its counters the total over workers, and a restarted worker's counts are kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Gateway-added time is milliseconds; upstream and human waits are longer.
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("phigate_requests", "Requests through the gateway, by outcome.",
                   ["backend", "operation", "decision", "status"])
GATEWAY_SECONDS = Histogram("phigate_gateway_added_seconds",
                            "Time the gateway added to a request (total minus upstream and approval waits).",
                            ["backend"], buckets=_FAST)
UPSTREAM_SECONDS = Histogram("phigate_upstream_seconds",
                             "Time from forwarding a request to the backend's complete response.",
                             ["backend"], buckets=_SLOW)
REFUSALS = Counter("phigate_refusals", "Requests the gateway answered itself with an error, by stage and reason.",
                   ["stage", "reason"])
MASKED = Counter("phigate_masked_values", "Values masked in responses, by identifier type.", ["type"])
HOLDS = Counter("phigate_holds", "Held requests that ended, by outcome (timeout = expired).", ["outcome"])
HOLD_DECISION_SECONDS = Histogram("phigate_hold_decision_seconds", "Time from a hold to its decision or expiry.",
                                  buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
AUDIT_BATCH = Histogram("phigate_audit_batch_records", "Records per audit group commit (one fsync each).",
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
AUDIT_FSYNC_SECONDS = Histogram("phigate_audit_fsync_seconds", "Duration of each audit write-ahead fsync.",
                                buckets=_FAST)
AUDIT_LAG_SECONDS = Histogram("phigate_audit_commit_lag_seconds",
                              "Ledger lag: time from staging an audit record to it being durable.", buckets=_FAST)
JWKS_REFRESHES = Counter("phigate_jwks_refreshes", "Fetches of the issuer's signing keys, by result.", ["result"])
RULE_RELOADS = Counter("phigate_rule_reloads", "Rule-file reloads after an edit: applied, or rejected "
                       "(the last good rules stay).", ["result"])


def _multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


# ------------------------------------------------------------------ recording helpers (hot path: cheap)

def request_done(backend: str, operation: str, decision: str, status: int | None) -> None:
    REQUESTS.labels(backend, operation, decision, str(status) if status is not None else "none").inc()


def latency(backend: str, gateway_s: float, upstream_s: float | None) -> None:
    GATEWAY_SECONDS.labels(backend).observe(max(0.0, gateway_s))
    if upstream_s is not None:
        UPSTREAM_SECONDS.labels(backend).observe(max(0.0, upstream_s))


def refusal(stage: str, reason: str) -> None:
    REFUSALS.labels(stage, reason).inc()


def masked(counts_by_type: Mapping[str, int]) -> None:
    for kind, n in counts_by_type.items():
        if n:
            MASKED.labels(kind).inc(n)


def hold_ended(outcome: str, seconds: float | None) -> None:
    HOLDS.labels(outcome).inc()
    if seconds is not None:
        HOLD_DECISION_SECONDS.observe(max(0.0, seconds))


def audit_committed(records: int, oldest_staged_at: float | None) -> None:
    """One group commit: its size, and how long its oldest record waited to become durable."""
    AUDIT_BATCH.observe(records)
    if oldest_staged_at is not None:
        AUDIT_LAG_SECONDS.observe(max(0.0, time.time() - oldest_staged_at))


def fsync_seconds(seconds: float) -> None:
    AUDIT_FSYNC_SECONDS.observe(seconds)


def jwks_refresh(ok: bool) -> None:
    JWKS_REFRESHES.labels("ok" if ok else "failed").inc()


def rule_reload(applied: bool) -> None:
    RULE_RELOADS.labels("applied" if applied else "rejected").inc()


# ------------------------------------------------------------------ exposition

class _Static(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class _Chain(Collector):
    """The process's default registry plus the families computed at scrape time."""

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for c in self._collectors:
            yield from c.collect()


def gauge(name: str, help_: str, value: float) -> Metric:
    """A gauge computed at scrape time (e.g. holds pending, read from the shared store)."""
    family = GaugeMetricFamily(name, help_)
    family.add_metric([], value)
    return family


def exposition(scrape_time: Iterable[Metric] = ()) -> bytes:
    """The text exposition of every metric: this process's, or every worker's summed."""
    registry = CollectorRegistry()
    extra = _Static(scrape_time)
    mp = _multiproc_dir()
    if mp:
        MultiProcessCollector(registry, path=mp)  # type: ignore[no-untyped-call]
        registry.register(extra)
    else:
        registry.register(_Chain(REGISTRY, extra))
    return generate_latest(registry)

