"""The packet's evidence sections as a reader sees them: the HTML rendered in headless Chromium
(Playwright driving Debian chromium) and each new section photographed: the access-control
configuration, the rule versions with their authors, the break-glass register, the TLS
certificates over the period, the accounting of disclosures and the control table. The test checks
each shot holds the section's words and is not blank; the PNGs are kept for a person to look at."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from addons.phi.tokens import KeyRing
from tests.support import ledger_synth as synth
from tests.support.browser import SHOTS, chromium_page
from tests.unit.test_report_configuration import POLICY, SETTINGS, cert
from tests.unit.test_report_packet import T0, make_packet

pytestmark = pytest.mark.integration

SECTIONS = {
    "configuration": ("Access-control configuration in force", "Break-glass: for how long", "export-needs-approval"),
    "policy": ("Policy versions in force", "approver-1", "unattributed"),
    "break-glass": ("Break-glass register", "patient unconscious in ED", "Requests made under break-glass"),
    "protection": ("TLS certificates in force during the period", "CN=gw.example.org"),
    "disclosures": ("Disclosures by how they were released", "approved hold", "break-glass"),
    "controls": ("164.312(a)(2)(iii)", "Automatic logoff"),
}


@pytest.fixture
def page() -> Iterator[Any]:
    with chromium_page(1100) as p:
        yield p


def ledger(path: Path) -> Path:
    ring = KeyRing.parse("*k1=" + "bWFueSByYW5kb20gYnl0ZXMgZm9yIGEgdGVzdCBrZXkh")
    refs = [ring.subject_ref(m) for m in ("2345678", "1234567")]
    con = duckdb.connect(str(path))
    synth.create_schema(con)
    before = T0 - dt.timedelta(days=20)
    synth.add_configuration(con, before, "gateway_settings", "gw-1", SETTINGS, node_id="gw-1")
    synth.add_configuration(con, before, "tls_certificate", "gateway *", cert("ab" * 32, "2027-01-01T00:00:00Z"),
                            node_id="gw-1")
    synth.add_rule_version(con, "rules/policy.yaml", POLICY, before, None)
    synth.add_configuration(con, before - dt.timedelta(seconds=5), "rule_change", "masking.yaml",
                            {"sha256": hashlib.sha256(synth.MASKING_YAML.encode()).hexdigest(),
                             "author": "approver-1", "reason": "PRIV-7 redact SSNs for everyone"}, node_id="rules-h")
    synth.add_rule_version(con, "rules/masking.yaml", synth.MASKING_YAML, before, None)
    synth.add_event(con, ts=T0, subject="clin-1", operation="export", decision="hold", status=200, hold_id="h1",
                    subject_refs=refs, fields_disclosed=["dob", "mrn", "patient_name"], purpose="treatment")
    synth.add_approval(con, hold_id="h1", requester="clin-1", approvers=["approver-1"], outcome="approved",
                       operation="export", requested_at=T0 - dt.timedelta(minutes=2), decided_at=T0)
    synth.add_event(con, ts=T0 + dt.timedelta(hours=1), subject="er-1", roles=["emergency"], operation="get",
                    decision="hold", status=200, hold_id="bg1", break_glass=True, subject_refs=refs[:1],
                    fields_disclosed=["patient_name"], purpose="treatment")
    synth.add_approval(con, hold_id="bg1", kind="break_glass", requester="er-1", approvers=[], outcome="break_glass",
                       justification="patient unconscious in ED", requested_at=T0 + dt.timedelta(hours=1),
                       decided_at=T0 + dt.timedelta(hours=1))
    con.close()
    return path


def test_new_sections_render_in_chromium(page: Any, tmp_path: Path) -> None:
    w = make_packet(ledger(tmp_path / "l.duckdb"), tmp_path / "p")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(w.html.resolve().as_uri())
    for sid, words in SECTIONS.items():
        section = page.locator(f"section#{sid}")
        text = section.inner_text()
        for word in words:
            assert word in text, (sid, word)
        shot = SHOTS / f"packet-{sid}.png"
        section.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000, f"{shot} is (nearly) blank"
    assert errors == []
