"""Metrics: what one finished flow records, the audit writer's commit figures, rule reloads, and
the sum over worker processes in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow
from prometheus_client import REGISTRY

from addons.audit import Audit
from addons.config import rulefiles
from addons.core import metrics
from addons.core.context import Action, Caller, Decision, HoldInfo, MaskingSummary, Operation, OpKind, Stage, context
from addons.core.respond import refuse
from addons.gateway import Gateway
from addons.ledger import keys
from addons.ledger.writer import Ledger

ROOT = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[Audit]:
    a = Audit()
    with taddons.context(Gateway(), a) as tctx:
        tctx.configure(a, phigate_audit_dir=str(tmp_path / "audit"), phigate_witness=str(tmp_path / "w/"),
                       phigate_node_id="node-m", phigate_profile="chroma")
        a.running()
        yield a
        a.done()


def search_flow(status: int = 200) -> tflow.HTTPFlow:
    f = tflow.tflow(resp=True)
    assert f.response is not None
    f.response.status_code = status
    c = context(f)
    c.identity = Caller("alice", "https://idp", frozenset({"clinician"}), "jti-1", 0)
    c.operation = Operation("chroma", OpKind.SEARCH, "chroma.query", "POST", "/q", collection="patients")
    c.decision = Decision(Action.ALLOW, "allow-search")
    c.masking = MaskingSummary(applied=True, counts_by_type={"MRN": 2, "PERSON": 1})
    return f


async def test_a_finished_flow_counts_its_outcome_latencies_and_masked_types(audit: Audit) -> None:
    before = (value("phigate_requests_total", backend="chroma", operation="search", decision="allow", status="200"),
              value("phigate_masked_values_total", type="MRN"),
              value("phigate_gateway_added_seconds_count", backend="chroma"),
              value("phigate_upstream_seconds_count", backend="chroma"),
              value("phigate_audit_batch_records_count"), value("phigate_audit_fsync_seconds_count"))
    f = search_flow()
    answer, f.response = f.response, None
    await audit.request(f)  # the end of the request chain: the request leaves for the backend
    assert answer is not None
    f.response = answer
    f.response.timestamp_end = time.time()
    await audit.response(f)
    after = (value("phigate_requests_total", backend="chroma", operation="search", decision="allow", status="200"),
             value("phigate_masked_values_total", type="MRN"),
             value("phigate_gateway_added_seconds_count", backend="chroma"),
             value("phigate_upstream_seconds_count", backend="chroma"),
             value("phigate_audit_batch_records_count"), value("phigate_audit_fsync_seconds_count"))
    assert [a - b for a, b in zip(after, before, strict=True)][:4] == [1, 2, 1, 1]
    assert after[4] > before[4] and after[5] > before[5]  # its group commit and the fsync under it


@pytest.mark.parametrize(("stage", "status", "error"), [(Stage.IDENTITY, 401, "invalid_token"),
                                                        (Stage.POLICY, 403, "forbidden"),
                                                        (Stage.MASKING, 502, "invalid_json")])
async def test_refusals_count_by_stage_and_reason_and_never_as_upstream_time(
        audit: Audit, stage: Stage, status: int, error: str) -> None:
    before = (value("phigate_refusals_total", stage=stage.value, reason=error),
              value("phigate_upstream_seconds_count", backend="chroma"))
    f = search_flow()
    refuse(f, stage, status, error, "refused in a test")
    await audit.response(f)
    assert value("phigate_refusals_total", stage=stage.value, reason=error) == before[0] + 1
    assert value("phigate_upstream_seconds_count", backend="chroma") == before[1]


@pytest.mark.parametrize("outcome", ["approved", "denied", "timeout", "break_glass"])
async def test_ended_holds_count_by_outcome_with_their_wait(audit: Audit, outcome: str) -> None:
    before = (value("phigate_holds_total", outcome=outcome), value("phigate_hold_decision_seconds_sum"))
    f = search_flow()
    now = time.time()
    context(f).hold = HoldInfo("h1", outcome, "hold-export", now - 42.0, "sha", decided_at=now)
    await audit.response(f)
    assert value("phigate_holds_total", outcome=outcome) == before[0] + 1
    assert value("phigate_hold_decision_seconds_sum") - before[1] == pytest.approx(42.0)


def test_ledger_lag_is_the_wait_of_the_oldest_record_in_a_commit(tmp_path: Path) -> None:
    before = (value("phigate_audit_commit_lag_seconds_sum"), value("phigate_audit_batch_records_sum"))
    ledger = Ledger(tmp_path / "audit", "node-l", signing_key=keys.parse_private(b"22" * 32, "test"),
                    witness=tmp_path / "witness.ndjson")
    ledger.open()
    try:
        for i in range(3):
            ledger.stage("event", {"request_id": f"r{i}"})
        ledger._pending[0].ts -= 5.0  # the oldest record waited five seconds
        ledger.flush_now()
    finally:
        ledger.close()
    assert value("phigate_audit_batch_records_sum") - before[1] >= 3  # (closing adds a checkpoint)
    assert 5.0 <= value("phigate_audit_commit_lag_seconds_sum") - before[0] < 6.0


def test_a_bad_rule_edit_counts_one_rejection_however_often_it_is_polled(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("a: 1\n")
    wf = rulefiles.watched(path, lambda p, doc: rulefiles.require(p, None, doc, isinstance(doc, dict), "a mapping"))
    before = (value("phigate_rule_reloads_total", result="rejected"), value("phigate_rule_reloads_total",
                                                                           result="applied"))
    path.write_text("- not a mapping\n")
    for _ in range(3):
        assert not wf.reload_if_changed()
    path.write_text("a: 2\n")
    assert wf.reload_if_changed()
    assert value("phigate_rule_reloads_total", result="rejected") == before[0] + 1
    assert value("phigate_rule_reloads_total", result="applied") == before[1] + 1


WORKER = """
import sys
from addons.core import metrics
for _ in range(int(sys.argv[1])):
    metrics.request_done("chroma", "search", "allow", 200)
metrics.jwks_refresh(ok=False)
"""


def test_multiprocess_mode_sums_every_worker_whichever_answers(tmp_path: Path) -> None:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path), "PYTHONPATH": str(ROOT)}
    for n in (3, 4):  # two workers, each with its own pid and files
        subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, check=True, timeout=60)
    scrape = subprocess.run([sys.executable, "-c", "import sys; from addons.core import metrics; "
                             "sys.stdout.buffer.write(metrics.exposition([metrics.gauge('x_pending', 'h', 2)]))"],
                            env=env, check=True, timeout=60, capture_output=True, text=True).stdout
    lines = scrape.splitlines()
    assert 'phigate_requests_total{backend="chroma",decision="allow",operation="search",status="200"} 7.0' in lines
    assert 'phigate_jwks_refreshes_total{result="failed"} 2.0' in lines
    assert "x_pending 2.0" in lines
