"""What /-/readyz and clients see when a part behind the gateway fails: the backend (a real Chroma
stopped and started again), a rule edit that does not compile, an audit folder that cannot be
opened at start, and a hold store locked by another process."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from addons.cli.approvals import AdminError
from addons.ledger.read import open_ledger
from tests.integration.test_approvals_chroma import Env, pending_for
from tests.integration.test_record_caps_chroma import Call
from tests.support.servers import ROOT, Chroma, Gateway, Idp, http_call

pytestmark = pytest.mark.integration
COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def readyz(gw: Gateway) -> tuple[int, dict[str, object]]:
    status, _, body = http_call("GET", f"{gw.url}/-/readyz")
    return status, json.loads(body)


def wait_readyz(gw: Gateway, wanted: int, timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = readyz(gw)
        if status == wanted:
            return body
        assert time.monotonic() < deadline, f"/-/readyz stayed {status}: {body}"
        time.sleep(0.2)


def test_readyz_follows_the_backend(gateway_factory: Callable[..., Gateway]) -> None:
    backend = Chroma().start()
    try:
        gw = gateway_factory(backend.url, phigate_backend_check_s=1)
        assert readyz(gw) == (200, {"status": "ready"})
        backend.proc.stop()
        body = wait_readyz(gw, 503)
        reasons = body["reasons"]
        assert isinstance(reasons, dict) and set(reasons) == {"backend"}
        assert "GET /api/v2/healthcheck" in reasons["backend"] and str(backend.port) not in reasons["backend"]
        backend.proc.start()
        wait_readyz(gw, 200, timeout=60)
    finally:
        backend.stop()


def test_a_rejected_rule_edit_shows_in_readyz_and_is_an_incident(
        chroma: Chroma, gateway_factory: Callable[..., Gateway], tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    gw = gateway_factory(chroma.url, phigate_rules=str(rules))
    policy = rules / "policy.yaml"
    good = policy.read_text()
    policy.write_text(good.replace("    action: deny\n", "    action: sometimes\n", 1))
    body = wait_readyz(gw, 200)
    deadline = time.monotonic() + 10
    while "rejected_rule_edits" not in body:
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
        body = wait_readyz(gw, 200)
    # Still ready (serving the last good rules), and saying which edit failed and why.
    [(path, why)] = dict(body["rejected_rule_edits"]).items()  # type: ignore[call-overload]
    assert path.endswith("policy.yaml") and "no-drop" in why and "sometimes" in why
    # A good edit clears it.
    policy.write_text(good)
    deadline = time.monotonic() + 10
    while "rejected_rule_edits" in wait_readyz(gw, 200):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.5)  # the incident is written with the next group commit
    gw.stop()
    con = open_ledger(tmp_path / "audit")
    incidents = con.execute("SELECT kind, detail FROM incidents").fetchall()
    con.close()
    assert [k for k, _ in incidents] == ["rule_edit_rejected"], incidents
    assert "sometimes" in incidents[0][1]


@pytest.mark.parametrize("witness", ["elsewhere", "default"])
def test_an_audit_folder_that_cannot_be_opened_keeps_the_gateway_up_refusing(
        chroma: Chroma, idp: Idp, gateway_factory: Callable[..., Gateway], tmp_path: Path, witness: str) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the audit folder's parent should be")
    where = {"phigate_witness": str(tmp_path / "witness")} if witness == "elsewhere" else {}
    gw = gateway_factory(chroma.url, phigate_audit_dir=str(blocked / "audit"), **where)
    time.sleep(1.0)
    assert gw.proc.proc is not None and gw.proc.proc.poll() is None, gw.proc.log()[-2000:]
    status, body = readyz(gw)
    assert status == 503 and "cannot open the audit" in str(body["reasons"]), body  # type: ignore[index]
    status, _, answer = http_call("GET", f"{gw.url}{COLLECTIONS}",
                                  headers={"Authorization": f"Bearer {idp.token('admin-1')}"})
    assert status == 503 and json.loads(answer)["error"] == "audit_unavailable"


def test_a_locked_hold_store_is_a_503_and_holds_keep_their_time(
        gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    env = Env(gateway_factory, chroma, idp, tmp_path)
    name, cid = env.collection("patients_short")  # held for at most 2 s (test-export-short)
    token = idp.token("clin-1")
    env.open(name, token)
    call = Call(f"{env.gw.url}{COLLECTIONS}/{cid}/get", {}, token)  # get-all: an export, held
    admin = env.approver()
    hold = pending_for(admin, name)
    lock = sqlite3.connect(env.db, isolation_level=None, timeout=0.1)
    lock.execute("BEGIN EXCLUSIVE")  # another process holding the store's write lock
    try:
        with pytest.raises(AdminError) as err:
            admin.approve(hold["hold_id"], "ticket 12: approved while locked")
        assert err.value.status == 503 and "database is locked" in err.value.detail
        status, answer = call.result()
        answered = time.time()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert (status, answer["error"]) == (403, "approval_timeout"), answer
    # The rule's 2 s from the hold's start: not 2 s plus the store's lock wait.
    assert answered - hold["requested_at"] < 2.0 + 1.0, answered - hold["requested_at"]
