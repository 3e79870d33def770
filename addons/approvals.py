"""Approvals: hold risky requests in flight until an authorised human decides (chain slot after Policy).

For a `hold` decision, in order:
1. break-glass: a caller with the emergency role sending a justification header passes (flagged,
   recorded, every reviewer notified) - HIPAA 164.312(a)(2)(ii) emergency access. Never past a deny:
   this addon only ever sees holds.
2. a grant: an approver's time-bound window for this user, operation and collection passes it.
3. otherwise a hold: the flow is intercepted and this hook awaits the decision (the event loop keeps
   serving everything else). Approved: exactly the request that was held is forwarded (its hash is
   checked again). Denied, timed out, cancelled or ended by a restart: 403 and a record.

The gateway enforces the timeout itself: `flow.intercept()` has none, and mitmproxy disarms its
idle timeout while a hook runs, so without it a forgotten hold would pin a connection forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import sqlite3
import ssl
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mitmproxy import connection, ctx, exceptions, http

from addons.auth.jwks import KeysUnavailable
from addons.auth.verifier import AuthError
from addons.auth.verifier import shared as shared_verifier
from addons.config.policy_rules import load_policy
from addons.config.rulefiles import ConfigError
from addons.core.context import Action, FlowContext, HoldInfo, HoldSpec, OpKind, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import readiness_of, register_readiness
from addons.core.respond import refuse
from addons.holds import httpserver
from addons.holds.admin import AdminApi, AdminSettings, AuthFailed, ConsoleSignIn
from addons.holds.model import Actor, Grant, Hold, HoldState, NewHold
from addons.holds.notify import Notifier
from addons.holds.store import AsyncHoldStore, HoldStore, unavailable_reason
from addons.holds.summary import estimate_records, masked_summary, request_hash
from addons.ledger import sink
from addons.ledger.writer import LedgerError
from addons.request import upstream_call
from addons.request.upstream_call import Upstream

log = logging.getLogger("phigate")

POLL_S = 0.2  # how soon a decision made by another gateway process reaches the one holding the flow
HEARTBEAT_S = 2.0
REAP_S = 5.0
SHIP_S = 1.0
MIN_BREAK_GLASS_JUSTIFICATION = 8

# The approvals record columns the audit ledger keeps (addons/ledger/schema.py, table approvals).
LEDGER_COLUMNS = ("node_id", "hold_id", "kind", "requester", "approvers", "rule_id", "operation", "collection",
                  "requested_at", "decided_at", "outcome", "justification", "request_hash")
# What a webhook receiver (a chat room, a pager) may see: no free-text justification, no raw request.
WEBHOOK_FIELDS = ("hold_id", "kind", "state", "node_id", "requester", "requester_name", "rule_id", "reason",
                  "operation", "collection", "method", "path", "summary", "approvers", "approvals_required",
                  "requested_at", "expires_at", "decided_at", "seconds_left")

_CANCELLED = "cancelled"
BREAK_GLASS_KEY = "phigate.break_glass"
# Hold states that release a request (as the Forward gate reads them).
RELEASED_STATES = frozenset({"approved", "granted", "break_glass"})
# Headers the re-fetch of an approved answer sets itself, or that describe one hop only.
REFETCH_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                             "accept-encoding", "upgrade", "te", "trailer", "proxy-connection"})
REFETCH_TIMEOUT_S = 60.0
# How long a hold's end (timeout, cancel) may wait for the store before the flow ends without it.
FINISH_GRACE_S = 0.5
REFETCH_MAX_BYTES = 256 * 1024 * 1024


def default_db_path() -> str:
    return str(Path(os.environ.get("PHIGATE_HOME", ".phigate")) / "holds.sqlite")


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _late_finish(task: asyncio.Future[Hold]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("phigate approvals: recording a hold's end failed (%s); the reaper retries",
                    type(task.exception()).__name__)


def _webhook_view(hold: Mapping[str, Any]) -> dict[str, Any]:
    return {k: hold[k] for k in WEBHOOK_FIELDS if k in hold}


class Approvals:
    def __init__(self) -> None:
        self.store: AsyncHoldStore | None = None
        self.notifier = Notifier(())
        self.admin: AdminApi | None = None
        self.server: asyncio.Server | None = None
        self.admin_url: str | None = None
        self._waiters: dict[str, asyncio.Future[Hold | str]] = {}
        self._by_client: dict[str, set[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ledger_warned = False
        # Tests inject their own verifier; in the gateway it is the Identity addon's (see _authenticate).
        self.authenticate_override: Any = None
        register_readiness("approvals", self._not_ready)

    # ------------------------------------------------------------------ options and lifecycle

    def load(self, loader: object) -> None:
        add = loader.add_option  # type: ignore[attr-defined]
        add("phigate_holds_db", str, default_db_path(),
            "SQLite file of the hold store, shared by every gateway process on this host (WAL mode).")
        add("phigate_admin_host", str, "127.0.0.1",
            "Address of the admin API and reviewer console (loopback by default).")
        add("phigate_admin_port", int, 8444, "Port of the admin API and reviewer console (0: no listener).")
        add("phigate_admin_reuse_port", bool, False,
            "Let several gateway workers share the admin port (SO_REUSEPORT); any of them serves any hold.")
        add("phigate_admin_certfile", str, "", "PEM certificate (chain) for TLS on the admin listener.")
        add("phigate_admin_keyfile", str, "", "PEM private key for TLS on the admin listener.")
        add("phigate_reviewer_roles", str, "approver",
            "Roles allowed on the admin API (comma-separated); deciding a hold also needs a role its rule names.")
        add("phigate_grant_max_minutes", int, 480, "Longest window an approver may grant, in minutes.")
        add("phigate_console_client_id", str, "phigate-console",
            "OAuth client id the reviewer console signs in with (a public client at the issuer: authorization "
            "code with PKCE, redirect URI the console's own address).")
        add("phigate_console_scope", str, "openid",
            "Scopes the reviewer console asks the issuer for (space-separated); the access token must be for "
            "phigate_audience.")
        add("phigate_break_glass_role", str, "emergency", "Role that may pass a hold with a justification header.")
        add("phigate_break_glass_header", str, "x-break-glass",
            "Request header carrying the break-glass justification (removed before forwarding).")
        add("phigate_approval_webhooks", str, "",
            "URLs to POST hold events to (JSON), comma-separated; retried with backoff, never blocking.")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if not _loopback(opts.phigate_admin_host) and not opts.phigate_admin_certfile:
            # Approvers' tokens would cross the network in clear text: anyone on the path could replay
            # one and approve holds.
            raise exceptions.OptionsError(
                f"phigate_admin_host={opts.phigate_admin_host} is not loopback: set phigate_admin_certfile and "
                "phigate_admin_keyfile for TLS, or keep the admin API on 127.0.0.1")
        if bool(opts.phigate_admin_certfile) != bool(opts.phigate_admin_keyfile):
            raise exceptions.OptionsError("phigate_admin_certfile and phigate_admin_keyfile go together; set both")
        if not 0 <= opts.phigate_admin_port <= 65535:
            raise exceptions.OptionsError(f"phigate_admin_port: got {opts.phigate_admin_port}, expected 0-65535")
        if not self._roles(opts.phigate_reviewer_roles):
            raise exceptions.OptionsError("phigate_reviewer_roles: expected at least one role")
        if opts.phigate_grant_max_minutes < 1:
            raise exceptions.OptionsError("phigate_grant_max_minutes: expected at least 1")
        if not opts.phigate_break_glass_header.strip():
            raise exceptions.OptionsError("phigate_break_glass_header: expected a header name")

    @staticmethod
    def _roles(text: str) -> frozenset[str]:
        return frozenset(r.strip() for r in text.split(",") if r.strip())

    async def running(self) -> None:
        opts = ctx.options
        node_id = opts.phigate_node_id if hasattr(opts, "phigate_node_id") else "node"
        store = HoldStore(Path(opts.phigate_holds_db), node_id)
        try:
            self.store = await AsyncHoldStore.open(store)
        except (OSError, sqlite3.Error) as exc:
            # Fail closed: without the store every hold is refused (503) and /-/readyz says why.
            log.error("phigate approvals: cannot open the hold store %s (%s); held requests will be refused",
                      store.path, exc)
            return
        # A restart ends every hold the previous process left pending, as denied and recorded.
        ended = await self.store.call(store.reap, time.time(), "gateway restarted")
        for hold in ended:
            self.notifier.event("hold_ended", hold.public(time.time()), reason="gateway restarted")
        urls = [u.strip() for u in opts.phigate_approval_webhooks.split(",") if u.strip()]
        self.admin = AdminApi(
            self.store, self._authenticate,
            AdminSettings(self._roles(opts.phigate_reviewer_roles), float(opts.phigate_grant_max_minutes), node_id,
                          ConsoleSignIn(getattr(opts, "phigate_issuer", ""), opts.phigate_console_client_id,
                                        opts.phigate_console_scope)),
            self._on_hold_changed, self._on_grant)
        if opts.phigate_admin_port:
            tls = None
            if opts.phigate_admin_certfile:
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(opts.phigate_admin_certfile, opts.phigate_admin_keyfile)
            try:
                self.server = await httpserver.serve(opts.phigate_admin_host, opts.phigate_admin_port,
                                                     self.admin.handle, tls=tls,
                                                     reuse_port=opts.phigate_admin_reuse_port)
            except OSError as exc:
                # Holds stay decidable: any other gateway process's admin API on this store serves
                # them (the usual case for a second worker without phigate_admin_reuse_port). If there
                # is none, they time out as denials; nothing is ever released without a decision.
                log.error("phigate approvals: cannot listen on %s:%s (%s); this process serves no admin API. "
                          "Set phigate_admin_port (or phigate_admin_reuse_port for workers)",
                          opts.phigate_admin_host, opts.phigate_admin_port, exc.strerror)
            else:
                scheme = "https" if tls else "http"
                self.admin_url = f"{scheme}://{opts.phigate_admin_host}:{opts.phigate_admin_port}"
                log.info("phigate approvals: admin API and reviewer console at %s/", self.admin_url)
        self.notifier = Notifier(urls, f"{self.admin_url}/" if self.admin_url else None)
        self.notifier.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll_decisions()), loop.create_task(self._housekeeping())]

    async def done(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.notifier.stop()
        if self.server is not None:
            self.server.close()
        if self.store is not None:
            store = self.store.store
            ended = self.store.call_blocking(store.end_own_pending, time.time(), "gateway stopped")
            for hold in ended:
                self._resolve(hold)
            with contextlib.suppress(Exception):
                await self._ship()
            self.store.close()
            self.store = None

    def _not_ready(self) -> str | None:
        return None if self.store is not None else "the hold store is not open"

    # ------------------------------------------------------------------ the request hook

    @fail_closed(Stage.APPROVAL, 500)
    async def request(self, flow: http.HTTPFlow) -> None:
        c = context(flow)
        header = ctx.options.phigate_break_glass_header
        # Our header, never the backend's: it carries free text and must not travel upstream.
        break_glass = flow.request.headers.pop(header, None)
        if break_glass is not None:
            flow.metadata[BREAK_GLASS_KEY] = break_glass  # for a hold decided on the answer
        decision = c.decision
        if decision is None or decision.action != Action.HOLD:
            return  # allow goes on; deny was answered by Policy (and break-glass never passes a deny)
        await self._judge(flow, c, break_glass)

    @fail_closed(Stage.APPROVAL, 502)
    async def response(self, flow: http.HTTPFlow) -> None:
        """An answer withheld for holding more records than the caller's cap: the request turned
        out to be an export, and is held like one. Approved, the original request is sent again and
        its answer released (the withheld one was cut at cap + 1); otherwise the refusal stands."""
        c = context(flow)
        cap = c.record_cap
        decision = c.decision
        if cap is None or not cap.withheld or decision is None or decision.action != Action.HOLD:
            return
        withheld = c.refusal
        # What the approver reviews and what is re-fetched: the request as the client asked it (its
        # own limit, not the cap + 1 the gateway sent).
        if cap.restore_limit is not None:
            cap.restore_limit(flow.request)
        c.refusal = None
        await self._judge(flow, c, flow.metadata.get(BREAK_GLASS_KEY))
        if c.refusal is not None:
            return  # denied, timed out, cancelled, unavailable: refused by _judge
        if c.hold is None or c.hold.state not in RELEASED_STATES:
            c.refusal = withheld
            return
        flow.response = await self._refetch(flow)
        c.answered_by_gateway = False

    async def _refetch(self, flow: http.HTTPFlow) -> http.Response:
        req = flow.request
        upstream = Upstream(req.scheme, req.host, req.port, verify=not getattr(ctx.options, "ssl_insecure", False),
                            cafile=getattr(ctx.options, "ssl_verify_upstream_trusted_ca", None) or None)
        # The forwarded headers (the backend's credential already in place), minus those this
        # exchange sets itself; identity encoding keeps the answer as the masking addon expects it.
        headers = {k: v for k, v in req.headers.items() if k.lower() not in REFETCH_DROPPED}
        headers["accept-encoding"] = "identity"
        try:
            # Sent outside the chain's forwarding: its write-ahead intent first, as for any request.
            await sink.intent(flow)
        except (sink.SinkUnavailable, LedgerError):
            refuse(flow, Stage.AUDIT, 503, "audit_unavailable",
                   "the audit ledger could not record the approved request; it was not sent again")
            assert flow.response is not None
            return flow.response
        try:
            answer = await asyncio.wait_for(
                upstream_call.call(upstream, req.method, req.path, headers, req.raw_content or b"",
                                   max_bytes=REFETCH_MAX_BYTES), REFETCH_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
            log.warning("phigate approvals: re-fetching an approved answer failed (%s)", type(exc).__name__)
            refuse(flow, Stage.UPSTREAM, 502, "upstream_unavailable",
                   "the approved request could not be sent to the backend again; retry it")
            assert flow.response is not None
            return flow.response
        return http.Response.make(answer.status, answer.body,
                                  [(k.encode(), v.encode()) for k, v in answer.headers
                                   if k not in REFETCH_DROPPED])

    async def _judge(self, flow: http.HTTPFlow, c: FlowContext, break_glass: str | None) -> None:
        """Break-glass, a grant, or a hold until approvers decide; refuses unless released."""
        decision = c.decision
        assert decision is not None
        spec = decision.hold
        if spec is None or not spec.approver_roles or spec.approvals_required < 1:
            refuse(flow, Stage.APPROVAL, 500, "hold_misconfigured",
                   f"rule {decision.rule_id} holds without approver roles; nobody could approve it")
            return
        store = self.store
        ident = c.identity
        if store is None:
            refuse(flow, Stage.APPROVAL, 503, "approvals_unavailable", "approvals are not available; try later")
            return
        if ident is None:  # Identity refuses anonymous callers first; never hold what nobody could own
            refuse(flow, Stage.APPROVAL, 403, "approval_required", "an approval needs an authenticated requester")
            return
        if flow.request.stream:
            # A streamed body is not here to hash: an approval could not be bound to what is forwarded.
            refuse(flow, Stage.APPROVAL, 403, "approval_required",
                   "this request needs approval, and a streamed request body cannot be approved; "
                   "disable stream_large_bodies for it")
            return
        audit_down = readiness_of("audit")
        if audit_down:
            # A hold nobody could record must not exist, nor page an approver.
            refuse(flow, Stage.AUDIT, 503, "audit_unavailable",
                   "the audit ledger cannot record requests; the gateway refuses traffic until it can")
            return
        try:
            await self._hold_or_pass(flow, c, spec, break_glass)
        except (sqlite3.Error, OSError) as exc:
            # Raised before a hold exists (a hold's end never raises: _finish): nothing is pending.
            refuse(flow, Stage.APPROVAL, 503, "approvals_unavailable", f"{unavailable_reason(exc)}; try later",
                   headers={"retry-after": "2"})

    async def _hold_or_pass(self, flow: http.HTTPFlow, c: FlowContext, spec: HoldSpec, break_glass: str | None
                            ) -> None:
        store, ident = self.store, c.identity
        assert store is not None and ident is not None
        now = time.time()
        new = self._new_hold(flow, c, spec, now)
        s = store.store
        if break_glass is not None:
            if ctx.options.phigate_break_glass_role in ident.roles and \
                    len(break_glass.strip()) >= MIN_BREAK_GLASS_JUSTIFICATION:
                await self._break_glass(c, new, break_glass.strip())
                return
            log.warning("phigate approvals: break-glass header from %s ignored (%s); holding as usual",
                        ident.subject, "no emergency role" if ctx.options.phigate_break_glass_role not in ident.roles
                        else "justification too short")
        op = c.operation
        # A grant passes single-approver holds only: one approver's standing window must not stand in
        # for the second person a two-person rule demands.
        if spec.approvals_required == 1 and op is not None and op.collection:
            grant = await store.call(s.find_grant, ident.subject, str(self._held_kind(c)), op.collection, now)
            if grant is not None and grant.granted_by_roles & spec.approver_roles:
                hold = await store.call(s.create, new, HoldState.GRANTED, approvers=[grant.granted_by],
                                        justification=grant.justification, record={"grant_id": grant.grant_id})
                c.hold = self._info(hold, grant.grant_id)
                self.notifier.event("grant_used", _webhook_view(hold.public(now)), grant_id=grant.grant_id)
                return
        await self._hold(flow, c, new, spec)

    def _new_hold(self, flow: http.HTTPFlow, c: FlowContext, spec: HoldSpec, now: float) -> NewHold:
        op, ident = c.operation, c.identity
        assert ident is not None
        body = flow.request.raw_content or b""
        return NewHold(
            hold_id="h-" + uuid.uuid4().hex[:16], kind="hold", request_id=c.request_id,
            requester=ident.subject, requester_issuer=ident.issuer, requester_name=ident.name,
            rule_id=c.decision.rule_id if c.decision else None, reason=c.decision.reason if c.decision else None,
            backend=op.backend if op else None, operation=self._held_kind(c),
            route=op.route if op else None, collection=op.collection if op else None,
            method=flow.request.method,
            # The query string can carry record ids (Pinecone fetch): reviewers see the path only.
            path=(op.path if op else flow.request.path).split("?", 1)[0],
            summary={**masked_summary(body, flow.request.headers.get("content-type"),
                                      op.facts if op else None, c.request_summary),
                     # What a reviewer weighs first: why, and how much would be released.
                     "purpose": c.purpose or ident.purpose,
                     "estimated_records": estimate_records(str(op.kind) if op else None, op.facts if op else {})},
            request_hash=request_hash(flow.request.method, flow.request.path, body),
            approver_roles=spec.approver_roles, approvals_required=spec.approvals_required,
            requested_at=now, expires_at=now + spec.timeout_s,
        )

    @staticmethod
    def _held_kind(c: FlowContext) -> str | None:
        """The operation a hold is about: an export when the answer showed the read was one."""
        if c.record_cap is not None and c.record_cap.withheld:
            return str(OpKind.EXPORT)
        return str(c.operation.kind) if c.operation else None

    async def _break_glass(self, c: FlowContext, new: NewHold, justification: str) -> None:
        assert self.store is not None
        s = self.store.store
        bg = dataclasses.replace(new, kind="break_glass")
        hold = await self.store.call(s.create, bg, HoldState.BREAK_GLASS, approvers=[], justification=justification)
        c.hold = self._info(hold)
        c.break_glass = justification
        log.warning("phigate approvals: BREAK-GLASS by %s on %s %s (hold %s, rule %s); reviewers notified",
                    hold.requester, hold.operation, hold.collection, hold.hold_id, hold.rule_id)
        self.notifier.event("break_glass", _webhook_view(hold.public(time.time())))

    async def _hold(self, flow: http.HTTPFlow, c: FlowContext, new: NewHold, spec: HoldSpec) -> None:
        assert self.store is not None
        s = self.store.store
        hold = await self.store.call(s.create, new)
        c.hold = self._info(hold)
        fut: asyncio.Future[Hold | str] = asyncio.get_running_loop().create_future()
        self._waiters[hold.hold_id] = fut
        client_id = flow.client_conn.id
        self._by_client.setdefault(client_id, set()).add(hold.hold_id)
        flow.intercept()
        self.notifier.event("hold_started", _webhook_view(hold.public(time.time())))
        try:
            if flow.client_conn.state is connection.ConnectionState.CLOSED:
                fut.set_result(_CANCELLED)  # the client left before the hold was even stored
            try:
                # Counted from the hold's own start: time spent storing it is not added on top.
                left = max(0.0, hold.expires_at - time.time())
                outcome = await asyncio.wait_for(asyncio.shield(fut), timeout=left)
            except TimeoutError:
                outcome = await self._finish(hold, HoldState.TIMEOUT, "approval timed out")
                if outcome.state == HoldState.TIMEOUT:
                    self.notifier.event("hold_expired", _webhook_view(outcome.public(time.time())))
            if outcome == _CANCELLED:
                outcome = await self._finish(hold, HoldState.CANCELLED, "the client disconnected while held")
                if outcome.state == HoldState.CANCELLED:
                    self.notifier.event("hold_cancelled", _webhook_view(outcome.public(time.time())))
                c.hold = self._info(outcome)
                if outcome.state == HoldState.APPROVED:
                    # An approval that lost the race to the disconnect releases nothing: nobody waits.
                    c.hold.state = str(HoldState.CANCELLED)
                refuse(flow, Stage.APPROVAL, 403, "hold_cancelled",
                       "the client disconnected while the request was held", extra={"hold_id": hold.hold_id})
                return
            assert isinstance(outcome, Hold)
            self._settle(flow, c, outcome)
        finally:
            self._waiters.pop(hold.hold_id, None)
            held = self._by_client.get(client_id)
            if held is not None:
                held.discard(hold.hold_id)
                if not held:
                    del self._by_client[client_id]
            flow.resume()

    async def _finish(self, hold: Hold, state: HoldState, why: str) -> Hold:
        """End a hold without an approver. If the store cannot record it within FINISH_GRACE_S
        (locked by another process, failing disk), the flow still ends now, as `state`: a timeout
        keeps its configured time. The store catches up on its own thread; until then the hold
        looks pending there, but an expired hold can no longer be approved (HoldStore._decidable)."""
        assert self.store is not None
        task = asyncio.ensure_future(self.store.call(self.store.store.finish, hold.hold_id, state, why, time.time()))
        done, _ = await asyncio.wait({task}, timeout=FINISH_GRACE_S)
        if task in done and task.exception() is None:
            return task.result()
        task.add_done_callback(_late_finish)
        log.warning("phigate approvals: the hold store did not record hold %s as %s in time; ended for the "
                    "flow all the same", hold.hold_id, state)
        return dataclasses.replace(hold, state=state, decided_at=time.time(), justification=why)

    def _settle(self, flow: http.HTTPFlow, c: FlowContext, hold: Hold) -> None:
        c.hold = self._info(hold)
        extra: dict[str, Any] = {"hold_id": hold.hold_id}
        if hold.state == HoldState.APPROVED:
            body = flow.request.raw_content or b""
            if request_hash(flow.request.method, flow.request.path, body) != hold.request_hash:
                # The approval covers the request the approvers saw, byte for byte: anything that
                # changed it while held (an addon, a bug, an attack on the proxy) must not ride on it.
                log.error("phigate approvals: hold %s approved but the request changed; refusing", hold.hold_id)
                c.hold.state = str(HoldState.DENIED)
                refuse(flow, Stage.APPROVAL, 403, "request_changed",
                       "the request changed while it was held; the approval does not cover it", extra=extra)
            return
        if hold.state == HoldState.DENIED:
            approver = hold.approvers[0] if hold.approvers else "the gateway"
            reason = hold.justification or "denied"
            refuse(flow, Stage.APPROVAL, 403, "hold_denied", f"denied by {approver}: {reason}",
                   extra={**extra, "approver": approver, "reason": reason})
        elif hold.state == HoldState.TIMEOUT:
            refuse(flow, Stage.APPROVAL, 403, "approval_timeout", "approval timed out", extra=extra)
        else:
            refuse(flow, Stage.APPROVAL, 403, "approval_required", f"hold {hold.hold_id} ended {hold.state}",
                   extra=extra)

    @staticmethod
    def _info(hold: Hold, grant_id: str | None = None) -> HoldInfo:
        return HoldInfo(hold_id=hold.hold_id, state=str(hold.state), rule_id=hold.rule_id,
                        requested_at=hold.requested_at, request_hash=hold.request_hash,
                        decided_at=hold.decided_at, approvers=list(hold.approvers),
                        justification=hold.justification, grant_id=grant_id)

    # ------------------------------------------------------------------ decisions reaching the held flow

    def client_disconnected(self, client: connection.Client) -> None:
        for hold_id in self._by_client.pop(client.id, set()):
            fut = self._waiters.get(hold_id)
            if fut is not None and not fut.done():
                fut.set_result(_CANCELLED)

    def _resolve(self, hold: Hold) -> None:
        fut = self._waiters.get(hold.hold_id)
        if fut is not None and not fut.done() and hold.state != HoldState.PENDING:
            fut.set_result(hold)

    def _on_hold_changed(self, hold: Hold, action: str, actor: Actor | None) -> None:
        """The admin API (in this process) changed a hold: wake its flow if it is held here."""
        view = _webhook_view(hold.public(time.time()))
        if hold.state == HoldState.PENDING:
            self.notifier.event("hold_approval_added", view, by=actor.subject if actor else None)
        else:
            self.notifier.event("hold_decided", view, by=actor.subject if actor else None)
            self._resolve(hold)

    def _on_grant(self, grant: Grant, event: str) -> None:
        g = grant.public(time.time())
        self.notifier.event(event, {k: g[k] for k in ("grant_id", "subject", "operation", "collection",
                                                      "granted_by", "expires_at", "revoked_by")})

    async def _poll_decisions(self) -> None:
        """Decisions made by another gateway process reach the flows held here through the store."""
        assert self.store is not None
        s = self.store.store
        seen = -1
        while True:
            await asyncio.sleep(POLL_S)
            if not self._waiters:
                continue
            try:
                version = await self.store.call(s.data_version)
                if version == seen:
                    continue
                seen = version
                for hold in await self.store.call(s.settled_among, list(self._waiters)):
                    self._resolve(hold)
            except Exception as exc:  # noqa: BLE001 - keep polling; held flows still time out
                log.error("phigate approvals: polling the hold store failed (%s)", type(exc).__name__)

    async def _housekeeping(self) -> None:
        assert self.store is not None
        s = self.store.store
        last_reap = last_beat = 0.0
        while True:
            await asyncio.sleep(SHIP_S)
            now = time.time()
            try:
                if now - last_beat >= HEARTBEAT_S:
                    await self.store.call(s.heartbeat, now)
                    last_beat = now
                if now - last_reap >= REAP_S:
                    # Another worker died with holds pending: end them as denied, recorded.
                    for hold in await self.store.call(s.reap, now, "gateway worker stopped"):
                        self.notifier.event("hold_ended", _webhook_view(hold.public(now)),
                                            reason="gateway worker stopped")
                    last_reap = now
                await self._ship()
            except Exception as exc:  # noqa: BLE001 - a failed round is retried on the next
                log.error("phigate approvals: hold store housekeeping failed (%s)", type(exc).__name__)

    async def _ship(self) -> None:
        """Hand the approvals records this process wrote to the audit ledger, once it is there.

        Until the sink takes a row, it stays in the store's decisions table (nothing is lost).
        """
        if self.store is None:
            return
        try:
            record = importlib.import_module("addons.ledger.sink").record
        except (ImportError, AttributeError):
            if not self._ledger_warned:
                log.info("phigate approvals: no audit ledger sink; approvals records stay in the hold store")
                self._ledger_warned = True
            return
        s = self.store.store
        rows = await self.store.call(s.unshipped)
        done: list[int] = []
        try:
            for seq, row in rows:
                ledger_row = {k: row.get(k) for k in LEDGER_COLUMNS}
                ledger_row["ts"] = row.get("decided_at") or row.get("requested_at")
                result = record("approval", ledger_row)
                if inspect.isawaitable(result):
                    await result
                done.append(seq)
        except Exception as exc:  # noqa: BLE001 - no ledger in this process (yet): rows wait in the store
            if not self._ledger_warned:
                log.warning("phigate approvals: the audit ledger did not take approvals records (%s); "
                            "they stay in the hold store until it does", type(exc).__name__)
                self._ledger_warned = True
        finally:
            await self.store.call(s.mark_shipped, done)

    # ------------------------------------------------------------------ approvers' identity

    async def _authenticate(self, token: str) -> Actor:
        if self.authenticate_override is not None:
            actor: Actor = await self.authenticate_override(token)
            return actor
        # The same verifier, keys, audience and role mapping as the traffic path: one JWT verifier.
        verifier = shared_verifier()
        rules_dir = getattr(ctx.options, "phigate_rules", "")
        if verifier is None or not rules_dir:
            raise AuthFailed("token verification is not configured on this gateway", 503)
        try:
            mapping = load_policy(rules_dir).current.roles
        except ConfigError:
            raise AuthFailed("the role mapping (policy.yaml) is not loaded on this gateway", 503) from None
        try:
            key, verdict = await verifier.verify(token)
        except AuthError as err:
            raise AuthFailed(err.detail) from None
        except KeysUnavailable:
            raise AuthFailed("the token issuer's keys are unavailable; try again later", 503) from None
        caller = verifier.identity(key, verdict, mapping)
        return Actor(subject=caller.subject, issuer=caller.issuer, roles=caller.roles, name=caller.name)
