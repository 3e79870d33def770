"""The Approvals addon (addons/approvals.py) with mitmproxy's taddons/tflow: the hold state machine
from the flow's side, plus the admin API and its listener, and webhook notifications."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons, tflow

from addons.approvals import Approvals
from addons.core.context import Action, Caller, Decision, HoldSpec, Operation, OpKind, context
from addons.gateway import Gateway
from addons.holds.admin import AuthFailed
from addons.holds.httpserver import Request
from addons.holds.model import Actor, HoldState
from addons.holds.notify import Notifier
from addons.holds.store import HoldStore

ISS = "http://idp.test"
ACTORS = {
    "tok-po1": Actor("approver-1", ISS, frozenset({"approver"}), "PO One"),
    "tok-po2": Actor("approver-2", ISS, frozenset({"approver"}), "PO Two"),
    "tok-agent": Actor("agent-1", ISS, frozenset({"agents"})),
    "tok-sec": Actor("sec-1", ISS, frozenset({"security-office"})),
}
PATH = "/api/v2/tenants/t/databases/d/collections/3d2da786/get"


async def fake_auth(token: str) -> Actor:
    if token not in ACTORS:
        raise AuthFailed("the token signature does not verify")
    return ACTORS[token]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def approvals(tmp_path: Path) -> AsyncIterator[Approvals]:
    addon = Approvals()
    with taddons.context(Gateway(), addon) as tctx:
        tctx.configure(addon, phigate_holds_db=str(tmp_path / "holds.sqlite"), phigate_admin_port=0,
                       phigate_node_id="node-t", phigate_reviewer_roles="approver,security-office")
        addon.authenticate_override = fake_auth
        await addon.running()
        yield addon
        await addon.done()


def held_flow(*, required: int = 1, timeout: float = 300.0, subject: str = "agent-1",
              roles: tuple[str, ...] = ("agents",), action: Action = Action.HOLD,
              body: bytes = b'{"limit": 1000, "include": ["documents"]}') -> Any:
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = PATH
    f.request.headers["content-type"] = "application/json"
    f.request.content = body
    c = context(f)
    c.identity = Caller(subject, ISS, frozenset(roles), "jti-1", time.time() + 300, name=subject.upper())
    c.operation = Operation("chroma", OpKind.EXPORT, "chroma.get", "POST", PATH, collection="notes")
    c.decision = Decision(action, "hold-export", "bulk export of notes",
                          hold=HoldSpec(frozenset({"approver"}), required, timeout)
                          if action == Action.HOLD else None)
    return f


async def admin(addon: Approvals, method: str, path: str, body: dict[str, Any] | None = None,
                token: str | None = "tok-po1") -> tuple[int, dict[str, Any]]:
    assert addon.admin is not None
    headers = {"authorization": f"Bearer {token}"} if token else {}
    path, _, qs = path.partition("?")
    query = dict(p.split("=", 1) for p in qs.split("&") if p)
    resp = await addon.admin.handle(Request(method, path, query, headers,
                                            json.dumps(body).encode() if body is not None else b"", "test"))
    return resp.status, json.loads(resp.body)


async def pending_hold(addon: Approvals, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, data = await admin(addon, "GET", "/api/holds")
        assert status == 200
        if data["holds"]:
            return dict(data["holds"][0])
        await asyncio.sleep(0.02)
    raise AssertionError("no pending hold appeared")


async def test_approved_hold_releases_exactly_the_held_request(approvals: Approvals) -> None:
    f = held_flow()
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    assert f.intercepted and not task.done()
    assert context(f).hold is not None and context(f).hold.state == "pending"
    # The reviewer sees who/what/where and a summary without record values.
    assert (hold["requester"], hold["operation"], hold["collection"], hold["rule_id"]) == (
        "agent-1", "export", "notes", "hold-export")
    assert hold["summary"]["body"]["limit"] == 1000 and hold["can_decide"] is True
    url = f"/api/holds/{hold['hold_id']}/approve"
    status, data = await admin(approvals, "POST", url, {"justification": "ticket 7"})
    assert status == 200 and data["hold"]["state"] == "approved"
    await asyncio.wait_for(task, 2)
    c = context(f)
    assert f.response is None and not f.intercepted
    assert c.hold is not None and c.hold.state == "approved" and c.hold.approvers == ["approver-1"]
    assert c.hold.justification == "ticket 7" and c.hold.request_hash == hold["request_hash"]


async def test_denied_hold_answers_403_with_hold_approver_and_reason(approvals: Approvals) -> None:
    f = held_flow()
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    await admin(approvals, "POST", f"/api/holds/{hold['hold_id']}/deny", {"justification": "no ticket"})
    await asyncio.wait_for(task, 2)
    assert f.response is not None and f.response.status_code == 403
    body = f.response.json()
    assert body["error"] == "hold_denied" and body["hold_id"] == hold["hold_id"]
    assert (body["approver"], body["reason"]) == ("approver-1", "no ticket")
    assert context(f).hold.state == "denied" and context(f).refusal.stage == "approval"  # type: ignore[union-attr]
    assert not f.intercepted


async def test_timeout_is_a_denial(approvals: Approvals) -> None:
    f = held_flow(timeout=0.3)
    started = time.monotonic()
    await asyncio.wait_for(approvals.request(f), 3)
    assert 0.3 <= time.monotonic() - started < 2
    assert f.response is not None and f.response.status_code == 403
    assert f.response.json()["error"] == "approval_timeout"
    assert f.response.json()["detail"] == "approval timed out"
    assert context(f).hold.state == "timeout"  # type: ignore[union-attr]
    _, data = await admin(approvals, "GET", "/api/decisions")
    assert data["decisions"][0]["outcome"] == "timeout"


async def test_client_disconnect_cancels_the_hold(approvals: Approvals) -> None:
    f = held_flow()
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    approvals.client_disconnected(f.client_conn)
    await asyncio.wait_for(task, 2)
    assert context(f).hold.state == "cancelled"  # type: ignore[union-attr]
    assert f.response is not None and f.response.json()["error"] == "hold_cancelled"
    status, data = await admin(approvals, "GET", f"/api/holds/{hold['hold_id']}")
    assert data["hold"]["state"] == "cancelled"
    status, _ = await admin(approvals, "POST", f"/api/holds/{hold['hold_id']}/approve", {"justification": "late"})
    assert status == 409


async def test_two_person_rule_from_the_flow_side(approvals: Approvals) -> None:
    f = held_flow(required=2)
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    url = f"/api/holds/{hold['hold_id']}/approve"
    assert (await admin(approvals, "POST", url, {"justification": "first"}))[0] == 200
    await asyncio.sleep(0.3)
    assert not task.done()  # one approval is not enough
    status, data = await admin(approvals, "POST", url, {"justification": "again"})
    assert (status, data["error"]) == (409, "already_approved")
    assert (await admin(approvals, "POST", url, {"justification": "second"}, token="tok-po2"))[0] == 200
    await asyncio.wait_for(task, 2)
    assert f.response is None and context(f).hold.approvers == ["approver-1", "approver-2"]  # type: ignore[union-attr]


async def test_decision_made_by_another_process_reaches_the_held_flow(approvals: Approvals) -> None:
    f = held_flow()
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    assert approvals.store is not None
    other = HoldStore(approvals.store.store.path, "node-other")  # another worker's admin API
    other.open()
    try:
        other.approve(hold["hold_id"], ACTORS["tok-po2"], "approved on worker 2", time.time())
    finally:
        other.close()
    await asyncio.wait_for(task, 2)
    assert f.response is None and context(f).hold.state == "approved"  # type: ignore[union-attr]


async def test_request_changed_while_held_is_not_released(approvals: Approvals) -> None:
    f = held_flow()
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    f.request.content = b'{"limit": 1000000}'
    await admin(approvals, "POST", f"/api/holds/{hold['hold_id']}/approve", {"justification": "looks fine"})
    await asyncio.wait_for(task, 2)
    assert f.response is not None and f.response.json()["error"] == "request_changed"
    assert context(f).hold.state == "denied"  # type: ignore[union-attr]


async def test_other_traffic_is_not_blocked_by_pending_holds(approvals: Approvals) -> None:
    held = [held_flow() for _ in range(20)]
    tasks = [asyncio.create_task(approvals.request(f)) for f in held]
    for _ in range(100):
        _, data = await admin(approvals, "GET", "/api/holds")
        if len(data["holds"]) == 20:
            break
        await asyncio.sleep(0.02)
    assert len(data["holds"]) == 20
    allowed = held_flow(action=Action.ALLOW)
    started = time.monotonic()
    await approvals.request(allowed)
    assert time.monotonic() - started < 0.05
    assert allowed.response is None and context(allowed).hold is None
    for f in held:
        approvals.client_disconnected(f.client_conn)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_break_glass_passes_a_hold_and_is_flagged(approvals: Approvals,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    f = held_flow(subject="er-1", roles=("clinicians", "emergency"))
    f.request.headers["x-break-glass"] = "patient coding in ER bay 3"
    with caplog.at_level("INFO", logger="phigate"):
        await asyncio.wait_for(approvals.request(f), 2)
    # Reviewers are told (log line + webhook event); the free-text justification is not logged.
    assert "BREAK-GLASS by er-1" in caplog.text and "approvals: break_glass hold=" in caplog.text
    assert "ER bay 3" not in caplog.text
    c = context(f)
    assert f.response is None and "x-break-glass" not in f.request.headers
    assert c.break_glass == "patient coding in ER bay 3"
    assert c.hold is not None and c.hold.state == "break_glass"
    _, data = await admin(approvals, "GET", "/api/decisions")
    assert (data["decisions"][0]["kind"], data["decisions"][0]["outcome"]) == ("break_glass", "break_glass")


@pytest.mark.parametrize(("roles", "header"), [
    (("clinicians",), "patient coding in ER bay 3"),  # no emergency role
    (("clinicians", "emergency"), "  x  "),  # no real justification
])
async def test_break_glass_needs_the_role_and_a_justification(approvals: Approvals, roles: tuple[str, ...],
                                                              header: str) -> None:
    f = held_flow(subject="er-1", roles=roles)
    f.request.headers["x-break-glass"] = header
    task = asyncio.create_task(approvals.request(f))
    await pending_hold(approvals)
    assert not task.done() and "x-break-glass" not in f.request.headers
    approvals.client_disconnected(f.client_conn)
    await asyncio.wait_for(task, 2)


async def test_break_glass_never_passes_a_deny(approvals: Approvals) -> None:
    f = held_flow(subject="er-1", roles=("emergency",), action=Action.DENY)
    f.request.headers["x-break-glass"] = "patient coding in ER bay 3"
    await approvals.request(f)
    assert context(f).hold is None and context(f).break_glass is None  # Forward refuses the deny


async def test_grant_window_passes_single_approver_holds_only(approvals: Approvals) -> None:
    status, data = await admin(approvals, "POST", "/api/grants", {
        "subject": "agent-1", "operation": "export", "collection": "notes", "minutes": 30,
        "justification": "quarterly export"})
    assert status == 201
    grant_id = data["grant"]["grant_id"]
    f = held_flow()
    await asyncio.wait_for(approvals.request(f), 2)
    assert f.response is None and context(f).hold.state == "granted"  # type: ignore[union-attr]
    assert context(f).hold.grant_id == grant_id  # type: ignore[union-attr]
    # A two-person rule is not satisfied by one approver's standing grant.
    two = held_flow(required=2)
    task = asyncio.create_task(approvals.request(two))
    await pending_hold(approvals)
    assert not task.done()
    approvals.client_disconnected(two.client_conn)
    await asyncio.wait_for(task, 2)
    _, data = await admin(approvals, "GET", "/api/grants")
    assert [g["grant_id"] for g in data["grants"]] == [grant_id]


@pytest.mark.parametrize(("token", "path", "body", "status", "error"), [
    (None, "/api/holds", None, 401, "unauthorized"),
    ("bogus", "/api/holds", None, 401, "unauthorized"),
    ("tok-agent", "/api/holds", None, 403, "forbidden"),
    ("tok-po1", "/api/grants", {"subject": "approver-1", "operation": "export", "collection": "notes",
                                "minutes": 5, "justification": "for me"}, 403, "self_approval"),
    ("tok-po1", "/api/grants", {"subject": "agent-1", "operation": "export", "collection": "notes",
                                "minutes": 100000, "justification": "forever"}, 400, "bad_grant"),
    ("tok-po1", "/api/grants", {"subject": "agent-1", "operation": "export", "collection": "notes",
                                "minutes": 5}, 400, "justification_required"),
    ("tok-po1", "/api/holds/h-nope/approve", {"justification": "why not"}, 404, "not_found"),
])
async def test_admin_api_refusals(approvals: Approvals, token: str | None, path: str, body: dict[str, Any] | None,
                                  status: int, error: str) -> None:
    got, data = await admin(approvals, "POST" if body is not None else "GET", path, body, token=token)
    assert (got, data["error"]) == (status, error)


async def test_justification_and_roles_are_enforced_on_decisions(approvals: Approvals) -> None:
    f = held_flow(subject="approver-2", roles=("approver",))
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    url = f"/api/holds/{hold['hold_id']}/approve"
    assert (await admin(approvals, "POST", url, {}))[1]["error"] == "justification_required"
    assert (await admin(approvals, "POST", url, {"justification": "  "}))[1]["error"] == "justification_required"
    # The requester is an approver too, but never of their own request.
    status, data = await admin(approvals, "POST", url, {"justification": "mine"}, token="tok-po2")
    assert (status, data["error"]) == (403, "self_approval")
    status, data = await admin(approvals, "GET", "/api/holds", token="tok-po2")
    assert data["holds"][0]["can_decide"] is False
    # A reviewer whose role the rule does not name may look but not decide.
    status, data = await admin(approvals, "POST", url, {"justification": "security"}, token="tok-sec")
    assert (status, data["error"]) == (403, "not_an_approver")
    approvals.client_disconnected(f.client_conn)
    await asyncio.wait_for(task, 2)


async def test_shutdown_ends_pending_holds_as_denied(approvals: Approvals) -> None:
    f = held_flow()
    task = asyncio.create_task(approvals.request(f))
    await pending_hold(approvals)
    assert approvals.store is not None
    path = approvals.store.store.path
    await approvals.done()
    await asyncio.wait_for(task, 2)
    assert f.response is not None and f.response.json()["reason"] == "gateway stopped"
    check = HoldStore(path, "x")
    check.open()
    try:
        assert [h.state for h in check.holds()] == [HoldState.DENIED]
    finally:
        check.close()
    approvals.store = None  # the fixture's done() has nothing left to do


async def test_streamed_body_cannot_be_held(approvals: Approvals) -> None:
    f = held_flow()
    f.request.stream = True
    await approvals.request(f)
    assert f.response is not None and f.response.status_code == 403 and not f.intercepted


async def test_misconfigured_hold_fails_closed(approvals: Approvals) -> None:
    f = held_flow()
    c = context(f)
    c.decision = Decision(Action.HOLD, "broken", None, hold=HoldSpec(frozenset()))
    await approvals.request(f)
    assert f.response is not None and f.response.status_code == 500


async def test_store_failure_fails_closed(approvals: Approvals, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    assert approvals.store is not None
    monkeypatch.setattr(approvals.store.store, "create", broken)
    f = held_flow()
    await approvals.request(f)
    assert f.response is not None and f.response.status_code == 503 and context(f).refusal is not None
    assert f.response.json()["error"] == "approvals_unavailable"
    assert not f.intercepted


class Locked:
    """Another process holding the hold store's write lock (an exclusive transaction)."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        self.db = sqlite3.connect(path, isolation_level=None, timeout=0.1)
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


