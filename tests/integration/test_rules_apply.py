"""`./run.sh rules apply` against a running gateway and the real OpenID provider: the change is compiled,
attributed to the verified subject in the ledger, picked up by the gateway, and the packet names its
author; a hand edit shows as unattributed. The gateway's own settings records reach the packet too."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from addons.cli import rules as rules_cli
from addons.ledger.read import open_ledger
from tests.support.servers import ROOT, Gateway, Idp, RecordingUpstream
from tests.unit.test_report_cli import run as report

pytestmark = pytest.mark.integration

CREDENTIAL_ENV = "PHIGATE_TEST_BACKEND_CREDENTIAL"


def apply(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = rules_cli.main(["apply", *argv])
    return code, out.getvalue(), err.getvalue()


def policy_versions(audit: Path) -> list[tuple[str, str]]:
    con = open_ledger(audit)
    try:
        return [(str(r[0]), str(r[1])) for r in con.execute(
            "SELECT path, sha256 FROM rule_versions WHERE path LIKE '%policy.yaml' ORDER BY effective_from").fetchall()]
    finally:
        con.close()


def test_rules_apply_is_attributed_and_a_hand_edit_is_not(tmp_path: Path, idp: Idp) -> None:
    rules, audit = tmp_path / "rules", tmp_path / "audit"
    shutil.copytree(ROOT / "rules", rules)
    options = {
        "phigate_rules": str(rules), "phigate_profile": "chroma", "phigate_issuer": idp.issuer,
        "phigate_audience": "phigate", "phigate_backend_credential_env": CREDENTIAL_ENV,
        "phigate_allow_plain_http": "true", "phigate_node_id": "rules-it", "phigate_audit_dir": str(audit),
        "phigate_witness": str(tmp_path / "witness") + "/", "phigate_holds_db": str(tmp_path / "holds.sqlite"),
        "phigate_admin_port": "0", "phigate_retention_days": "3650",
    }
    env = {**os.environ, CREDENTIAL_ENV: "backend-secret"}
    original = (rules / "policy.yaml").read_text()
    with RecordingUpstream({}) as upstream:
        gw = Gateway(upstream.url, options, env=env).start()
        try:
            common = ["--rules", str(rules), "--ledger", str(audit), "--issuer", idp.issuer]
            new = tmp_path / "policy.yaml"
            # A file the gateway could not load is refused before anything is recorded or replaced.
            new.write_text(original.replace("action: hold", "action: hodl", 1))
            code, _, err = apply(str(new), "--reason", "typo", *common, "--token", idp.token("approver-1"))
            assert code == 1 and "does not compile, nothing changed" in err and "hodl" in err
            # A caller without an operator role is refused.
            new.write_text(original + "\n# tightened\n")
            code, _, err = apply(str(new), "--reason", "x", *common, "--token", idp.token("clin-1"))
            assert code == 2 and "this command needs one of ['approver', 'db-admin']" in err
            assert (rules / "policy.yaml").read_text() == original
            code, out, err = apply(str(new), "--reason", "SEC-12 tighten exports", *common,
                                   "--token", idp.token("approver-1"))
            assert code == 0, err
            assert "applied policy.yaml" in out and "as approver-1: SEC-12 tighten exports" in out
            deadline = time.monotonic() + 15
            while len(policy_versions(audit)) < 2 and time.monotonic() < deadline:
                time.sleep(0.3)
            assert len(policy_versions(audit)) == 2, "the gateway picked up the applied version"
            # Then an edit by hand, outside rules apply.
            (rules / "policy.yaml").write_text(original + "\n# edited by hand\n")
            while len(policy_versions(audit)) < 3 and time.monotonic() < deadline + 15:
                time.sleep(0.3)
            assert len(policy_versions(audit)) == 3
        finally:
            gw.stop()
    today = dt.datetime.now(dt.UTC).date()
    code, _, err = report("--ledger", str(audit), "--from", (today - dt.timedelta(days=1)).isoformat(), "--to",
                          today.isoformat(), "--out", str(tmp_path / "packet"), "--unsigned", "--no-pdf",
                          "--no-verify", "--rules", str(rules))
    assert code == 0, err
    data = tmp_path / "packet" / "data"
    authors = [(r["author"], r["reason"]) for r in json.loads((data / "rule_versions.json").read_text())
               if r["path"].endswith("policy.yaml")]
    assert authors == [("unattributed", None), ("approver-1", "SEC-12 tighten exports"), ("unattributed", None)]
    # The gateway recorded the settings it ran with; the packet reads them from the ledger.
    doc = json.loads((data / "packet.json").read_text())
    conf = next(s for s in doc["sections"] if s["id"] == "configuration")
    facts = {x["label"]: x["value"] for x in conf["facts"]}
    assert facts["Longest access-token lifetime accepted (exp - iat)"] == "3600 s"
    assert facts["Retention of session recordings (configured)"] == "3650 days (10.0 years)"
    assert facts["Break-glass: role that may invoke it"] == "emergency"
    tls = json.loads((data / "tls_certificates.json").read_text())
    assert [r["problem"] for r in tls] == ["no certificate file configured (option certs), plain HTTP allowed"]
