"""Typed rows of the hold store and the errors its decisions raise."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class HoldState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    BREAK_GLASS = "break_glass"
    GRANTED = "granted"



class DecisionError(Exception):
    """An approver's request that cannot be carried out; `status` is the admin API's answer."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Actor:
    """A verified person acting on the admin API (from their own OIDC token)."""

    subject: str
    issuer: str
    roles: frozenset[str]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class NewHold:
    """What the Approvals addon knows about a flow it is about to hold. PHI-free by construction:
    `summary` holds only keys, counts and types, and `path` has no query string."""

    hold_id: str
    kind: str  # hold | break_glass
    request_id: str
    requester: str
    requester_issuer: str
    requester_name: str | None
    rule_id: str | None
    reason: str | None
    backend: str | None
    operation: str | None
    route: str | None
    collection: str | None
    method: str
    path: str
    summary: Mapping[str, Any]
    request_hash: str
    approver_roles: frozenset[str]
    approvals_required: int
    requested_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Hold(NewHold):
    """A stored hold: what was held plus where it is held and how it stands."""

    state: HoldState
    node_id: str
    instance_id: str
    decided_at: float | None
    approvers: tuple[str, ...]
    justification: str | None
    approvals: tuple[Mapping[str, Any], ...] = field(default=())

    def public(self, now: float) -> dict[str, Any]:
        """The JSON the admin API and console show: no raw request, no token."""
        return {
            "hold_id": self.hold_id, "kind": self.kind, "state": str(self.state), "node_id": self.node_id,
            "request_id": self.request_id, "requester": self.requester, "requester_name": self.requester_name,
            "rule_id": self.rule_id, "reason": self.reason, "backend": self.backend,
            "operation": self.operation, "route": self.route, "collection": self.collection,
            "method": self.method, "path": self.path, "summary": dict(self.summary),
            "request_hash": self.request_hash, "approver_roles": sorted(self.approver_roles),
            "approvals_required": self.approvals_required, "requested_at": self.requested_at,
            "expires_at": self.expires_at, "seconds_left": max(0.0, round(self.expires_at - now, 1)),
            "decided_at": self.decided_at, "approvers": list(self.approvers),
            "justification": self.justification, "approvals": [dict(a) for a in self.approvals],
        }


@dataclass(frozen=True, slots=True)
class Grant:
    """A time-bound window: `subject` may run `operation` on `collection` without a new hold."""

    grant_id: str
    subject: str
    operation: str
    collection: str
    granted_by: str
    granted_by_roles: frozenset[str]
    justification: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None

    def public(self, now: float) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id, "subject": self.subject, "operation": self.operation,
            "collection": self.collection, "granted_by": self.granted_by,
            "justification": self.justification, "created_at": self.created_at,
            "expires_at": self.expires_at, "seconds_left": max(0.0, round(self.expires_at - now, 1)),
            "active": self.revoked_at is None and self.expires_at > now,
            "revoked_at": self.revoked_at, "revoked_by": self.revoked_by,
        }