async def test_a_locked_store_is_a_503_with_the_reason(approvals: Approvals, tmp_path: Path) -> None:
    lock = Locked(tmp_path / "holds.sqlite")
    try:
        f = held_flow()
        await approvals.request(f)
        assert f.response is not None and f.response.status_code == 503
        body = f.response.json()
        assert body["error"] == "approvals_unavailable" and "database is locked" in body["detail"]
        assert not f.intercepted
    finally:
        lock.release()


async def test_under_a_lock_approvals_are_503_and_timeouts_keep_their_time(approvals: Approvals,
                                                                          tmp_path: Path) -> None:
    f = held_flow(timeout=3.0)
    started = time.monotonic()
    task = asyncio.create_task(approvals.request(f))
    hold = await pending_hold(approvals)
    lock = Locked(tmp_path / "holds.sqlite")
    try:
        status, data = await admin(approvals, "POST", f"/api/holds/{hold['hold_id']}/approve",
                                   {"justification": "ticket 9"})
        assert status == 503 and data["error"] == "store_unavailable" and "database is locked" in data["detail"]
        await asyncio.wait_for(task, 10)
        took = time.monotonic() - started
    finally:
        lock.release()
    assert f.response is not None and f.response.json()["error"] == "approval_timeout"
    # The configured 3 s, not 3 s plus the store's lock wait.
    assert 3.0 <= took < 3.0 + 1.5, took
    assert context(f).hold is not None and context(f).hold.state == "timeout"  # type: ignore[union-attr]


