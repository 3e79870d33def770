"""The packet's configuration evidence, from `configuration` records and policy versions in the ledger:
automatic logoff, break-glass policy, approver roles per hold rule, rule-version authors, configured
retention and the TLS certificates in force over the period."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from reports import generate
from tests.support import ledger_synth as synth
from tests.unit.test_report_packet import ROOT, T0, make_packet

POLICY = (ROOT / "rules" / "policy.yaml").read_text()
POLICY_V2 = POLICY + "\n# tightened after review\n"
SETTINGS = {"phigate_max_token_lifetime_s": 3600, "phigate_clock_skew_s": 30, "phigate_session_idle_seconds": 1800,
            "phigate_grant_max_minutes": 480, "phigate_break_glass_role": "emergency",
            "phigate_break_glass_header": "x-break-glass", "phigate_reviewer_roles": "approver",
            "phigate_retention_days": 2190}


def cert(fingerprint: str, not_after: str, **extra: Any) -> dict[str, Any]:
    return {"path": "certs/server.pem", "subject": "CN=gw.example.org", "issuer": "CN=Example CA",
            "not_before": "2026-01-01T00:00:00Z", "not_after": not_after, "key": "EC secp256r1",
            "sha256": fingerprint, "names": "gw.example.org", **extra}


@pytest.fixture(scope="module")
def packet(tmp_path_factory: pytest.TempPathFactory) -> generate.Written:
    tmp = tmp_path_factory.mktemp("configuration")
    path = tmp / "l.duckdb"
    con = duckdb.connect(str(path))
    synth.create_schema(con)
    before, during = T0 - dt.timedelta(days=20), T0 + dt.timedelta(days=2)
    synth.add_event(con, ts=T0)
    # Settings recorded at start (before the period) and again when retention changed during it.
    synth.add_configuration(con, before, "gateway_settings", "node-0", SETTINGS)
    synth.add_configuration(con, during, "gateway_settings", "node-0", {**SETTINGS, "phigate_retention_days": 3650})
    # Policy v1 edited by hand (no rules apply record); v2 applied by an approver with a reason.
    synth.add_rule_version(con, "rules/policy.yaml", POLICY, before, None)
    v2_sha = hashlib.sha256(POLICY_V2.encode()).hexdigest()
    synth.add_configuration(con, during - dt.timedelta(seconds=2), "rule_change", "policy.yaml",
                            {"sha256": v2_sha, "author": "approver-1", "issuer": "https://idp", "name": "PO One",
                             "reason": "SEC-12 tighten exports"}, node_id="rules-host")
    synth.add_rule_version(con, "rules/policy.yaml", POLICY_V2, during, None)
    # masking.yaml: an attribution that came only after the version was in force does not count.
    masking_sha = hashlib.sha256(synth.MASKING_YAML.encode()).hexdigest()
    synth.add_rule_version(con, "rules/masking.yaml", synth.MASKING_YAML, before, None)
    synth.add_configuration(con, before + dt.timedelta(hours=1), "rule_change", "masking.yaml",
                            {"sha256": masking_sha, "author": "mallory", "reason": "backdated"})
    # TLS: the certificate in force at the start, its replacement during the period, and node-1 without one.
    synth.add_configuration(con, before, "tls_certificate", "gateway *", cert("aa" * 32, "2027-01-01T00:00:00Z"))
    synth.add_configuration(con, during, "tls_certificate", "gateway *", cert("bb" * 32, "2026-03-20T00:00:00Z"))
    synth.add_configuration(con, T0, "tls_certificate", "gateway *",
                            {"error": "no certificate file configured (option certs)"}, node_id="node-1")
    con.close()
    return make_packet(path, tmp / "p")


def section(w: generate.Written, sid: str) -> dict[str, Any]:
    doc = json.loads((w.folder / "data" / "packet.json").read_text())
    return next(s for s in doc["sections"] if s["id"] == sid)


def facts(w: generate.Written, sid: str) -> dict[str, Any]:
    return {x["label"]: x["value"] for x in section(w, sid)["facts"]}


def rows(w: generate.Written, table: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((w.folder / "data" / f"{table}.json").read_text())
    return data


def control(w: generate.Written, cite: str) -> dict[str, Any]:
    doc = json.loads((w.folder / "data" / "packet.json").read_text())
    return next(c for c in doc["controls"] if c["cite"] == cite)


def test_automatic_logoff_has_its_row_with_the_configured_limits(packet: generate.Written) -> None:
    f = facts(packet, "configuration")
    assert f["Longest access-token lifetime accepted (exp - iat)"] == "3600 s"
    assert f["Clock-skew leeway on token expiry"] == "30 s"
    assert f["Session idle limit (audit sessions)"] == "1800 s"
    assert f["Hold timeouts (a pending request is denied after)"] == "5 min"
    c = control(packet, "164.312(a)(2)(iii)")
    assert c["status"] == "evidence"
    assert c["evidence"].startswith("Access tokens live at most 3600 s (clock-skew leeway 30 s)")
    assert "held requests are denied after 5 min" in c["evidence"]


def test_break_glass_policy_says_who_how_long_and_how_access_returns(packet: generate.Written) -> None:
    f = facts(packet, "configuration")
    assert f["Break-glass: role that may invoke it"] == "emergency"
    assert f["Break-glass: IdP groups granting that role"] == "emergency"
    assert f["Break-glass: how it is invoked"].startswith("header x-break-glass with a justification")
    assert f["Break-glass: for how long"].startswith("one request")
    assert "next request without the header" in f["Break-glass: return to normal access"]
    assert "role emergency may pass a hold (never a deny)" in control(packet, "164.312(a)(2)(ii)")["evidence"]


def test_approver_roles_per_hold_rule(packet: generate.Written) -> None:
    got = {(r["policy_version"], r["rule_id"]): r for r in rows(packet, "hold_rules")}
    # Both policy versions in force during the period, each with its hold rules.
    assert len({v for v, _ in got}) == 2
    export = next(r for (_, rid), r in got.items() if rid == "export-needs-approval")
    assert (export["approver_roles"], export["approvals_required"], export["timeout"]) == ("approver", 1, "5 min")
    assert export["requesters"] == "clinician, db-admin" and export["operations"] == "export"


def test_rule_versions_name_their_author_or_say_unattributed(packet: generate.Written) -> None:
    versions = {(r["path"], r["author"], r["reason"]) for r in rows(packet, "rule_versions")}
    assert ("rules/policy.yaml", "approver-1", "SEC-12 tighten exports") in versions
    assert ("rules/policy.yaml", "unattributed", None) in versions
    assert ("rules/masking.yaml", "unattributed", None) in versions  # its record came after it took effect
    assert facts(packet, "policy")["Versions without a recorded author"] == 2
    c = control(packet, "164.308(a)(4)")
    assert "1 with their author's verified identity and reason, 2 unattributed" in c["evidence"]
    assert c["status"] == "attention"


def test_retention_is_what_was_configured(packet: generate.Written) -> None:
    f = facts(packet, "configuration")
    assert f["Retention of session recordings (configured)"] == "2190 days (6.0 years), 3650 days (10.0 years)"
    assert "kept 2190 days (6.0 years), 3650 days (10.0 years) as configured" in control(
        packet, "164.316(b)(2)(i)")["evidence"]


def test_tls_certificates_in_force_over_the_period_come_from_the_ledger(packet: generate.Written) -> None:
    certs = rows(packet, "tls_certificates")
    assert [(r["node_id"], r["sha256_fingerprint"]) for r in certs] == [
        ("node-0", "aa" * 32), ("node-0", "bb" * 32), ("node-1", None)]
    assert certs[0]["problem"] is None
    assert certs[1]["problem"] == "expires before the end of the period"
    assert certs[2]["problem"] == "no certificate file configured (option certs)"
    s = section(packet, "protection")
    assert s["status"] == "attention"
    assert s["status_text"] == "expires before the end of the period; no certificate file configured (option certs)"
    c = control(packet, "164.312(a)(2)(iv)")
    assert c["status"] == "attention" and "TLS certificates in force over the period" in c["evidence"]
    assert "not examined" not in json.dumps(section(packet, "protection"))


def test_a_ledger_without_configuration_records_says_so(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    synth.empty(path)
    w = make_packet(path, tmp_path / "p")
    f = facts(w, "configuration")
    assert f["Longest access-token lifetime accepted (exp - iat)"] == "not recorded"
    assert section(w, "configuration")["status"] == "attention"
    assert control(w, "164.312(a)(2)(iii)")["status"] == "attention"
    assert section(w, "protection")["status_text"] == "no TLS certificate recorded by the gateway for the period"


def test_a_ledger_copy_older_than_configuration_records_still_makes_a_packet(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    synth.empty(path)
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE configuration")
    con.close()
    w = make_packet(path, tmp_path / "p")
    assert facts(w, "configuration")["Retention of session recordings (configured)"] == "not recorded"
