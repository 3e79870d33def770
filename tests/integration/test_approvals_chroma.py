"""Approval holds end to end: the real chromadb client held by the gateway (stock mitmdump with
addons/chain.py) in front of a real Chroma, approvers with real OIDC tokens from the real provider,
deciding through the admin API and `./run.sh approvals` (python -m addons.cli.approvals)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from addons.cli.approvals import AdminClient, AdminError
from tests.support.servers import (
    CHROMA_PYTHON,
    ROOT,
    Chroma,
    Gateway,
    Idp,
    RecordingUpstream,
    free_port,
    http_call,
    wait_http,
)

pytestmark = pytest.mark.integration

# Test-only hold rules, tried before the shipped ones (first match wins). Collection name prefixes
# select them; every test uses fresh collections on the shared Chroma server.
EXTRA_RULES: list[dict[str, Any]] = [
    {"id": "test-export-short", "roles": ["clinician"], "operations": ["export"],
     "collections": ["patients_short*"], "action": "hold", "approver_roles": ["approver"], "timeout": "2s",
     "reason": "test: short approval window"},
    {"id": "test-export-two-person", "roles": ["clinician"], "operations": ["export"],
     "collections": ["patients_two*"], "action": "hold", "approver_roles": ["approver"],
     "approvals_required": 2, "reason": "test: two-person rule"},
    # An approver who may also export (with approval): the self-approval case.
    {"id": "test-approver-opens", "roles": ["approver"], "routes": ["chroma.collection.get",
                                                                    "chroma.collection.get_by_id"],
     "collections": ["patients_self*"], "action": "allow"},
    {"id": "test-approver-exports", "roles": ["approver"], "operations": ["export"],
     "collections": ["patients_self*"], "action": "hold", "approver_roles": ["approver"],
     "reason": "test: an approver's own export"},
]

RECORDS = {
    "ids": ["n1", "n2", "n3"],
    "embeddings": [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.2, 0.2, 0.2, 0.2]],
    "metadatas": [{"ward": "cardio"}, {"ward": "endo"}, {"ward": "cardio"}],
    "documents": ["Jane Roe chest pain follow-up", "insulin dose review", "stress test scheduled"],
}


def test_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    policy = yaml.safe_load((rules / "policy.yaml").read_text())
    policy["rules"] = EXTRA_RULES + policy["rules"]
    (rules / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    return rules


test_rules.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


class Env:
    """A gateway with its admin API, and helpers to act as clients and approvers."""

    def __init__(self, gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp, tmp_path: Path,
                 db: Path | None = None, admin_port: int | None = None, **options: str) -> None:
        self.chroma, self.idp, self.tmp_path = chroma, idp, tmp_path
        self.admin_port = admin_port or free_port()
        self.db = db or tmp_path / "holds.sqlite"
        self.rules = tmp_path / "rules" if (tmp_path / "rules").is_dir() else test_rules(tmp_path)
        self.gw = gateway_factory(chroma.url, phigate_rules=str(self.rules), phigate_admin_port=self.admin_port,
                                  phigate_holds_db=str(self.db), **options)
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        # The proxy answers /-/healthz a moment before the admin listener is up (running() opens the
        # store and ends a previous process's holds first).
        wait_http(f"{self.admin_url}/healthz", 30)

    def approver(self, client_id: str = "approver-1") -> AdminClient:
        return AdminClient(self.admin_url, self.idp.token(client_id))

    def collection(self, prefix: str) -> tuple[str, str]:
        """A fresh collection with three records, made directly on Chroma; returns (name, id)."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        base = f"{self.chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections"
        status, _, body = http_call("POST", base, {"name": name})
        assert status == 200, body
        cid = json.loads(body)["id"]
        status, _, body = http_call("POST", f"{base}/{cid}/add", {**RECORDS, "embeddings": RECORDS["embeddings"]})
        assert status in (200, 201), body
        return name, cid

    def open(self, name: str, token: str) -> None:
        """Open the collection by name through the gateway, as SDKs do, so it learns name <-> id."""
        path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{name}"
        status, _, body = http_call("GET", self.gw.url + path, None, {"Authorization": f"Bearer {token}"})
        assert status == 200, body

    def export(self, client_id: str, collection: str) -> HeldClient:
        return HeldClient(self.gw.url, self.idp.token(client_id),
                          [{"op": "get", "collection": collection, "include": ["documents"]}])


class HeldClient:
    """The real chromadb client in its own venv, running in the background while a test decides."""

    def __init__(self, url: str, token: str, steps: list[dict[str, Any]]) -> None:
        self.proc = subprocess.Popen(
            [str(CHROMA_PYTHON), str(ROOT / "tests" / "support" / "chroma_client.py"), "--url", url,
             "--token", token, "--steps", json.dumps(steps)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"}, start_new_session=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout: float = 60) -> list[dict[str, Any]]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-3000:]
        return list(json.loads(out.splitlines()[-1]))

    def kill(self) -> None:
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=10)


def pending_for(admin: AdminClient, collection: str, timeout: float = 60) -> dict[str, Any]:
    return admin.wait_for_pending(lambda h: h["collection"] == collection, timeout=timeout)


def wait_state(admin: AdminClient, hold_id: str, state: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        hold = admin.hold(hold_id)
        if hold["state"] == state or time.monotonic() > deadline:
            assert hold["state"] == state, hold
            return hold
        time.sleep(0.1)


def cli(env: Env, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "addons.cli.approvals", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PHIGATE_TOKEN": token, "PHIGATE_ADMIN_URL": env.admin_url})


@pytest.fixture
def env(gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp, tmp_path: Path) -> Env:
    return Env(gateway_factory, chroma, idp, tmp_path)


def test_export_waits_for_an_approver_then_completes(env: Env) -> None:
    name, _ = env.collection("patients")
    client = env.export("clin-1", name)
    admin = env.approver()
    hold = pending_for(admin, name)
    assert (hold["requester"], hold["operation"], hold["rule_id"]) == ("clin-1", "export", "export-needs-approval")
    # The admin API verifies tokens with the gateway's own verifier and role mapping.
    for token, status in (("not-a-jwt", 401), (env.idp.token("clin-1"), 403), (env.idp.token("short-1"), 403)):
        with pytest.raises(AdminError) as err:
            AdminClient(env.admin_url, token).pending()
        assert err.value.status == status
    # The reviewer sees the shape of the request, never record content.
    assert "Jane Roe" not in json.dumps(hold) and hold["summary"]["bytes"] > 0
    time.sleep(1.0)
    assert client.running(), "the client must stay blocked while the hold is pending"
    approved = admin.approve(hold["hold_id"], "ticket PRIV-1: quarterly quality review")
    assert approved["state"] == "approved" and approved["approvers"] == ["approver-1"]
    [result] = client.result()
    assert result["ok"], result
    assert sorted(result["result"]["ids"]) == ["n1", "n2", "n3"]
    [decision] = [d for d in admin.decisions() if d.get("hold_id") == hold["hold_id"]]
    assert (decision["outcome"], decision["requester"], decision["approvers"]) == ("approved", "clin-1",
                                                                                  ["approver-1"])
    assert decision["justification"] == "ticket PRIV-1: quarterly quality review"


def test_denied_through_the_cli_answers_403_with_approver_and_reason(env: Env) -> None:
    name, _ = env.collection("patients")
    client = env.export("clin-1", name)
    admin = env.approver("approver-2")
    hold = pending_for(admin, name)
    listing = cli(env, admin.token, "list")
    assert listing.returncode == 0 and hold["hold_id"] in listing.stdout and "clin-1" in listing.stdout
    missing = cli(env, admin.token, "deny", hold["hold_id"])
    assert missing.returncode == 2 and "--reason" in missing.stderr  # justification is mandatory
    denied = cli(env, admin.token, "deny", hold["hold_id"], "--reason", "no ticket for this export")
    assert denied.returncode == 0, denied.stderr
    assert "denied" in denied.stdout
    [result] = client.result()
    assert not result["ok"]
    message = result["error"]["message"]
    assert "denied by approver-2: no ticket for this export" in message and hold["hold_id"] in message
    again = cli(env, admin.token, "approve", hold["hold_id"], "--reason", "changed my mind")
    assert again.returncode == 1 and "already denied" in again.stderr


def test_no_decision_in_time_is_a_denial_and_reviewers_are_told(
        gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    with RecordingUpstream() as hook:
        env = Env(gateway_factory, chroma, idp, tmp_path, phigate_approval_webhooks=f"{hook.url}/phigate-holds")
        name, _ = env.collection("patients_short")
        started = time.monotonic()
        [result] = env.export("clin-1", name).result()
        assert 2.0 <= time.monotonic() - started < 30
        assert not result["ok"] and "approval timed out" in result["error"]["message"]
        admin = env.approver()
        [decision] = [d for d in admin.decisions() if d.get("collection") == name]
        assert decision["outcome"] == "timeout" and decision["rule_id"] == "test-export-short"
        deadline = time.monotonic() + 10
        while len(hook.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    events = [json.loads(r["body"]) for r in hook.requests]
    assert [e["event"] for e in events] == ["hold_started", "hold_expired"]
    assert all(r["path"] == "/phigate-holds" and r["method"] == "POST" for r in hook.requests)
    assert events[0]["hold"]["collection"] == name and events[0]["console"] == env.admin_url + "/"
    assert "Jane Roe" not in json.dumps(events)  # PHI-free payloads


def test_self_approval_is_refused_and_two_person_rule_needs_two(env: Env) -> None:
    own, _ = env.collection("patients_self")
    client = env.export("approver-1", own)
    po1, po2 = env.approver("approver-1"), env.approver("approver-2")
    hold = pending_for(po1, own)
    assert [h["can_decide"] for h in po1.pending() if h["hold_id"] == hold["hold_id"]] == [False]
    with pytest.raises(AdminError) as err:
        po1.approve(hold["hold_id"], "it is my own, trust me")
    assert (err.value.status, err.value.error) == (403, "self_approval")
    assert client.running()
    po2.approve(hold["hold_id"], "second person checked it")
    assert client.result()[0]["ok"]

    two, _ = env.collection("patients_two")
    client = env.export("clin-1", two)
    hold = pending_for(po1, two)
    assert po1.approve(hold["hold_id"], "first of two")["state"] == "pending"
    with pytest.raises(AdminError, match="already approved"):
        po1.approve(hold["hold_id"], "first of two, again")
    time.sleep(0.5)
    assert client.running()
    assert po2.approve(hold["hold_id"], "second of two")["approvers"] == ["approver-1", "approver-2"]
    assert client.result()[0]["ok"]


def test_client_disconnect_cancels_the_hold(env: Env) -> None:
    name, _ = env.collection("patients")
    client = env.export("clin-1", name)
    admin = env.approver()
    hold = pending_for(admin, name)
    client.kill()
    cancelled = wait_state(admin, hold["hold_id"], "cancelled")
    assert cancelled["justification"] == "the client disconnected while held"
    with pytest.raises(AdminError, match="already cancelled"):
        admin.approve(hold["hold_id"], "too late now")


def test_break_glass_passes_a_hold_and_is_flagged(env: Env) -> None:
    name, cid = env.collection("patients")
    path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{cid}/get"
    token = env.idp.token("er-1")
    env.open(name, token)
    status, _, body = http_call("POST", env.gw.url + path, {"include": ["documents"]},
                                {"Authorization": f"Bearer {token}", "X-Break-Glass": "code blue, bay 3, no chart"})
    assert status == 200, body
    assert sorted(json.loads(body)["ids"]) == ["n1", "n2", "n3"]
    admin = env.approver()
    [decision] = [d for d in admin.decisions() if d.get("collection") == name]
    assert (decision["kind"], decision["outcome"], decision["requester"]) == ("break_glass", "break_glass", "er-1")
    assert decision["justification"] == "code blue, bay 3, no chart"
    # Without the header the same caller is held like anyone else.
    held = threading.Thread(target=http_call, args=("POST", env.gw.url + path, {}),
                            kwargs={"headers": {"Authorization": f"Bearer {token}"}, "timeout": 30}, daemon=True)
    held.start()
    hold = pending_for(admin, name)
    admin.deny(hold["hold_id"], "use break-glass only in emergencies")
    held.join(10)


def test_grant_lets_matching_exports_pass_until_revoked(env: Env) -> None:
    name, _ = env.collection("patients")
    token = env.idp.token("approver-1")
    granted = cli(env, token, "grant", "--user", "clin-1", "--operation", "export", "--collection", name,
                  "--minutes", "30", "--reason", "weekly export for the registry")
    assert granted.returncode == 0, granted.stderr
    grants = cli(env, token, "grants")
    assert name in grants.stdout and "clin-1" in grants.stdout
    started = time.monotonic()
    [result] = env.export("clin-1", name).result()
    assert result["ok"] and time.monotonic() - started < 30
    admin = env.approver()
    outcomes = [(d["kind"], d["outcome"]) for d in admin.decisions() if d.get("collection") == name]
    assert ("grant", "granted") in outcomes  # the grant, and its use on this export


def test_restart_ends_pending_holds_as_denied(gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp,
                                              tmp_path: Path) -> None:
    first = Env(gateway_factory, chroma, idp, tmp_path)
    name, _ = first.collection("patients")
    client = first.export("clin-1", name)
    hold = pending_for(first.approver(), name)
    first.gw.proc.kill9()  # no clean shutdown: the new process must find and end the hold
    client.kill()
    second = Env(gateway_factory, chroma, idp, tmp_path, db=first.db)
    ended = wait_state(second.approver(), hold["hold_id"], "denied")
    assert ended["justification"] == "gateway restarted"
    assert [d["outcome"] for d in second.approver().decisions() if d.get("hold_id") == hold["hold_id"]] == ["denied"]


def test_a_decision_on_one_worker_releases_a_flow_held_by_another(
        gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    one = Env(gateway_factory, chroma, idp, tmp_path)
    two = Env(gateway_factory, chroma, idp, tmp_path, db=one.db)
    name, _ = one.collection("patients")
    client = one.export("clin-1", name)
    admin_two = two.approver()
    hold = pending_for(admin_two, name)  # worker two lists worker one's hold
    admin_two.approve(hold["hold_id"], "approved on the other worker")
    assert client.result(timeout=30)[0]["ok"]


def test_fifty_holds_do_not_slow_ordinary_queries(env: Env) -> None:
    name, cid = env.collection("patients")
    base = f"{env.gw.url}/api/v2/tenants/default_tenant/databases/default_database/collections/{cid}"
    token = env.idp.token("clin-1")
    env.open(name, token)
    clin = {"Authorization": f"Bearer {token}"}
    query = {"query_embeddings": [[0.1, 0.2, 0.3, 0.4]], "n_results": 2, "where": {"ward": "cardio"},
             "include": ["documents"]}

    def timed_queries(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            status, _, body = http_call("POST", f"{base}/query", query, clin)
            assert status == 200, body
            out.append(time.perf_counter() - t)
        return out

    timed_queries(5)  # warm up: token cache, connections, Chroma's index
    baseline = statistics.median(timed_queries(30))
    results: list[int] = []

    def export() -> None:
        status, _, _ = http_call("POST", f"{base}/get", {"include": ["documents"]}, clin, timeout=120)
        results.append(status)

    threads = [threading.Thread(target=export, daemon=True) for _ in range(50)]
    for t in threads:
        t.start()
    admin = env.approver()
    deadline = time.monotonic() + 60
    while len([h for h in admin.pending() if h["collection"] == name]) < 50:
        assert time.monotonic() < deadline, "50 holds did not all appear"
        time.sleep(0.1)
    held = statistics.median(timed_queries(30))
    print(f"\nquery median: {baseline * 1000:.1f} ms without holds, {held * 1000:.1f} ms with 50 pending holds")
    # Pending holds cost no event-loop time: ordinary traffic keeps its latency (generous bound for
    # a loaded 2-core CI machine).
    assert held < max(3 * baseline, baseline + 0.05)
    assert results == []  # all 50 still held
    for h in admin.pending():
        if h["collection"] == name:
            admin.approve(h["hold_id"], "bulk approval in the load test")
    for t in threads:
        t.join(60)
    assert results == [200] * 50


def test_approvals_records_reach_the_audit_ledger(gateway_factory: Callable[..., Gateway], chroma: Chroma,
                                                  idp: Idp, tmp_path: Path) -> None:
    from addons.ledger.read import open_ledger

    first = Env(gateway_factory, chroma, idp, tmp_path)
    granted, _ = first.collection("patients")
    first.approver().grant("clin-1", "export", granted, 5, "registry export window")
    assert first.export("clin-1", granted).result()[0]["ok"]  # the grant's use: the flow's own record
    held, _ = first.collection("patients")
    client = first.export("clin-1", held)
    hold = pending_for(first.approver(), held)
    first.gw.proc.kill9()
    client.kill()
    second = Env(gateway_factory, chroma, idp, tmp_path, db=first.db)
    wait_state(second.approver(), hold["hold_id"], "denied")
    time.sleep(2.5)  # the store hands records to the ledger every second
    second.gw.stop()
    rows = open_ledger(tmp_path / "audit").execute(
        "SELECT kind, outcome, hold_id, requester, approvers, collection FROM approvals ORDER BY seq").fetchall()
    # Grant made (store -> sink), grant used (the flow's audit event), restart denial (store -> sink).
    assert ("grant", "granted", None, "clin-1", ["approver-1"], granted) in rows
    assert [r[:2] for r in rows if r[2] is not None and r[5] == granted] == [("grant", "granted")]
    assert [r[:4] for r in rows if r[2] == hold["hold_id"]] == [("hold", "denied", hold["hold_id"], "clin-1")]
