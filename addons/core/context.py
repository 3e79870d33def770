"""The `flow.metadata` contract every phigate addon reads and writes.

One namespace (`flow.metadata["phigate"]`) holds one `FlowContext` per flow. Each addon in the
chain fills in its own part and reads what earlier addons decided:

    identity  -> ctx.identity / ctx.auth_failure
    classify  -> ctx.operation
    policy    -> ctx.decision
    approvals -> ctx.hold (and may turn a hold decision into allow)
    masking   -> ctx.masking
    audit     -> reads everything, writes ctx.intent_seq (before forwarding) and ctx.audit_seq

Any addon that refuses a flow calls `refuse()`, which sets both the client's JSON error response and
`ctx.refusal`, so the audit addon records why without parsing response bodies.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mitmproxy import http

if TYPE_CHECKING:  # types only: the config room depends on this module, not the reverse
    from addons.config.profile_model import RequestParts
    from addons.config.rulefiles import RulesSnapshot

NAMESPACE = "phigate"


class OpKind(enum.StrEnum):
    """Operation kinds, shared by every backend profile (rules/profiles/)."""

    HEALTH = "health"
    ADMIN = "admin"
    SCHEMA = "schema-write"
    SEARCH = "search"
    GET = "get"
    EXPORT = "export"
    WRITE = "write"
    DELETE = "delete"
    DROP = "drop"
    UNKNOWN = "unknown"


class Action(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    HOLD = "hold"


class Stage(enum.StrEnum):
    """Where in the chain a refusal or failure happened (recorded in the audit)."""

    GATEWAY = "gateway"
    IDENTITY = "identity"
    CLASSIFY = "classify"
    POLICY = "policy"
    APPROVAL = "approval"
    CREDENTIALS = "credentials"
    MASKING = "masking"
    AUDIT = "audit"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller. Never holds the raw token: `token_id` is the `jti` or a hash prefix."""

    subject: str
    issuer: str
    roles: frozenset[str]
    token_id: str
    expires_at: float
    client_id: str | None = None
    name: str | None = None
    email: str | None = None
    # Purpose of use (164.528 accounting), from a configured claim; a request header may override.
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why authentication failed, for log-in monitoring (164.308(a)(5)(ii)(C))."""

    reason: str
    claimed_subject: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """What a request does, as the backend profile classified it."""

    backend: str
    kind: OpKind
    route: str  # the profile's route id, e.g. "chroma.query"; "unknown" when nothing matched
    method: str
    path: str  # canonical path, exactly what is forwarded
    collection: str | None = None  # collection name (resolved from a UUID where learned)
    collection_id: str | None = None
    # Request facts policy rules match on: has_filter, limit, n_results, ids_count, ...
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HoldSpec:
    """What a `hold` policy rule asks for."""

    approver_roles: frozenset[str]
    approvals_required: int = 1
    timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rule_id: str | None  # None only for the implicit default deny
    reason: str | None = None
    hold: HoldSpec | None = None
    # The policy rule's declared purpose of use, for the accounting of disclosures.
    purpose: str | None = None


@dataclass(slots=True)
class RecordCap:
    """A policy cap on the records one answer may hold (policy.yaml `max_records`), for one flow.

    Set by the policy addon on an allowed read whose caller may not export that collection; the
    answer is counted against it, and above it the request is judged again as an export
    (`over_cap`: deny, or hold for approval and then re-fetch the original request).
    """

    cap_id: str
    max_records: int
    over_cap: Decision
    # Where the profile locates records in the answer (a function of the decoded body).
    count: Callable[[Any], int] = field(repr=False)
    # Puts the client's own limit back into the request as forwarded (for the re-fetch of an
    # approved answer: exactly what the client asked, with handles already turned into values).
    restore_limit: Callable[[http.Request], None] | None = field(default=None, repr=False)
    limit_lowered: bool = False
    counted: int | None = None
    withheld: bool = False


@dataclass(slots=True)
class MaskingSummary:
    """What masking did to one response (and to tokens in the request)."""

    applied: bool = False
    counts_by_rule: dict[str, int] = field(default_factory=dict)
    counts_by_type: dict[str, int] = field(default_factory=dict)
    # Fields the caller received unmasked (for the accounting of disclosures).
    fields_disclosed: list[str] = field(default_factory=list)
    # Keyed (HMAC) references of the data subjects in the response; never the identifier itself.
    subject_refs: list[str] = field(default_factory=list)
    detokenized: int = 0
    # Upstream response headers withheld from a masked role (not on the header allow-list).
    headers_dropped: int = 0


@dataclass(slots=True)
class HoldInfo:
    hold_id: str
    state: str  # pending | approved | denied | timeout | cancelled | break_glass | granted
    rule_id: str | None
    requested_at: float
    request_hash: str
    decided_at: float | None = None
    approvers: list[str] = field(default_factory=list)
    justification: str | None = None
    grant_id: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    stage: Stage
    status: int
    error: str
    detail: str


@dataclass(slots=True)
class FlowContext:
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    identity: Caller | None = None
    auth_failure: AuthFailure | None = None
    operation: Operation | None = None
    decision: Decision | None = None
    hold: HoldInfo | None = None
    masking: MaskingSummary | None = None
    refusal: Refusal | None = None
    # A PHI-free summary of the request body, made by the masking addon for the audit.
    request_summary: Mapping[str, Any] | None = None
    purpose: str | None = None
    break_glass: str | None = None  # the caller's justification when break-glass was used
    session_id: str | None = None
    # The write-ahead intent record, durable before the request was forwarded.
    intent_seq: int | None = None
    audit_seq: int | None = None
    # The gateway answered itself (health, refusal): no upstream response to mask.
    answered_by_gateway: bool = False
    # The rules version this flow is handled under from its first hook to its audit event.
    rules: RulesSnapshot | None = None
    # The request as classify decoded it (policy rules may test JSONPaths in the body).
    request_parts: RequestParts | None = None
    # Notes a write carried, kept until the backend accepts the write (masking learns them then).
    written_notes: list[str] | None = None
    # The cap on records this flow's answer may hold (policy max_records), when one applies.
    record_cap: RecordCap | None = None


def context(flow: http.HTTPFlow) -> FlowContext:
    """Get (or create) the flow's phigate context."""
    ctx: FlowContext | None = flow.metadata.get(NAMESPACE)
    if ctx is None:
        ctx = FlowContext()
        flow.metadata[NAMESPACE] = ctx
    return ctx