async def test_a_broken_ledger_creates_no_hold_and_pages_nobody(approvals: Approvals,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from addons.core import readiness

    events: list[str] = []
    monkeypatch.setattr(approvals.notifier, "event", lambda kind, *a, **k: events.append(kind))
    monkeypatch.setitem(readiness._readiness, "audit", lambda: "audit store write failed (disk full)")
    f = held_flow()
    await approvals.request(f)
    assert f.response is not None and f.response.status_code == 503
    assert f.response.json()["error"] == "audit_unavailable"
    assert approvals.store is not None
    assert approvals.store.call_blocking(approvals.store.store.holds) == [] and events == []


# ---------------------------------------------------------------- the listener and the console


async def test_admin_listener_serves_console_and_api(tmp_path: Path) -> None:
    addon = Approvals()
    port = free_port()
    with taddons.context(Gateway(), addon) as tctx:
        tctx.configure(addon, phigate_holds_db=str(tmp_path / "h.sqlite"), phigate_admin_port=port)
        addon.authenticate_override = fake_auth
        await addon.running()
        try:
            base = f"http://127.0.0.1:{port}"

            def get(path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
                req = urllib.request.Request(base + path)
                if token:
                    req.add_header("Authorization", f"Bearer {token}")
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        return r.status, dict(r.headers), r.read()
                except urllib.error.HTTPError as e:
                    return e.code, dict(e.headers), e.read()

            status, headers, body = await asyncio.to_thread(get, "/")
            assert status == 200 and b"reviewer console" in body and b"<script src=\"/console.js\"" in body
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
            status, _, body = await asyncio.to_thread(get, "/console.js")
            assert status == 200 and b"textContent" in body and b"innerHTML" not in body
            status, headers, _ = await asyncio.to_thread(get, "/api/holds")
            assert status == 401 and "Bearer" in headers["www-authenticate"]
            status, _, body = await asyncio.to_thread(get, "/api/me", "tok-po1")
            assert status == 200 and json.loads(body)["subject"] == "approver-1"

            def raw(data: bytes) -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(data)
                    return s.recv(4096)

            assert (await asyncio.to_thread(raw, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
            big = b"POST /api/grants HTTP/1.1\r\nhost: x\r\ncontent-length: 200000\r\n\r\n" + b"x" * 70000
            assert (await asyncio.to_thread(raw, big)).startswith(b"HTTP/1.1 413")
        finally:
            await addon.done()


async def test_non_loopback_admin_listener_needs_tls(tmp_path: Path) -> None:
    addon = Approvals()
    with taddons.context(Gateway(), addon) as tctx:
        with pytest.raises(Exception, match="not loopback"):
            tctx.configure(addon, phigate_admin_host="0.0.0.0")


# ---------------------------------------------------------------- notifications


class Hook(http.server.BaseHTTPRequestHandler):
    failures_left = 0
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if Hook.failures_left > 0:
            Hook.failures_left -= 1
            self.send_response(503)
        else:
            Hook.received.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_webhook_is_retried_with_backoff_and_never_blocks(caplog: pytest.LogCaptureFixture) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.failures_left, Hook.received = 2, []
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    n = Notifier([f"http://127.0.0.1:{server.server_address[1]}/hook", dead], "http://console/",
                 backoff=(0.05, 0.1))
    n.start()
    try:
        started = time.monotonic()
        with caplog.at_level("INFO", logger="phigate"):
            n.event("hold_started", {"hold_id": "h-1", "requester": "agent-1", "operation": "export"})
            assert time.monotonic() - started < 0.05  # queued, not delivered inline
            for _ in range(100):
                if Hook.received and n.failed:
                    break
                await asyncio.sleep(0.05)
        assert [r["event"] for r in Hook.received] == ["hold_started"]
        assert Hook.received[0]["hold"]["hold_id"] == "h-1" and Hook.received[0]["console"] == "http://console/"
        assert n.delivered == 1 and n.failed == 1
        assert "hold_started hold=h-1" in caplog.text
        assert "failed after 3 attempts" in caplog.text
    finally:
        n.stop()
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- handing records to the audit ledger


async def test_flowless_records_are_handed_to_the_ledger_sink(approvals: Approvals,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from addons.ledger import canonical, sink

    taken: list[tuple[str, dict[str, Any]]] = []

    def record(kind: str, row: dict[str, Any]) -> None:
        canonical.encode(kind, 1, row)  # the ledger's own validation: kind and columns must fit
        taken.append((kind, dict(row)))

    monkeypatch.setattr(sink, "record", record)
    await admin(approvals, "POST", "/api/grants", {"subject": "agent-1", "operation": "export",
                                                   "collection": "notes", "minutes": 5,
                                                   "justification": "weekly registry export"})
    await approvals._ship()
    assert [(k, r["kind"], r["outcome"], r["approvers"]) for k, r in taken] == [
        ("approval", "grant", "granted", ["approver-1"])]
    await approvals._ship()
    assert len(taken) == 1  # shipped once


async def test_records_wait_in_the_store_while_the_ledger_is_down(approvals: Approvals,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from addons.ledger import sink

    def down(kind: str, row: dict[str, Any]) -> None:
        raise sink.SinkUnavailable("no audit ledger runs in this process")

    monkeypatch.setattr(sink, "record", down)
    await admin(approvals, "POST", "/api/grants", {"subject": "agent-1", "operation": "export",
                                                   "collection": "notes", "minutes": 5,
                                                   "justification": "weekly registry export"})
    await approvals._ship()
    assert approvals.store is not None
    assert len(await approvals.store.call(approvals.store.store.unshipped)) == 1


async def test_workers_can_share_the_admin_port(tmp_path: Path) -> None:
    from addons.holds import httpserver

    async def answer(request: Request) -> httpserver.Response:
        return httpserver.json_answer(200, {"ok": True})

    port = free_port()
    first = await httpserver.serve("127.0.0.1", port, answer, reuse_port=True)
    second = await httpserver.serve("127.0.0.1", port, answer, reuse_port=True)  # a second worker
    try:
        with pytest.raises(OSError):
            await httpserver.serve("127.0.0.1", port, answer)  # without the option: refused
    finally:
        first.close()
        second.close()


async def test_unusable_store_refuses_holds_and_is_not_ready(tmp_path: Path) -> None:
    from addons.core.readiness import not_ready_reasons

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    addon = Approvals()
    with taddons.context(Gateway(), addon) as tctx:
        tctx.configure(addon, phigate_holds_db=str(blocker / "holds.sqlite"), phigate_admin_port=0)
        await addon.running()
        try:
            assert not_ready_reasons()["approvals"] == "the hold store is not open"
            f = held_flow()
            await addon.request(f)
            assert f.response is not None and f.response.status_code == 503
            assert f.response.json()["error"] == "approvals_unavailable"
        finally:
            await addon.done()


@pytest.mark.parametrize(("operation", "facts", "expected"), [
    ("export", {"has_filter": False, "limit": None}, "every record in the collection (no limit)"),
    ("export", {"has_filter": True}, "every record matching a filter (no limit)"),
    ("get", {"has_ids": True, "ids_count": 3}, "3 record(s), named by id"),
    ("get", {"limit": 50, "has_filter": True}, "up to 50 record(s) matching a filter"),
    ("search", {"n_results": 10, "query_count": 2}, "up to 20 record(s) (2 queries x 10 results)"),
    ("search", {"n_results": 5}, "up to 5 record(s) (1 query x 5 results)"),
    ("delete", {"has_filter": True}, "records matching a filter"),
    ("export", {"limit": True}, "every record in the collection (no limit)"),  # a flag is not a count
])
def test_estimated_records_in_a_reviewers_words(operation: str, facts: dict[str, Any], expected: str) -> None:
    from addons.holds.summary import estimate_records

    assert estimate_records(operation, facts) == expected


async def test_a_held_requests_summary_says_its_purpose_and_how_much_it_releases(approvals: Approvals) -> None:
    f = held_flow()
    c = context(f)
    c.purpose = "treatment"
    assert c.operation is not None
    c.operation = Operation("chroma", OpKind.EXPORT, "chroma.get", "POST", PATH, collection="notes",
                            facts={"limit": 1000, "has_filter": False})
    task = asyncio.ensure_future(approvals.request(f))
    hold = await pending_hold(approvals)
    assert hold["summary"]["purpose"] == "treatment"
    assert hold["summary"]["estimated_records"] == "up to 1000 record(s)"
    assert hold["collection"] == "notes"
    await admin(approvals, "POST", f"/api/holds/{hold['hold_id']}/deny", {"justification": "not needed"})
    await task


async def test_the_console_signs_in_at_the_configured_issuer_and_may_fetch_only_from_it(tmp_path: Path) -> None:
    addon = Approvals()
    with taddons.context(Gateway(), addon) as tctx:
        # The Identity addon's option, read by the console's sign-in settings.
        tctx.options.add_option("phigate_issuer", str, "https://idp.example.org/realms/clinic", "issuer")
        tctx.configure(addon, phigate_holds_db=str(tmp_path / "holds.sqlite"), phigate_admin_port=0,
                       phigate_console_client_id="reviewers", phigate_console_scope="openid phigate")
        await addon.running()
        try:
            assert addon.admin is not None
            resp = await addon.admin.handle(Request("GET", "/console-config.json", {}, {}, b"", "test"))
            assert resp.status == 200 and json.loads(resp.body) == {
                "issuer": "https://idp.example.org/realms/clinic", "client_id": "reviewers", "scope": "openid phigate"}
            page = await addon.admin.handle(Request("GET", "/", {}, {}, b"", "test"))
            csp = page.headers["content-security-policy"]
            assert "connect-src 'self' https://idp.example.org;" in csp and "script-src 'self';" in csp
        finally:
            await addon.done()
