"""The audit addon: last in the chain, it records every flow before the client sees the answer.

Write-ahead intent: its request hook, the last one before a request leaves, appends an intent
record (who, what, decision, a PHI-free summary) and awaits its group commit: the backend never
sees a request the ledger does not already hold; if the intent cannot be written the request is
refused with a 503 instead. Its response (and error) hook builds the flow's event (the outcome:
status, masking summary, bytes, naming its intent) from the FlowContext every earlier addon filled
in and awaits that commit too: the response is released only once its event is durable and signed
(164.312(b)). A gateway killed in between leaves an intent without an outcome, which `verify` and
the packet report as "outcome unknown".

`AuditGate` (`audit.gate`) stands early in the chain: while the ledger cannot be written (or did
not open), it refuses a request before classification, holds or approver notifications; readyz
says why, until the writer recovers. Nothing passes unaudited.

Alongside the event it records authentication failures (log-in monitoring), decided holds
(approvals), rule-file versions, and, when a recording key is set, the exchange itself (request
and response as delivered, encrypted with AES-GCM) for session replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mitmproxy import ctx, exceptions, http

from addons.config import rulefiles
from addons.core import observe, upstream_errors
from addons.core.context import Caller, FlowContext, OpKind, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import register_readiness
from addons.core.respond import refuse
from addons.core.startup import runtime_error
from addons.ledger import configuration, keys, layout, recording, sink
from addons.ledger.canonical import RecordError
from addons.ledger.writer import Ledger, LedgerError, NodeBusy, Settings

log = logging.getLogger("phigate")

# The gateway's own probes: polled every second by load balancers, they carry no data access.
UNAUDITED_PATHS = frozenset({"/-/healthz", "/-/readyz"})
OPEN_WAIT_S = 30.0
DENY_STAGES = frozenset({Stage.IDENTITY, Stage.POLICY, Stage.APPROVAL})
INT_OPTIONS = ("phigate_audit_seal_events", "phigate_retention_days", "phigate_session_idle_seconds")


@dataclass(slots=True)
class _Session:
    session_id: str
    last_seen: float


class Sessions:
    """Groups one caller's requests: same subject and client (or address, unauthenticated) within an
    idle gap. Keyed by subject+client rather than token so an agent run that refreshes its token
    stays one session."""

    def __init__(self) -> None:
        self.idle_s = 1800.0
        self._by_key: dict[tuple[str, str], _Session] = {}

    def assign(self, identity: Caller | None, client_addr: str | None, now: float) -> str:
        key = (identity.subject, identity.client_id or "") if identity else ("anonymous", client_addr or "")
        s = self._by_key.get(key)
        if s is None or now - s.last_seen > self.idle_s:
            if len(self._by_key) > 10_000:
                self._by_key = {k: v for k, v in self._by_key.items() if now - v.last_seen <= self.idle_s}
            s = self._by_key[key] = _Session(uuid4().hex, now)
        s.last_seen = now
        return s.session_id


def _decision(flow: http.HTTPFlow, c: FlowContext) -> str:
    if c.refusal is not None:
        return "deny" if c.refusal.stage in DENY_STAGES else "error"
    if flow.error is not None:
        return "error"
    if c.hold is not None:
        return "hold"
    if c.decision is not None:
        return str(c.decision.action.value)
    return "allow"


def build_event(flow: http.HTTPFlow, c: FlowContext, session_id: str) -> dict[str, Any]:
    """The event row for one flow: identities and decisions, never a raw body or token."""
    ident, op, m = c.identity, c.operation, c.masking
    resp = flow.response
    rule_ids = [r for r in (c.decision.rule_id if c.decision else None, c.hold.rule_id if c.hold else None) if r]
    error = None
    if c.refusal is not None:
        error = f"{c.refusal.error}: {c.refusal.detail}"
    elif flow.error is not None:
        # mitmproxy's message can quote the upstream's bytes: only its class is recorded.
        error = upstream_errors.classify(flow.error.msg, flow.request.timestamp_end is not None).reason
    peer = flow.client_conn.peername
    return {
        "request_id": c.request_id,
        "session_id": session_id,
        "subject": ident.subject if ident else None,
        "name": ident.name if ident else None,
        "email": ident.email if ident else None,
        "client_id": ident.client_id if ident else None,
        "roles": sorted(ident.roles) if ident else None,
        "client_addr": peer[0] if peer else None,
        "user_agent": flow.request.headers.get("user-agent"),
        "backend": op.backend if op else ctx.options.phigate_profile or None,
        "operation": op.kind.value if op else None,
        "collection": op.collection if op else None,
        "method": op.method if op else flow.request.method,
        # The path only: a query string can carry search terms (PHI); the recording keeps it encrypted.
        "path": (op.path if op else flow.request.path).split("?", 1)[0],
        "request_summary": dict(c.request_summary) if c.request_summary is not None else None,
        "status": resp.status_code if resp is not None else None,
        "decision": _decision(flow, c),
        "rule_ids": list(dict.fromkeys(rule_ids)),
        "stage": c.refusal.stage.value if c.refusal else (Stage.UPSTREAM.value if flow.error else None),
        "masking": {"by_rule": dict(m.counts_by_rule), "by_type": dict(m.counts_by_type),
                    "headers_dropped": m.headers_dropped} if m else None,
        "fields_disclosed": list(m.fields_disclosed) if m else None,
        "subject_refs": list(m.subject_refs) if m else None,
        "purpose": c.purpose or (ident.purpose if ident else None) or (c.decision.purpose if c.decision else None),
        "hold_id": c.hold.hold_id if c.hold else None,
        "break_glass": c.break_glass is not None,
        "bytes_in": len(flow.request.raw_content or b""),
        "bytes_out": len(resp.raw_content or b"") if resp is not None else 0,
        "latency_ms": round((time.monotonic() - c.started_mono) * 1000.0, 3),
        "error": error,
        "intent_seq": c.intent_seq,
        "rules_version": c.rules.version if c.rules is not None else None,
    }


def build_intent(flow: http.HTTPFlow, c: FlowContext, session_id: str) -> dict[str, Any]:
    """The intent row for a request about to be forwarded: who, what, decision, never a body."""
    ident, op = c.identity, c.operation
    rule_ids = [r for r in (c.decision.rule_id if c.decision else None, c.hold.rule_id if c.hold else None) if r]
    peer = flow.client_conn.peername
    return {
        "request_id": c.request_id,
        "session_id": session_id,
        "subject": ident.subject if ident else None,
        "client_id": ident.client_id if ident else None,
        "roles": sorted(ident.roles) if ident else None,
        "client_addr": peer[0] if peer else None,
        "user_agent": flow.request.headers.get("user-agent"),
        "backend": op.backend if op else ctx.options.phigate_profile or None,
        "operation": op.kind.value if op else None,
        "collection": op.collection if op else None,
        "method": op.method if op else flow.request.method,
        "path": (op.path if op else flow.request.path).split("?", 1)[0],
        "request_summary": dict(c.request_summary) if c.request_summary is not None else None,
        "decision": _decision(flow, c),
        "rule_ids": list(dict.fromkeys(rule_ids)),
        "hold_id": c.hold.hold_id if c.hold else None,
        "break_glass": c.break_glass is not None,
        "purpose": c.purpose or (ident.purpose if ident else None) or (c.decision.purpose if c.decision else None),
        "rules_version": c.rules.version if c.rules is not None else None,
    }


def approval_row(flow: http.HTTPFlow, c: FlowContext) -> dict[str, Any] | None:
    h = c.hold
    if h is None or h.state == "pending":
        return None
    kind = "break_glass" if h.state == "break_glass" else ("grant" if h.state == "granted" else "hold")
    return {
        "hold_id": h.hold_id, "kind": kind,
        "requester": c.identity.subject if c.identity else None,
        "approvers": list(h.approvers), "rule_id": h.rule_id,
        "operation": c.operation.kind.value if c.operation else None,
        "collection": c.operation.collection if c.operation else None,
        "requested_at": h.requested_at, "decided_at": h.decided_at, "outcome": h.state,
        "justification": h.justification or c.break_glass, "request_hash": h.request_hash,
    }


def exchange(flow: http.HTTPFlow) -> bytes:
    resp = flow.response
    return recording.exchange_payload(
        flow.request.method, flow.request.path, flow.request.headers, flow.request.raw_content,
        resp.status_code if resp is not None else None, resp.headers if resp is not None else None,
        resp.raw_content if resp is not None else None,
    )


class AuditGate:
    """The audit addon's early hook: a broken ledger refuses a request before anything acts on it."""

    def __init__(self, audit: Audit) -> None:
        self.audit = audit

    @fail_closed(Stage.AUDIT, 503)
    def request(self, flow: http.HTTPFlow) -> None:
        self.audit.refuse_if_broken(flow)


