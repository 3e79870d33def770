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
    assert out.strip().splitlines() == ["date,recipient,client,description,purpose,request_id,audit_event"]


@pytest.mark.parametrize(("as_of", "start"), [
    (dt.datetime(2026, 6, 1), dt.datetime(2020, 6, 1)),
    (dt.datetime(2024, 2, 29, 12), dt.datetime(2018, 2, 28, 12)),
])
def test_lookback_is_six_years(as_of: dt.datetime, start: dt.datetime) -> None:
    assert lookback_start(as_of) == start
