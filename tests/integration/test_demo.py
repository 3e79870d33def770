"""`./run.sh demo`, the README's first command, end to end (real IdP, Chroma, gateway with TLS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT

pytestmark = pytest.mark.integration


def test_demo_plays_every_step_and_writes_a_verified_packet(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.support.demo", "--dir", str(tmp_path / "demo")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    text = out.stdout
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # One role searches; the agent sees tokens where the clinician sees names; vectors untouched.
    assert "patient_name: John Smith" in text and "| tok_name_" in text
    assert "distances identical for both: True" in text
    # The token works as a handle for the agent.
    assert "query where mrn=tok_mrn_" in text and '"ward": "cardio"' in text
    # Another role is denied a delete, the drop is denied by its rule.
    assert "agent delete p1: REFUSED" in text and "default deny" in text
    assert "drop: REFUSED" in text and "no-drop" in text
    # The export is held, approved by a second identity, then completes.
    assert "the clinician's client is waiting" in text and "state approved" in text
    assert "clinician's export, completed after" in text
    # The ledger verifies and a packet is written.
    assert "OK: the ledger verifies" in text
    packet = tmp_path / "demo" / "packet"
    for name in ("packet.html", "packet.pdf", "manifest.json", "statement.json.sig"):
        assert (packet / name).is_file(), name
    assert json.loads((packet / "manifest.json").read_text())
    # The certificate the gateway served is in the packet, from the gateway's own ledger records.
    tls = json.loads((packet / "data" / "tls_certificates.json").read_text())
    assert tls and all(r["problem"] is None and r["sha256_fingerprint"] for r in tls)
    # The approved export is in the exported patient's accounting of disclosures.
    accounting = text[text.index("accounting of disclosures (164.528) for Jane Doe"):]
    assert "released by: approved hold (approved by approver-1)" in accounting
    assert ("export on patients_notes: returned unmasked: dob (DOB), mrn (MRN), patient_name (PATIENT_NAME)"
            in accounting)
    assert "recipient:   clin-1" in accounting
    assert "stopped everything it started" in text
