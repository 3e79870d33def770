"""What operators see of each flow: its metrics and its decision log line, from one place.

The audit addon calls `forwarding()` at the end of the request chain (the moment the request
leaves for the backend) and `flow_done()` once the flow's event is built, with that event: the
same facts go to the ledger, the metrics and the log, so they never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mitmproxy import http

from addons.core import logs, metrics
from addons.core.context import context


def forwarding(flow: http.HTTPFlow) -> None:
    context(flow).forwarded_at = time.time()


def _hold_wait(flow: http.HTTPFlow) -> float:
    h = context(flow).hold
    if h is None or h.decided_at is None:
        return 0.0
    return max(0.0, h.decided_at - h.requested_at)


def flow_done(flow: http.HTTPFlow, event: Mapping[str, Any]) -> None:
    """Record one finished flow (called by the audit addon with the flow's audit event)."""
    c = context(flow)
    total = time.monotonic() - c.started_mono
    resp = flow.response
    upstream = None
    if resp is not None and not c.answered_by_gateway and c.forwarded_at is not None and resp.timestamp_end:
        upstream = max(0.0, resp.timestamp_end - c.forwarded_at)
    hold_wait = _hold_wait(flow)
    gateway = total - (upstream or 0.0) - hold_wait
    backend = str(event.get("backend") or "none")
    operation = str(event.get("operation") or "none")
    # The status the client got: the audit may have replaced the response after building the event.
    status = resp.status_code if resp is not None else None
    decision = str(event.get("decision") or "none")
    metrics.request_done(backend, operation, decision, status)
    metrics.latency(backend, gateway, upstream)
    if c.refusal is not None:
        metrics.refusal(c.refusal.stage.value, c.refusal.error)
    elif flow.error is not None:
        metrics.refusal("upstream", "upstream_error")
    if c.masking is not None:
        metrics.masked(c.masking.counts_by_type)
    h = c.hold
    if h is not None and h.state != "pending":
        metrics.hold_ended(h.state, hold_wait if h.decided_at is not None else None)
    rules = event.get("rule_ids") or []
    logs.decision(
        request_id=c.request_id, subject=event.get("subject"), backend=backend, operation=operation,
        collection=event.get("collection"), decision=decision, rule=rules[-1] if rules else None,
        status=status, latency_ms=round(total * 1000.0, 3),
        reason=c.refusal.error if c.refusal is not None else None, hold_id=event.get("hold_id"),
    )
