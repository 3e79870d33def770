"""Evidence packets from a ledger the real gateway wrote (stock mitmdump with the chain and the audit
addon, the real OpenID provider), made while the gateway keeps running; the reviewer's sign-off is
recorded in that same ledger without stopping it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from addons.ledger import keys
from addons.ledger.read import open_ledger
from tests.support.servers import ROOT, Gateway, Idp, RecordingUpstream, http_call
from tests.unit.test_report_cli import run

pytestmark = pytest.mark.integration

QUERY = "/api/v2/tenants/default_tenant/databases/default_database/collections/c-1/query"
CREDENTIAL_ENV = "PHIGATE_TEST_BACKEND_CREDENTIAL"
FILTERED = {"n_results": 1, "where": {"mrn": "0042117"}}
TOKEN_KEYS = "k1=" + base64.b64encode(b"t" * 32).decode()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream({"POST " + QUERY: (200, {"ids": [["p1"]], "documents": [["note"]]})}) as server:
        yield server



def test_packet_and_sign_off_from_a_running_gateways_ledger(tmp_path: Path, idp: Idp,
                                                           upstream: RecordingUpstream) -> None:
    audit, witness, audit_key, packet_key = tmp_path / "audit", tmp_path / "witness", tmp_path / "a.pem", \
        tmp_path / "p.pem"
    keys.generate_key_file(audit_key)
    keys.generate_key_file(packet_key)
    options = {
        "phigate_rules": str(ROOT / "rules"), "phigate_profile": "chroma", "phigate_issuer": idp.issuer,
        "phigate_audience": "phigate", "phigate_backend_credential_env": CREDENTIAL_ENV,
        "phigate_allow_plain_http": "true", "phigate_node_id": "report-it", "phigate_audit_dir": str(audit),
        "phigate_witness": str(witness) + "/", "phigate_audit_key_file": str(audit_key),
        "phigate_holds_db": str(tmp_path / "holds.sqlite"),
        "phigate_admin_port": "0",
    }
    env = {**os.environ, CREDENTIAL_ENV: "backend-secret", "PHIGATE_TOKEN_KEYS": TOKEN_KEYS}
    gw = Gateway(upstream.url, options, env=env).start()
    try:
        token = idp.token("clin-1")
        statuses = []
        # Allowed (heartbeat), denied (a filtered search of a collection clinicians may not read) and
        # unauthenticated requests; nothing that would wait for an approver.
        for i in range(12):
            headers = {"content-type": "application/json", "user-agent": f"report-it-{i}"}
            if i % 4 != 3:
                headers["authorization"] = f"Bearer {token}"
            if i % 2:
                statuses.append(http_call("POST", gw.url + QUERY, FILTERED, headers)[0])
            else:
                statuses.append(http_call("GET", gw.url + "/api/v2/heartbeat", None, headers)[0])
        assert statuses.count(401) == 3 and statuses.count(403) == 3 and statuses.count(200) == 6, statuses
        today = dt.datetime.now(dt.UTC).date()
        # From yesterday: a run that crosses midnight UTC still covers every event.
        common = ["--ledger", str(audit), "--witness", str(witness) + "/", "--audit-key-file", str(audit_key),
                  "--signing-key", str(packet_key), "--from", (today - dt.timedelta(days=1)).isoformat(),
                  "--to", today.isoformat()]

        # The packet, while the gateway holds its writer.
        code, out, err = run(*common, "--out", str(tmp_path / "p1"))
        assert code == 0, err
        doc = json.loads((tmp_path / "p1" / "data" / "packet.json").read_text())
        f = doc["figures"]
        con = open_ledger(audit)
        try:
            expected = con.execute(
                "SELECT count(*) FILTER (WHERE user_agent LIKE 'report-it-%'), "
                "count(*) FILTER (WHERE decision = 'deny'), count(DISTINCT subject) FROM events"
            ).fetchone()
            auth_failures = con.execute("SELECT count(*) FROM auth_failures").fetchone()
        finally:
            con.close()
        assert expected is not None and expected[0] == 12  # every answered request has its event
        assert f["events"] >= 12 and f["deny"] == expected[1] >= 3 and f["users"] == expected[2]
        assert f["auth_failures"] == (auth_failures or (0,))[0] == 3
        assert f["verified"] is True and f["verify"].startswith("verified:"), f["verify"]
        assert (tmp_path / "p1" / "packet.pdf").read_bytes().startswith(b"%PDF-")

        # Sign-off with the reviewer's own token, recorded in the same ledger while the gateway keeps running.
        sign = ["sign", "--packet", str(tmp_path / "p1" / "packet.pdf"), "--notes", "reviewed denials",
                "--ledger", str(audit), "--public-key", str(packet_key), "--audit-key-file", str(audit_key),
                "--witness", str(witness) + "/", "--issuer", idp.issuer]
        # A caller without a reviewer role, a token for another audience, and a tampered packet: refused.
        code, _, err = run(*sign, "--token", idp.token("clin-1"))
        assert code == 2 and "clin-1 holds roles ['clinician']; this command needs one of ['approver']" in err
        code, _, err = run(*sign, "--token", idp.token("other-aud-1"))
        assert code == 2 and "not meant for this gateway (audience)" in err
        tampered = Path(shutil.copytree(tmp_path / "p1", tmp_path / "tampered"))
        (tampered / "data" / "denials.csv").write_text("seq\n")
        code, _, err = run(*[str(tampered) if a == sign[2] else a for a in sign], "--token", idp.token("approver-1"))
        assert code == 1 and "does not verify, so no review was recorded" in err
        code, out, err = run(*sign, "--token", idp.token("approver-1"))
        assert code == 0, err
        assert "by approver-1 (Privacy Officer One), verified by " + idp.issuer in out
        assert "with a signed checkpoint" in out
        ok = http_call("GET", gw.url + "/api/v2/heartbeat", None, {"authorization": f"Bearer {token}"})[0]
        assert ok == 200, "the gateway kept serving while the review was written"

        code, out, err = run(*common, "--out", str(tmp_path / "p2"), "--no-pdf")
        assert code == 0, err
        doc2 = json.loads((tmp_path / "p2" / "data" / "packet.json").read_text())
        assert doc2["figures"]["reviews"] == 1 and doc2["figures"]["verified"] is True
        reviews = json.loads((tmp_path / "p2" / "data" / "reviews.json").read_text())
        assert reviews[0]["reviewer"] == "approver-1"  # the verified subject, never a typed name
        assert reviews[0]["packet_sha256"] == doc["figures"].get("packet_sha256", reviews[0]["packet_sha256"])
        manifest = json.loads((tmp_path / "p1" / "manifest.json").read_text())
        assert reviews[0]["packet_sha256"] == manifest["packet_sha256"]
    finally:
        gw.stop()