class Audit:
    def __init__(self) -> None:
        self.gate = AuditGate(self)
        self.ledger: Ledger | None = None
        self.sessions = Sessions()
        self.start_error: str | None = None
        self._signing: Ed25519PrivateKey | None = None
        self._recording: recording.RecordingKey | None = None
        self._backlog: list[tuple[str, dict[str, Any]]] = []
        # Set once `running` has opened the ledger (or failed to): flows finishing before that wait.
        self._opened = asyncio.Event()

    def load(self, loader: Any) -> None:
        add = loader.add_option
        add("phigate_audit_dir", str, "", "Folder for the audit ledger's segments and recordings. Set it in "
            "production; unset, the ledger goes to CONFDIR/phigate-audit (mitmproxy's confdir) with a warning.")
        add("phigate_audit_key_file", str, "", "File with the Ed25519 key that signs checkpoints (PEM or 32-byte "
            "seed in hex/base64). Never inside phigate_audit_dir.")
        add("phigate_audit_key_env", str, "PHIGATE_AUDIT_KEY", "Env var holding the checkpoint signing key, "
            "used when phigate_audit_key_file is empty.")
        add("phigate_witness", str, "", "File or folder (outside the audit dir) that every signed checkpoint is "
            "also appended to; default: the folder AUDIT_DIR-witness next to the audit dir.")
        add("phigate_witness_append_only", bool, False, "Require this node's witness file to be append-only "
            "(chattr +a; set by the gateway when it runs with CAP_LINUX_IMMUTABLE, else by the operator). Off: "
            "checked at start and a warning logged when it is not. On and not append-only: traffic is refused.")
        add("phigate_audit_seal_events", int, 50_000, "Records per write-ahead segment before it is sealed into "
            "an immutable DuckDB segment file.")
        add("phigate_recording_key_file", str, "", "File with the AES-GCM session recording key(s), one "
            "KEY_ID:BASE64 per line (first encrypts). No key: bodies are not recorded.")
        add("phigate_recording_key_env", str, "PHIGATE_RECORDING_KEY", "Env var holding recording key(s), used "
            "when phigate_recording_key_file is empty.")
        add("phigate_retention_days", int, 2190, "Days session recordings are kept (default six years, "
            "164.316(b)(2)(i)); the ledger itself is never purged.")
        add("phigate_session_idle_seconds", int, 1800, "A caller's session ends after this idle gap.")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        for name in INT_OPTIONS:
            if name in updated and getattr(opts, name) <= 0:
                raise exceptions.OptionsError(f"{name}: {getattr(opts, name)} must be a positive integer")
        if "phigate_session_idle_seconds" in updated:
            self.sessions.idle_s = float(opts.phigate_session_idle_seconds)
        if updated & {"phigate_audit_key_file", "phigate_audit_key_env"}:
            try:
                self._signing = keys.load_private(opts.phigate_audit_key_file, opts.phigate_audit_key_env)
            except keys.AuditKeyError as exc:
                raise exceptions.OptionsError(f"Cannot load the audit signing key: {exc}") from exc
        if updated & {"phigate_recording_key_file", "phigate_recording_key_env"}:
            try:
                rk = recording.load_keys(opts.phigate_recording_key_file, opts.phigate_recording_key_env)
            except recording.RecordingKeyError as exc:
                raise exceptions.OptionsError(f"Cannot load the recording key: {exc}") from exc
            self._recording = next(iter(rk.values()), None)
        if self.ledger is not None and updated & configuration.RECORDED:
            self._record_configuration()
        if "phigate_audit_dir" in updated and opts.phigate_audit_dir and opts.phigate_audit_key_file:
            audit = Path(opts.phigate_audit_dir).resolve()
            if audit in Path(opts.phigate_audit_key_file).resolve().parents:
                # Threat: whoever can rewrite the ledger could then also re-sign it.
                raise exceptions.OptionsError("phigate_audit_key_file must not be inside phigate_audit_dir")

    def running(self) -> None:
        opts = ctx.options
        register_readiness("audit", self.not_ready)
        if opts.phigate_audit_dir:
            audit_dir = Path(opts.phigate_audit_dir)
        else:
            # Never run unaudited, and never silently somewhere temporary: a persistent folder next
            # to mitmproxy's own state (each test gateway has its own confdir), said loudly.
            audit_dir = Path(opts.confdir).expanduser() / "phigate-audit"
            log.warning("phigate: option phigate_audit_dir is not set; writing the audit ledger to %s "
                        "(set --set phigate_audit_dir=/var/lib/phigate/audit in production)", audit_dir)
        try:
            witness = layout.witness_location(opts.phigate_witness or f"{audit_dir.resolve()}-witness/")
        except OSError as exc:
            self._fail_start(f"cannot open the audit witness next to {audit_dir}: {exc.strerror}")
            return
        signing = self._signing
        if signing is None:
            # Without a configured key the ledger is still hash-chained; checkpoints are signed with a
            # key that lives only in this process, so a restart cannot re-sign an edited history.
            signing = Ed25519PrivateKey.generate()
            log.warning("phigate audit: no signing key configured (phigate_audit_key_file or $%s): checkpoints "
                        "are signed with an ephemeral key %s", opts.phigate_audit_key_env,
                        keys.key_id_of(signing.public_key()))
        if self._recording is None:
            log.warning("phigate audit: no recording key configured: request/response bodies are not recorded")
        settings = Settings(opts.phigate_audit_seal_events, opts.phigate_retention_days)
        try:
            ledger = self._open(audit_dir, opts.phigate_node_id, signing, witness, settings)
        except LedgerError as exc:
            self._fail_start(str(exc))
            return
        problem = self._check_witness(ledger, opts.phigate_witness_append_only)
        if problem and opts.phigate_witness_append_only:
            ledger.close()
            self._fail_start(problem)
            return
        if problem:
            log.warning("phigate audit: %s", problem)
        self.ledger = ledger
        self._opened.set()
        ledger.start()
        sink.attach(ledger, asyncio.get_running_loop())
        sink.on_intent(self.write_intent)
        rulefiles.on_version(self._rule_version)
        self._record_configuration()
        log.info("phigate audit: node %s at seq %d, witness %s", opts.phigate_node_id, ledger.size, witness)

    def _fail_start(self, why: str) -> None:
        # A runtime condition, not a configuration error: the process stays up, refuses every
        # request with 503 and says why in /-/readyz (an exit would leave load balancers and
        # operators with nothing but a restart loop).
        self.start_error = why
        runtime_error(log, "phigate audit: %s; refusing all traffic", why)
        self._opened.set()

    @staticmethod
    def _check_witness(ledger: Ledger, require: bool) -> str | None:
        """Why the witness is not append-only (None when it is). Threat: an operator (or a process)
        with the gateway's account rewriting the witness together with the ledger."""
        try:
            append_only = ledger.witness_append_only(set_flag=require)
        except OSError as exc:
            return f"the witness {ledger.witness} cannot be opened ({exc.strerror})"
        if append_only:
            return None
        if append_only is None:
            return (f"the witness {ledger.witness} is on a filesystem without an append-only attribute: the "
                    "gateway's user could rewrite it (put it on ext4/XFS/Btrfs with chattr +a, or ship it off-host)")
        return (f"the witness {ledger.witness} is not append-only: the gateway's user could rewrite it "
                f"(run `chattr +a {ledger.witness}` as root)")

    def _open(self, audit_dir: Path, node_id: str, signing: Ed25519PrivateKey, witness: Path,
              settings: Settings) -> Ledger:
        """Open this node's ledger. If another live process already writes this node id (two gateways
        started with the same id), write as NODE.2, NODE.3, ...: each process keeps its own
        sequence and tree, so records stay attributable and verifiable, and say so in the log."""
        for n in range(1, 33):
            name = node_id if n == 1 else f"{node_id}.{n}"
            ledger = Ledger(audit_dir, name, signing_key=signing, witness=witness,
                            recording_key=self._recording, settings=settings)
            try:
                ledger.open()
            except NodeBusy:
                continue
            if n > 1:
                log.warning("phigate audit: node %s is written by another process; this process records as %s",
                            node_id, name)
            return ledger
        raise LedgerError(f"every node id {node_id}, {node_id}.2 ... {node_id}.32 is held by another process")

    def done(self) -> None:
        sink.attach(None)
        sink.on_intent(None)
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    def not_ready(self) -> str | None:
        if self.start_error:
            return self.start_error
        if self.ledger is None:
            return "the audit ledger is not open"
        return self.ledger.broken

    def _queue(self, kind: str, row: Mapping[str, Any]) -> None:
        """Non-flow records: written with the next commit; kept for later while the store is down."""
        if self.ledger is None or self.ledger.broken:
            self._backlog.append((kind, dict(row)))
            return
        while self._backlog:
            k, r = self._backlog.pop(0)
            self._append_nowait(k, r)
        self._append_nowait(kind, row)

    def _append_nowait(self, kind: str, row: Mapping[str, Any]) -> None:
        assert self.ledger is not None
        try:
            self.ledger.append_nowait(kind, row)
        except LedgerError:
            self._backlog.append((kind, dict(row)))
        except RecordError as exc:
            log.error("phigate audit: dropped a malformed %s record (%s)", kind, exc)

    def _record_configuration(self) -> None:
        """The settings and TLS certificates in force, as evidence for the packet (at start, on change)."""
        opts = ctx.options
        self._queue("configuration", {"kind": "gateway_settings", "name": opts.phigate_node_id,
                                      "content": configuration.gateway_settings(opts)})
        for listener, cert in configuration.tls_certificates(opts):
            self._queue("configuration", {"kind": "tls_certificate", "name": listener, "content": cert})

    def _rule_version(self, version: rulefiles.RuleVersion) -> None:
        self._queue("rule_version", {"path": version.path, "sha256": version.sha256, "content": version.text,
                                     "effective_from": version.effective_from})

    # ------------------------------------------------------------------ hooks

    def refuse_if_broken(self, flow: http.HTTPFlow) -> bool:
        """Refuse the flow while the ledger cannot record (still starting is not broken: it waits)."""
        reason = self.start_error or (self.ledger.broken if self.ledger is not None else None)
        if not reason:
            return False
        # Threat: a request served while the ledger is down would be an unaudited PHI access.
        # (Counted once, when its outcome cannot be recorded either: see _refuse.)
        refuse(flow, Stage.AUDIT, 503, "audit_unavailable",
               "the audit ledger cannot record requests; the gateway refuses traffic until it can")
        return True

    @fail_closed(Stage.AUDIT, 503)
    async def request(self, flow: http.HTTPFlow) -> None:
        # Last request hook: what is not refused by now is forwarded, so its intent goes first.
        if self.refuse_if_broken(flow):
            return
        try:
            await self.write_intent(flow)
        except LedgerError:
            # Threat: a write or delete the backend carries out with no record of it.
            refuse(flow, Stage.AUDIT, 503, "audit_unavailable",
                   "the audit ledger could not record this request's intent; it was not forwarded")
        observe.forwarding(flow)

    async def write_intent(self, flow: http.HTTPFlow) -> int:
        """Append the flow's intent and wait until it is durable; raises LedgerError if it cannot be."""
        c = context(flow)
        ledger = await self._ready_ledger()
        if ledger is None:
            raise LedgerError(self.start_error or "the audit ledger cannot record requests")
        if c.session_id is None:
            peer = flow.client_conn.peername
            c.session_id = self.sessions.assign(c.identity, peer[0] if peer else None, time.time())
        c.intent_seq = await ledger.append("intent", build_intent(flow, c, c.session_id))
        return c.intent_seq

    async def _ready_ledger(self) -> Ledger | None:
        """The open, writable ledger; while the gateway is still starting, wait for it to open."""
        if self.ledger is None and self.start_error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._opened.wait(), OPEN_WAIT_S)
        ledger = self.ledger
        return None if ledger is None or ledger.broken else ledger

    @fail_closed(Stage.AUDIT, 503)
    async def response(self, flow: http.HTTPFlow) -> None:
        await self._record(flow)

    @fail_closed(Stage.AUDIT, 503)
    async def error(self, flow: http.HTTPFlow) -> None:
        await self._record(flow)

    async def _record(self, flow: http.HTTPFlow) -> None:
        c = context(flow)
        if c.audit_seq is not None:
            return
        op = c.operation
        if op is not None and op.kind == OpKind.HEALTH and op.path in UNAUDITED_PATHS:
            return
        # A flow that finished while the gateway was still starting waits for the ledger rather
        # than being released unaudited (or refused a moment too early).
        ledger = await self._ready_ledger()
        if ledger is None:
            self._refuse(flow, c)
            return
        if c.auth_failure is not None:
            peer = flow.client_conn.peername
            self._queue("auth_failure", {"request_id": c.request_id, "client_addr": peer[0] if peer else None,
                                         "reason": c.auth_failure.reason,
                                         "claimed_subject": c.auth_failure.claimed_subject})
        approval = approval_row(flow, c)
        if approval is not None:
            self._queue("approval", approval)
        if c.session_id is None:
            peer = flow.client_conn.peername
            c.session_id = self.sessions.assign(c.identity, peer[0] if peer else None, time.time())
        row = build_event(flow, c, c.session_id)
        payload = exchange(flow) if ledger.recording_key is not None else None
        try:
            c.audit_seq = await ledger.append("event", row, payload)
        except LedgerError:
            self._refuse(flow, c)
        observe.flow_done(flow, row)

    def _refuse(self, flow: http.HTTPFlow, c: FlowContext) -> None:
        if self.ledger is not None:
            self.ledger.refused_while_broken += 1
        if flow.response is not None or flow.error is None:
            refuse(flow, Stage.AUDIT, 503, "audit_unavailable",
                   "the audit ledger could not record this request; nothing was released")
