"""The shared hold store (addons/holds/store.py): the state machine, the two-person rule, grants,
restarts, and two processes' connections on one SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.holds.model import Actor, DecisionError, HoldState, NewHold
from addons.holds.store import HoldStore
from addons.holds.summary import masked_summary, request_hash

ISS = "http://idp"
PO1 = Actor("approver-1", ISS, frozenset({"privacy-office"}), "PO One")
PO2 = Actor("approver-2", ISS, frozenset({"privacy-office"}), "PO Two")
AGENT = Actor("agent-1", ISS, frozenset({"agents", "privacy-office"}))
CLIN = Actor("clin-1", ISS, frozenset({"clinicians"}))


def new_hold(hold_id: str = "h-1", *, required: int = 1, now: float = 1000.0, timeout: float = 300.0,
             requester: str = "agent-1") -> NewHold:
    return NewHold(
        hold_id=hold_id, kind="hold", request_id="r-" + hold_id, requester=requester, requester_issuer=ISS,
        requester_name=None, rule_id="hold-export", reason="bulk export", backend="chroma", operation="export",
        route="chroma.get", collection="notes", method="POST", path="/api/v2/x/get",
        summary={"bytes": 2}, request_hash=request_hash("POST", "/api/v2/x/get", b"{}"),
        approver_roles=frozenset({"privacy-office"}), approvals_required=required, requested_at=now,
        expires_at=now + timeout,
    )


@pytest.fixture
def store(tmp_path: Path) -> HoldStore:
    s = HoldStore(tmp_path / "holds.sqlite", "node-a")
    s.open()
    yield s
    s.close()


def test_store_uses_wal_and_records_migrations(store: HoldStore) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_single_approval_releases_and_is_recorded(store: HoldStore) -> None:
    store.create(new_hold())
    hold = store.approve("h-1", PO1, "ticket 42", 1001.0)
    assert hold.state == HoldState.APPROVED
    assert hold.approvers == ("approver-1",) and hold.justification == "ticket 42"
    [row] = store.decisions()
    assert (row["outcome"], row["kind"], row["requester"], row["approvers"]) == (
        "approved", "hold", "agent-1", ["approver-1"])
    assert row["request_hash"] == hold.request_hash and row["decided_at"] == 1001.0


def test_two_person_rule_needs_two_distinct_approvers(store: HoldStore) -> None:
    store.create(new_hold(required=2))
    first = store.approve("h-1", PO1, "looks right", 1001.0)
    assert first.state == HoldState.PENDING and len(first.approvals) == 1
    with pytest.raises(DecisionError, match="already approved") as err:
        store.approve("h-1", PO1, "again", 1002.0)
    assert err.value.status == 409
    assert store.get("h-1").state == HoldState.PENDING  # type: ignore[union-attr]
    second = store.approve("h-1", PO2, "agreed", 1003.0)
    assert second.state == HoldState.APPROVED
    assert second.approvers == ("approver-1", "approver-2")
    assert store.decisions()[0]["approvers"] == ["approver-1", "approver-2"]


@pytest.mark.parametrize(
    ("actor", "status", "error"),
    [
        (AGENT, 403, "self_approval"),  # holds the approver role, but it is their own request
        (CLIN, 403, "not_an_approver"),
    ],
)
def test_who_may_not_decide(store: HoldStore, actor: Actor, status: int, error: str) -> None:
    store.create(new_hold())
    for act in (store.approve, store.deny):
        with pytest.raises(DecisionError) as err:
            act("h-1", actor, "because", 1001.0)
        assert (err.value.status, err.value.error) == (status, error)
    assert store.get("h-1").state == HoldState.PENDING  # type: ignore[union-attr]
    assert store.decisions() == []


def test_decided_expired_and_unknown_holds_cannot_be_decided(store: HoldStore) -> None:
    store.create(new_hold("h-1"))
    store.deny("h-1", PO1, "no ticket", 1001.0)
    with pytest.raises(DecisionError, match="already denied"):
        store.approve("h-1", PO2, "late", 1002.0)
    store.create(new_hold("h-2", timeout=10))
    with pytest.raises(DecisionError, match="expired"):
        store.approve("h-2", PO1, "too late", 1010.0)
    with pytest.raises(DecisionError, match="no hold"):
        store.approve("h-3", PO1, "what", 1001.0)


def test_first_outcome_wins_between_timeout_and_approval(store: HoldStore) -> None:
    store.create(new_hold("h-1"))
    store.approve("h-1", PO1, "ok", 1001.0)
    # The owner's timer fires just after: the approval stands, no second record is written.
    after = store.finish("h-1", HoldState.TIMEOUT, "approval timed out", 1300.0)
    assert after.state == HoldState.APPROVED
    assert [d["outcome"] for d in store.decisions()] == ["approved"]
    store.create(new_hold("h-2"))
    timed_out = store.finish("h-2", HoldState.TIMEOUT, "approval timed out", 1300.0)
    assert timed_out.state == HoldState.TIMEOUT and timed_out.justification == "approval timed out"


def test_a_second_process_sees_and_decides_holds_of_the_first(store: HoldStore, tmp_path: Path) -> None:
    other = HoldStore(tmp_path / "holds.sqlite", "node-b")
    other.open()
    try:
        store.create(new_hold("h-1"))
        before = store.data_version()
        assert [h.hold_id for h in other.holds(state=HoldState.PENDING)] == ["h-1"]
        other.approve("h-1", PO1, "from the other worker", 1001.0)
        # The owner notices a commit by another connection cheaply, then reads the outcome.
        assert store.data_version() != before
        [settled] = store.settled_among(["h-1"])
        assert settled.state == HoldState.APPROVED and settled.instance_id == store.instance_id
    finally:
        other.close()


def test_restart_ends_the_dead_process_holds_as_denied(tmp_path: Path) -> None:
    db = tmp_path / "holds.sqlite"
    # A real process opens the store, creates a hold and dies without cleaning up (kill -9).
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path; from addons.holds.store import HoldStore;"
        "from tests.unit.test_approvals_store import new_hold;"
        "s = HoldStore(Path(sys.argv[2]), 'node-a'); s.open(); s.create(new_hold('h-dead'));"
        "import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(Path.cwd()), str(db)], check=True)
    survivor = HoldStore(db, "node-a")
    survivor.open()
    try:
        assert survivor.get("h-dead").state == HoldState.PENDING  # type: ignore[union-attr]
        ended = survivor.reap(2000.0, "gateway restarted")
        assert [h.hold_id for h in ended] == ["h-dead"]
        hold = survivor.get("h-dead")
        assert hold is not None and hold.state == HoldState.DENIED and hold.justification == "gateway restarted"
        assert survivor.decisions()[0]["outcome"] == "denied"
        assert survivor.reap(2001.0) == []  # recorded once
    finally:
        survivor.close()


def test_a_live_process_holds_are_not_reaped(store: HoldStore, tmp_path: Path) -> None:
    store.create(new_hold("h-live"))
    other = HoldStore(tmp_path / "holds.sqlite", "node-a")  # same node id: a second worker
    other.open()
    try:
        assert other.reap(1001.0) == []  # our pid is alive and our heartbeat is fresh
        # A process silent for longer than the lease is presumed dead, even on another host.
        store.db.execute("UPDATE instances SET heartbeat_at = 0, hostname = 'elsewhere' WHERE instance_id = ?",
                         (store.instance_id,))
        assert [h.hold_id for h in other.reap(1000.0 + store.lease_s + 1)] == ["h-live"]
    finally:
        other.close()


def test_shutdown_ends_own_pending_holds(store: HoldStore) -> None:
    store.create(new_hold("h-1"))
    store.create(new_hold("h-2"))
    store.approve("h-2", PO1, "fine", 1001.0)
    ended = store.end_own_pending(1002.0, "gateway stopped")
    assert [h.hold_id for h in ended] == ["h-1"]
    assert store.get("h-2").state == HoldState.APPROVED  # type: ignore[union-attr]


def test_grants_match_user_operation_collection_until_they_expire(store: HoldStore) -> None:
    g = store.add_grant("agent-1", "export", "notes", PO1, "quarterly export", 1000.0, minutes=30)
    assert store.find_grant("agent-1", "export", "notes", 1000.0 + 29 * 60) == g
    assert store.find_grant("agent-1", "export", "notes", 1000.0 + 31 * 60) is None
    assert store.find_grant("agent-2", "export", "notes", 1001.0) is None
    assert store.find_grant("agent-1", "delete", "notes", 1001.0) is None
    assert store.find_grant("agent-1", "export", "other", 1001.0) is None
    store.revoke_grant(g.grant_id, PO2, "done early", 1100.0)
    assert store.find_grant("agent-1", "export", "notes", 1101.0) is None
    assert [d["outcome"] for d in store.decisions()] == ["revoked", "granted"]
    assert [x.grant_id for x in store.grants(now=1101.0, active_only=False)] == [g.grant_id]
    assert store.grants(now=1101.0) == []


def test_only_flowless_outcomes_go_to_the_ledger_from_the_store(store: HoldStore) -> None:
    # Decided while its flow is held: the flow's audit event carries the outcome (ctx.hold).
    store.create(new_hold("h-1"))
    store.deny("h-1", PO1, "no", 1001.0)
    assert store.unshipped() == []
    # A grant, and a hold whose process is gone, have no flow: the store hands them over.
    store.add_grant("agent-1", "export", "notes", PO1, "window", 1002.0, minutes=5)
    store.create(new_hold("h-2"))
    store.end_own_pending(1003.0, "gateway stopped")
    rows = store.unshipped()
    assert [(r["kind"], r["outcome"]) for _, r in rows] == [("grant", "granted"), ("hold", "denied")]
    store.mark_shipped([seq for seq, _ in rows])
    assert store.unshipped() == []


def test_request_hash_binds_method_path_and_body() -> None:
    base = request_hash("POST", "/c/get", b'{"limit": 10}')
    assert base == request_hash("post", "/c/get", b'{"limit": 10}')
    assert base != request_hash("PUT", "/c/get", b'{"limit": 10}')
    assert base != request_hash("POST", "/c/get?x=1", b'{"limit": 10}')
    assert base != request_hash("POST", "/c/get", b'{"limit": 11}')
    # Length prefixes: moving bytes between path and body changes the hash.
    assert request_hash("POST", "/a", b"b") != request_hash("POST", "/ab", b"")


PHI = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N")), min_size=6, max_size=20)


@settings(max_examples=60, deadline=None)
@given(value=PHI, number=st.integers(min_value=100000, max_value=10**12))
def test_summary_never_contains_a_record_value(value: str, number: int) -> None:
    value = f"<{value}>"  # no structural word of a summary contains "<"
    body = json.dumps({"where": {"mrn": value}, "ids": [value], "documents": [value, value],
                       "where_document": {"$contains": value}, "metadatas": [{"name": value}],
                       "n_results": 5, "patient": number, "include": ["documents"]}).encode()
    summary = masked_summary(body, "application/json", {"has_filter": True, "ids_count": 1, "mrn": value}, None)
    text = json.dumps(summary)
    assert value not in text and str(number) not in text
    assert summary["body"]["n_results"] == 5 and summary["body"]["ids"] == {"type": "array", "length": 1}
    assert summary["body"]["where"] == {"type": "object", "keys": ["mrn"]}
    assert summary["facts"] == {"has_filter": True, "ids_count": 1}


def test_summary_prefers_the_masking_addon_summary() -> None:
    assert masked_summary(b"{}", "application/json", None, {"documents": "[masked]"}) == {
        "masked": {"documents": "[masked]"}}


def test_store_file_is_plain_sqlite(store: HoldStore) -> None:
    # Operators can inspect it with the sqlite3 shell: the table names are the documented ones.
    names = {r[0] for r in sqlite3.connect(store.path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"holds", "approvals", "grants", "decisions", "instances"} <= names
    assert os.path.exists(str(store.path) + "-wal")
