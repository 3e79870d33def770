"""The audit addon: one durable event per flow, built from the flow context; fail closed when the
ledger cannot be written."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addons import chain, gateway
from addons.audit import Audit, AuditGate
from addons.core import readiness
from addons.core.context import (
    Action,
    AuthFailure,
    Caller,
    Decision,
    HoldInfo,
    MaskingSummary,
    Operation,
    OpKind,
    Stage,
    context,
)
from addons.core.respond import refuse
from addons.gateway import Gateway
from addons.ledger import keys, recording, witness_fs
from addons.ledger.read import open_ledger
from addons.ledger.writer import Ledger

REC_KEY = "k1:" + "a" * 43 + "="


@pytest.fixture
def audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Audit, taddons.context]]:
    monkeypatch.setenv("PHIGATE_TEST_REC_KEY", REC_KEY)
    key_file = tmp_path / "sign.pem"
    keys.generate_key_file(key_file)
    a = Audit()
    with taddons.context(Gateway(), a) as tctx:
        tctx.configure(a, phigate_audit_dir=str(tmp_path / "audit"), phigate_witness=str(tmp_path / "witness/"),
                       phigate_audit_key_file=str(key_file), phigate_recording_key_env="PHIGATE_TEST_REC_KEY",
                       phigate_node_id="node-a", phigate_profile="chroma")
        yield a, tctx
        a.done()


def identity() -> Caller:
    return Caller(subject="alice", issuer="https://idp", roles=frozenset({"clinician", "analyst"}),
                    token_id="jti-1", expires_at=0, client_id="agent-7", name="Alice", email="a@example.org",
                    purpose="treatment")


def flow_with(status: int = 200, body: bytes = b'{"ids":[["p1"]]}') -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request.method = "POST"
    f.request.path = "/api/v2/collections/c1/query?x=secret-term"
    f.request.headers["authorization"] = "Bearer eyJ.secret.token"
    f.request.headers["user-agent"] = "chroma-client/1.0"
    f.request.content = b'{"query_texts":["John Smith"]}'
    assert f.response is not None
    f.response.status_code = status
    f.response.content = body
    c = context(f)
    c.identity = identity()
    c.operation = Operation(backend="chroma", kind=OpKind.SEARCH, route="chroma.query", method="POST",
                            path="/api/v2/collections/c1/query", collection="patients", collection_id="c1")
    c.decision = Decision(Action.ALLOW, "allow-clinician-search")
    c.masking = MaskingSummary(applied=True, counts_by_rule={"mask-names": 2}, counts_by_type={"PERSON": 2},
                               fields_disclosed=["documents"], subject_refs=["ref-1"])
    c.request_summary = {"n_results": 3, "query_texts": "[1 masked]"}
    return f


def rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    con = open_ledger(tmp_path / "audit")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def test_event_is_durable_with_the_contexts_fields_and_no_secrets(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    a, _ = audit
    a.running()
    f = flow_with()
    await a.response(f)
    c = context(f)
    assert c.audit_seq is not None and f.response is not None and f.response.status_code == 200
    (row,) = rows(tmp_path, "SELECT seq, node_id, subject, name, email, client_id, roles, backend, operation, "
                            "collection, method, path, status, decision, rule_ids, stage, masking, fields_disclosed, "
                            "subject_refs, purpose, request_summary, session_id, user_agent FROM events "
                            "WHERE request_id = '" + c.request_id + "'")
    assert row[:16] == (c.audit_seq, "node-a", "alice", "Alice", "a@example.org", "agent-7", ["analyst", "clinician"],
                        "chroma", "search", "patients", "POST", "/api/v2/collections/c1/query", 200, "allow",
                        ["allow-clinician-search"], None)
    assert row[16] == '{"by_rule":{"mask-names":2},"by_type":{"PERSON":2},"headers_dropped":0}'
    assert row[17:20] == (["documents"], ["ref-1"], "treatment")
    assert row[21] == c.session_id and row[22] == "chroma-client/1.0"
    # Nothing from the body, the query string or the token reaches the ledger in clear.
    ledger_bytes = b"".join(p.read_bytes() for p in (tmp_path / "audit").rglob("*") if p.is_file())
    for secret in (b"John Smith", b"secret-term", b"eyJ.secret.token"):
        assert secret not in ledger_bytes


async def test_recording_is_encrypted_and_committed_to_by_its_hash(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    a, _ = audit
    a.running()
    f = flow_with(body=b'{"documents":[["[PERSON]"]]}')
    await a.response(f)
    (digest,) = rows(tmp_path, "SELECT payload_sha256 FROM events")[0]
    rec_dir = tmp_path / "audit" / "nodes" / "node-a" / "recordings"
    (rec,) = list(recording.iter_records(rec_dir))
    plain = recording.open_line(recording.load_keys(key_env="PHIGATE_TEST_REC_KEY"), rec)
    assert hashlib.sha256(plain).hexdigest() == digest
    ex = orjson.loads(plain)
    assert ex["request"]["url"].endswith("?x=secret-term")
    assert "authorization" not in {k.lower() for k, _ in ex["request"]["headers"]}
    rec["request_id"] = "someone-else"
    with pytest.raises(recording.RecordingKeyError, match="fails authentication"):
        recording.open_line(recording.load_keys(key_env="PHIGATE_TEST_REC_KEY"), rec)


async def test_refusals_auth_failures_and_holds_are_recorded(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    a, _ = audit
    a.running()
    denied = tflow.tflow()
    c = context(denied)
    c.auth_failure = AuthFailure("expired token", claimed_subject="mallory")
    refuse(denied, Stage.IDENTITY, 401, "unauthorized", "the access token has expired")
    await a.response(denied)
    held = flow_with()
    hc = context(held)
    hc.decision = Decision(Action.HOLD, "hold-bulk-export")
    hc.hold = HoldInfo("hold-1", "approved", "hold-bulk-export", 1_700_000_000.0, "ab" * 32,
                       decided_at=1_700_000_060.0, approvers=["olivia"], justification="audit request")
    await a.response(held)
    assert rows(tmp_path, "SELECT decision, stage, status, error FROM events ORDER BY seq") == [
        ("deny", "identity", 401, "unauthorized: the access token has expired"),
        ("hold", None, 200, None),
    ]
    assert rows(tmp_path, "SELECT reason, claimed_subject FROM auth_failures") == [("expired token", "mallory")]
    assert rows(tmp_path, "SELECT hold_id, kind, requester, approvers, outcome, decided_at - requested_at "
                          "FROM approvals") == [
        ("hold-1", "hold", "alice", ["olivia"], "approved", __import__("datetime").timedelta(seconds=60))]


async def test_health_probes_are_not_audited(audit: tuple[Audit, taddons.context], tmp_path: Path) -> None:
    a, _ = audit
    a.running()
    f = tflow.tflow()
    f.request.path = "/-/healthz"
    gateway.Gateway().request(f)
    await a.response(f)
    assert context(f).audit_seq is None
    assert rows(tmp_path, "SELECT count(*) FROM events") == [(0,)]


async def test_write_failure_fails_closed_and_says_why(audit: tuple[Audit, taddons.context], tmp_path: Path) -> None:
    a, _ = audit
    a.running()
    assert a.ledger is not None and a.ledger._wal is not None
    a.ledger._wal.fd = os.open("/dev/full", os.O_WRONLY)  # the disk is full
    f = flow_with()
    await a.response(f)
    assert f.response is not None and f.response.status_code == 503
    assert b"audit_unavailable" in f.response.content and b"p1" not in f.response.content
    assert context(f).refusal is not None and context(f).refusal.stage == Stage.AUDIT  # type: ignore[union-attr]
    assert "No space left" in readiness.not_ready_reasons()["audit"]
    # New requests are refused before they reach the backend.
    nxt = tflow.tflow()
    await a.request(nxt)
    assert nxt.response is not None and nxt.response.status_code == 503


async def test_unset_audit_dir_writes_under_the_confdir_never_nowhere(tmp_path: Path) -> None:
    a = Audit()
    with taddons.context(Gateway(), a) as tctx:
        tctx.configure(a, phigate_audit_dir="", confdir=str(tmp_path / "conf"), phigate_node_id="n0")
        a.running()
        assert a.not_ready() is None
        f = flow_with()
        await a.response(f)
        a.done()
    con = open_ledger(tmp_path / "conf" / "phigate-audit")
    assert con.execute("SELECT count(*) FROM events").fetchone() == (1,)
    con.close()


async def test_a_second_process_on_the_same_node_id_records_as_its_own_node(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    a, _ = audit
    held = Ledger(tmp_path / "audit", "node-a", signing_key=None, witness=None)
    held.open()  # another process already writes node-a
    a.running()
    assert a.ledger is not None and a.ledger.node_id == "node-a.2"
    await a.response(flow_with())
    held.close()
    assert rows(tmp_path, "SELECT node_id FROM events") == [("node-a.2",)]


async def test_a_flow_finishing_before_the_ledger_opens_waits_for_it(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    a, _ = audit
    early = tflow.tflow()
    # Not refused while the gateway is still starting: its intent waits for the ledger.
    intent = asyncio.ensure_future(a.request(early))
    f = flow_with()
    pending = asyncio.ensure_future(a.response(f))
    await asyncio.sleep(0.05)
    assert not pending.done() and not intent.done() and early.response is None
    a.running()
    await asyncio.gather(intent, pending)
    assert early.response is None and context(early).intent_seq is not None
    assert context(f).audit_seq is not None and f.response.status_code == 200


def test_key_inside_the_audit_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    keys.generate_key_file(tmp_path / "audit" / "k.pem")
    a = Audit()
    with taddons.context(Gateway(), a) as tctx, pytest.raises(Exception, match="must not be inside"):
        tctx.configure(a, phigate_audit_dir=str(tmp_path / "audit"),
                       phigate_audit_key_file=str(tmp_path / "audit" / "k.pem"))


async def test_the_intent_is_durable_before_the_request_leaves_and_the_outcome_names_it(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    a, _ = audit
    a.running()
    f = flow_with()
    f.response = None
    await a.request(f)  # the last request hook: after it, the request is forwarded
    c = context(f)
    assert f.response is None and c.intent_seq is not None
    # Durable now, before any answer: who, what, decision and the PHI-free summary.
    assert rows(tmp_path, "SELECT seq, subject, operation, collection, decision, rule_ids, request_summary, "
                          "user_agent FROM intents") == [
        (c.intent_seq, "alice", "search", "patients", "allow", ["allow-clinician-search"],
         '{"n_results":3,"query_texts":"[1 masked]"}', "chroma-client/1.0")]
    f.response = http.Response.make(200, b'{"ids":[["p1"]]}')
    await a.response(f)
    assert rows(tmp_path, "SELECT intent_seq, status, session_id FROM events") == [(c.intent_seq, 200, c.session_id)]
    # Refused flows never leave: no intent, only their event.
    denied = tflow.tflow()
    refuse(denied, Stage.POLICY, 403, "forbidden", "no rule allows this")
    await a.request(denied)
    await a.response(denied)
    assert rows(tmp_path, "SELECT count(*) FROM intents") == [(1,)]


async def test_a_request_whose_intent_cannot_be_written_is_refused_before_it_leaves(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    a, _ = audit
    a.running()
    assert a.ledger is not None and a.ledger._wal is not None
    a.ledger._wal.fd = os.open("/dev/full", os.O_WRONLY)  # the disk fills up
    f = flow_with()
    f.response = None
    await a.request(f)
    assert f.response is not None and f.response.status_code == 503
    assert b"intent" in f.response.content and context(f).intent_seq is None


async def test_the_gate_refuses_first_and_each_refusal_is_counted_once(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    built = chain.build()
    gate = next(i for i, x in enumerate(built) if isinstance(x, AuditGate))
    later = [type(x).__name__ for x in built[gate + 1:]]
    # Before anything that classifies, holds (and pages approvers) or forwards.
    assert gate == 1 and {"Identity", "Classify", "Policy", "Approvals", "Forward"} <= set(later)
    a, _ = audit
    a.running()
    assert a.ledger is not None
    a.ledger.broken = "audit store write failed: OSError: No space left on device"
    for _ in range(3):
        f = tflow.tflow()
        a.gate.request(f)
        assert f.response is not None and f.response.status_code == 503
        assert context(f).refusal is not None and context(f).refusal.stage == Stage.AUDIT  # type: ignore[union-attr]
        await a.request(f)  # settled: nothing more
        await a.response(f)
    await a.ledger._try_recover()
    a.ledger.close()
    a.ledger = None
    (detail,) = rows(tmp_path, "SELECT detail FROM incidents WHERE kind = 'audit_write_failure'")[0]
    assert "3 requests refused" in str(detail)


async def test_an_append_only_witness_can_be_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = Audit()
    with taddons.context(Gateway(), a) as tctx:
        tctx.configure(a, phigate_audit_dir=str(tmp_path / "audit"), phigate_witness=f"{tmp_path}/witness/",
                       phigate_node_id="node-w", phigate_witness_append_only=True)
        a.running()
        witness = tmp_path / "witness" / "node-w.ndjson"
        try:
            if os.geteuid() == 0 and witness_fs.is_append_only(witness) is not None:
                # Allowed to set it: set, and traffic flows.
                assert a.not_ready() is None and witness_fs.is_append_only(witness) is True
                assert witness_fs.is_append_only(witness.parent) is True  # no node's file can be removed
                with pytest.raises(PermissionError):
                    witness.unlink()
            else:
                reason = a.not_ready()
                assert reason is not None and "append-only" in reason
        finally:
            a.done()
            subprocess.run(["chattr", "-a", str(witness), str(witness.parent)], check=False)


async def test_settings_and_tls_certificates_are_recorded_at_start_and_on_change(
    audit: tuple[Audit, taddons.context], tmp_path: Path
) -> None:
    from addons.cli.certs import make_certs
    from addons.core.certinfo import read_certificate

    a, tctx = audit
    first = make_certs(tmp_path / "c1", ["127.0.0.1"])["server.pem"]
    second = make_certs(tmp_path / "c2", ["gw.example.org"])["server.pem"]
    tctx.options.certs = [f"*={first}"]
    a.running()
    await a.response(flow_with())
    tctx.options.certs = [f"*={second}"]  # a new certificate in force: recorded again
    tctx.configure(a, phigate_retention_days=3650)
    await a.response(flow_with())
    got = rows(tmp_path, "SELECT kind, name, content FROM configuration ORDER BY seq")
    settings = [orjson.loads(str(c)) for k, _, c in got if k == "gateway_settings"]
    assert settings[0]["phigate_retention_days"] == 2190 and settings[0]["phigate_session_idle_seconds"] == 1800
    assert settings[-1]["phigate_retention_days"] == 3650
    certs = [orjson.loads(str(c)) for k, n, c in got if k == "tls_certificate" and n == "gateway *"]
    assert [c["sha256"] for c in certs][:1] == [read_certificate(first).sha256]
    assert certs[-1]["sha256"] == read_certificate(second).sha256 and "gw.example.org" in certs[-1]["names"]
    assert all("PRIVATE KEY" not in str(c) for _, _, c in got)
