"""Accounting of disclosures (164.528) from keyed subject references: `./run.sh report disclosures`."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from addons.phi.tokens import KeyRing
from reports.disclosures import accounting, lookback_start
from tests.support import ledger_synth as synth
from tests.unit.test_report_cli import run

OLD_KEY = "k1=" + base64.b64encode(b"o" * 32).decode()
NEW_KEY = "*k2=" + base64.b64encode(b"n" * 32).decode()
AS_OF = dt.datetime(2026, 6, 1)
MRN = "MRN-0042117"


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    old_ring = KeyRing.parse(OLD_KEY)
    ring = KeyRing.parse(f"{OLD_KEY} {NEW_KEY}")
    path = tmp_path / "l.duckdb"
    con = duckdb.connect(str(path))
    synth.create_schema(con)
    synth.add_rule_version(con, "rules/policy.yaml", synth.POLICY_YAML, dt.datetime(2019, 1, 1), None)
    me_old, me, other = old_ring.subject_ref(MRN), ring.subject_ref(MRN), ring.subject_ref("MRN-999")
    # Recorded under the old key before a rotation; the purpose came from the caller's claim.
    synth.add_event(con, ts=dt.datetime(2025, 1, 5, 10), subject="alice", name="Alice Ng", client_id="notes-agent",
                    subject_refs=[me_old], fields_disclosed=["mrn", "patient_name"], purpose="treatment",
                    masking={"by_rule": {"r": 1}, "by_type": {"SSN": 1}}, request_id="r1", seq=11)
    # No purpose recorded: the deciding rule's declared purpose (policy.yaml in force) is used.
    synth.add_event(con, ts=dt.datetime(2026, 2, 1, 8), subject="bob", name=None, email=None,
                    client_id="billing-app", operation="get", rule_ids=["allow-get"],
                    subject_refs=[other, me], fields_disclosed=["dob"], request_id="r2", seq=12)
    # Not disclosures of this patient: another patient, a denied request, an error, older than six years.
    synth.add_event(con, ts=dt.datetime(2026, 2, 2), subject_refs=[other], request_id="r3", seq=13)
    synth.add_event(con, ts=dt.datetime(2026, 2, 3), subject_refs=[me], decision="deny", status=403, seq=14)
    synth.add_event(con, ts=dt.datetime(2026, 2, 4), subject_refs=[me], status=500, seq=15)
    synth.add_event(con, ts=dt.datetime(2019, 1, 2), subject_refs=[me], request_id="too-old", seq=16)
    con.close()
    return path



def test_lists_every_disclosure_of_the_subject_with_the_four_elements(ledger: Path) -> None:
    con = duckdb.connect(str(ledger), read_only=True)
    ring = KeyRing.parse(f"{OLD_KEY} {NEW_KEY}")
    items = accounting(con, ring.subject_refs_all(MRN), AS_OF)
    con.close()
    assert [i.request_id for i in items] == ["r1", "r2"]
    first, second = items
    assert first.date == dt.datetime(2025, 1, 5, 10)
    assert first.recipient == "alice (Alice Ng, alice@example.org)" and first.client == "notes-agent"
    assert first.description == ("search on patients: returned unmasked: mrn (MRN), patient_name (PATIENT_NAME); "
                                 "masked: SSN x1")
    assert first.purpose == "treatment"
    assert second.purpose == "healthcare operations (declared by rule)"
    assert second.description.startswith("get on patients: returned unmasked: dob (DOB)")


def test_identifier_spelling_does_not_split_a_patient(ledger: Path) -> None:
    con = duckdb.connect(str(ledger), read_only=True)
    ring = KeyRing.parse(f"{OLD_KEY} {NEW_KEY}")
    items = accounting(con, ring.subject_refs_all("  mrn-0042117 "), AS_OF)
    con.close()
    assert len(items) == 2


def test_cli_json_output(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIGATE_TOKEN_KEYS", f"{OLD_KEY} {NEW_KEY}")
    code, out, _ = run("disclosures", "--subject", MRN, "--ledger", str(ledger), "--as-of", "2026-06-01",
                       "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert [d["request_id"] for d in doc] == ["r1", "r2"]
    assert set(doc[0]) >= {"date", "recipient", "client", "description", "purpose"}
    assert MRN not in out  # the identifier itself is never echoed


def test_cli_text_output_and_window(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIGATE_TOKEN_KEYS", f"{OLD_KEY} {NEW_KEY}")
    code, out, _ = run("disclosures", "--subject", MRN, "--ledger", str(ledger), "--as-of", "2026-06-01")
    assert code == 0
    assert out.startswith(
        "Accounting of disclosures (45 CFR 164.528), 2020-06-02 00:00 to 2026-06-02 00:00 UTC: 2 disclosures")
    assert "recipient:   bob, client billing-app" in out


def test_without_the_key_it_says_how_to_fix(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHIGATE_TOKEN_KEYS", raising=False)
    monkeypatch.delenv("PHIGATE_TOKEN_KEY_FILE", raising=False)
    code, _, err = run("disclosures", "--subject", MRN, "--ledger", str(ledger))
    assert code == 2
    assert "no masking key: pass --token-key-file" in err


def test_a_wrong_key_finds_nothing(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIGATE_TOKEN_KEYS", "k9=" + base64.b64encode(b"x" * 32).decode())
    code, out, _ = run("disclosures", "--subject", MRN, "--ledger", str(ledger), "--as-of", "2026-06-01",
                       "--format", "csv")
    assert code == 0
    assert out.strip().splitlines() == ["date,recipient,client,description,purpose,released_by,request_id,audit_event"]


@pytest.mark.parametrize(("as_of", "start"), [
    (dt.datetime(2026, 6, 1), dt.datetime(2020, 6, 1)),
    (dt.datetime(2024, 2, 29, 12), dt.datetime(2018, 2, 28, 12)),
])
def test_lookback_is_six_years(as_of: dt.datetime, start: dt.datetime) -> None:
    assert lookback_start(as_of) == start


# ---------------------------------------------------------------- every release path counts

RING = KeyRing.parse(NEW_KEY)
T = dt.datetime(2026, 3, 10, 9)


@pytest.fixture
def paths_ledger(tmp_path: Path) -> Path:
    """One patient (MRN 2345678) released four ways, plus refusals that must not count."""
    me, other = RING.subject_ref("2345678"), RING.subject_ref("1234567")
    path = tmp_path / "paths.duckdb"
    con = duckdb.connect(str(path))
    synth.create_schema(con)
    synth.add_rule_version(con, "rules/policy.yaml", synth.POLICY_YAML, dt.datetime(2026, 1, 1), None)
    common = {"subject_refs": [me, other], "collection": "patients_notes"}
    synth.add_event(con, ts=T, subject="clin-1", roles=["clinician", "approver"], operation="search",
                    fields_disclosed=["mrn", "patient_name"], purpose="treatment", request_id="allow", **common)
    # An export held, then approved by a second identity: decision 'hold', the backend's 200.
    synth.add_event(con, ts=T + dt.timedelta(minutes=1), subject="clin-1", roles=["clinician"],
                    operation="export", decision="hold", status=200, hold_id="h-exp", rule_ids=["hold-export"],
                    fields_disclosed=["dob", "mrn", "patient_name"], purpose=None, request_id="approved", **common)
    synth.add_approval(con, hold_id="h-exp", kind="hold", requester="clin-1", approvers=["approver-1"],
                       outcome="approved", operation="export")
    # A request passed by an approver's standing grant.
    synth.add_event(con, ts=T + dt.timedelta(minutes=2), subject="analyst-7", roles=["analyst"], operation="get",
                    decision="hold", status=200, hold_id="h-grant", rule_ids=["allow-get"], fields_disclosed=["dob"],
                    purpose=None, request_id="granted", **common)
    synth.add_approval(con, hold_id="h-grant", kind="grant", requester="analyst-7", approvers=["approver-2"],
                       outcome="granted", operation="get")
    # Break-glass: an emergency caller passed a hold with a justification.
    synth.add_event(con, ts=T + dt.timedelta(minutes=3), subject="er-doc", roles=["emergency"], operation="get",
                    decision="hold", status=200, hold_id="h-bg", break_glass=True, rule_ids=["hold-export"],
                    fields_disclosed=["patient_name"], purpose="emergency treatment", request_id="break-glass",
                    **common)
    synth.add_approval(con, hold_id="h-bg", kind="break_glass", requester="er-doc", approvers=[],
                       outcome="break_glass", justification="patient unconscious in ED")
    # Not released: a hold denied (recorded as a refusal), a hold that timed out, a backend error.
    synth.add_event(con, ts=T + dt.timedelta(minutes=4), decision="deny", status=403, hold_id="h-no",
                    request_id="denied", **common)
    synth.add_event(con, ts=T + dt.timedelta(minutes=5), decision="hold", status=403, hold_id="h-late",
                    request_id="timed-out", **common)
    synth.add_event(con, ts=T + dt.timedelta(minutes=6), decision="hold", status=502, hold_id="h-err",
                    request_id="backend-error", **common)
    con.close()
    return path


def test_every_release_path_is_in_the_patients_accounting(paths_ledger: Path) -> None:
    con = duckdb.connect(str(paths_ledger), read_only=True)
    items = accounting(con, RING.subject_refs_all("2345678"), dt.datetime(2026, 6, 1))
    con.close()
    got = {i.request_id: i for i in items}
    assert list(got) == ["allow", "approved", "granted", "break-glass"]
    assert got["allow"].released_by == "policy allow" and got["allow"].purpose == "treatment"
    approved = got["approved"]
    assert approved.released_by == "approved hold (approved by approver-1)"
    assert approved.recipient == "clin-1 (Alice, alice@example.org)"
    assert approved.date == T + dt.timedelta(minutes=1)
    assert approved.description.startswith("export on patients_notes: returned unmasked: dob (DOB), mrn (MRN)")
    assert approved.purpose == "not stated"  # hold-export declares no purpose in this policy
    assert got["granted"].released_by == "grant (granted by approver-2)"
    assert got["granted"].purpose == "healthcare operations (declared by rule)"
    assert got["break-glass"].released_by == "break-glass"
    assert got["break-glass"].purpose == "emergency treatment"
    assert "patient_name (PATIENT_NAME)" in got["break-glass"].description


def test_the_packet_section_the_control_table_and_the_cli_agree(paths_ledger: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_report_packet import make_packet

    w = make_packet(paths_ledger, tmp_path / "packet")
    doc = json.loads((w.folder / "data" / "packet.json").read_text())
    f = doc["figures"]
    # Four released responses, two patients (one reference each), three recipients.
    assert (f["disclosing_responses"], f["disclosed_subjects"], f["disclosure_recipients"]) == (4, 2, 3)
    section = next(s for s in doc["sections"] if s["id"] == "disclosures")
    facts = {x["label"]: x["value"] for x in section["facts"]}
    assert facts["Responses disclosing identified PHI"] == 4 and facts["Distinct patients (keyed references)"] == 2
    control = next(c for c in doc["controls"] if c["cite"] == "164.528")
    assert control["evidence"].startswith("4 response(s) disclosed identified PHI of 2 patient(s) to 3 user(s)")
    by_release = synth_rows(w.folder / "data" / "disclosures_by_release.json")
    assert {r["released_by"]: r["responses"] for r in by_release} == {
        "policy allow": 1, "approved hold": 1, "grant": 1, "break-glass": 1}
    # Fields pair with every role of the caller: clin-1 (clinician + approver) disclosed mrn twice as a
    # clinician (search, export) and once as an approver (search).
    fields = {(r["field"], r["role"]): r["responses"] for r in synth_rows(w.folder / "data" / "disclosed_fields.json")}
    assert fields == {("mrn", "clinician"): 2, ("mrn", "approver"): 1, ("patient_name", "clinician"): 2,
                      ("patient_name", "approver"): 1, ("patient_name", "emergency"): 1, ("dob", "clinician"): 1,
                      ("dob", "analyst"): 1}
    # One purpose wording everywhere: the packet's purposes table and the per-patient listing.
    purposes = {r["purpose"] for r in synth_rows(w.folder / "data" / "disclosure_purposes.json")}
    monkeypatch.setenv("PHIGATE_TOKEN_KEYS", NEW_KEY)
    code, out, _ = run("disclosures", "--subject", "2345678", "--ledger", str(paths_ledger), "--as-of",
                       "2026-06-01", "--format", "json")
    assert code == 0
    assert {d["purpose"] for d in json.loads(out)} == purposes == {
        "treatment", "not stated", "healthcare operations (declared by rule)", "emergency treatment"}


def synth_rows(path: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(path.read_text())
    return rows
