"""The packet's integrity section and control table say what the ledger's own verify says: a clean
ledger verifies, an altered one is reported (never hidden), and evidence gaps are marked."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb

from addons.ledger import keys, layout
from addons.ledger.writer import Ledger
from reports import build, generate
from reports.period import parse_period
from tests.support import ledger_synth as synth

ROOT = Path(__file__).resolve().parents[2]


def real_ledger(tmp: Path) -> tuple[Path, Path, Path]:
    audit, witness, key_file = tmp / "audit", tmp / "witness", tmp / "k.pem"
    keys.generate_key_file(key_file)
    ledger = Ledger(audit, "n1", signing_key=keys.load_private(str(key_file)), witness=witness)
    ledger.open()
    for i in range(5):
        ledger.append_now("event", {"request_id": f"r{i}", "subject": "alice", "roles": ["clinician"],
                                    "decision": "allow" if i else "deny", "status": 200 if i else 403,
                                    "rule_ids": ["x"], "operation": "search", "collection": "patients"})
    ledger.close()
    return audit, witness, key_file


def packet(audit: Path, witness: Path, key_file: Path, out: Path) -> dict[str, object]:
    today = dt.datetime.now(dt.UTC).date()
    period = parse_period((today - dt.timedelta(days=1)).isoformat(), today.isoformat())  # midnight-proof
    opts = build.BuildOptions(ledger=audit, period=period, out=out, rules=ROOT / "rules",
                              witness=str(witness), audit_key_file=str(key_file))
    w = generate.write_packet(opts, None, pdf=False)
    return json.loads((w.folder / "data" / "packet.json").read_text())  # type: ignore[no-any-return]


def section(doc: dict[str, object], sid: str) -> dict[str, object]:
    return next(s for s in doc["sections"] if s["id"] == sid)  # type: ignore[attr-defined, index]


def control(doc: dict[str, object], cite: str) -> dict[str, object]:
    return next(c for c in doc["controls"] if c["cite"] == cite)  # type: ignore[attr-defined, index]


def test_a_clean_ledger_verifies(tmp_path: Path) -> None:
    doc = packet(*real_ledger(tmp_path), tmp_path / "p")
    s = section(doc, "integrity")
    assert s["status"] == "ok" and s["status_text"] == "verified"
    assert doc["figures"]["verify"] == "verified: 5 records on 1 node(s)"  # type: ignore[index]
    assert control(doc, "164.312(c)(1)")["status"] == "evidence"


def test_an_altered_ledger_is_reported(tmp_path: Path) -> None:
    audit, witness, key_file = real_ledger(tmp_path)
    # Hide the denial: rewrite the first record where the ledger keeps it (a sealed segment, or the
    # write-ahead segment while it is still open).
    files = layout.list_node(layout.node_dir(audit, "n1"))
    if files.sealed:
        con = duckdb.connect(str(files.sealed[0].path))
        con.execute("UPDATE events SET decision = 'allow', entry = replace(entry, '\"deny\"', '\"allow\"') "
                    "WHERE request_id = 'r0'")
        con.close()
    else:
        wal = files.wals[0].path
        wal.write_bytes(wal.read_bytes().replace(b'\\"decision\\":\\"deny\\"', b'\\"decision\\":\\"allow\\"', 1))
    doc = packet(audit, witness, key_file, tmp_path / "p")
    s = section(doc, "integrity")
    assert s["status"] == "attention" and s["status_text"] == "verification failed"
    assert str(doc["figures"]["verify"]).startswith("FAILED: first bad record node n1 seq 1")  # type: ignore[index]
    assert control(doc, "164.312(c)(1)")["status"] == "attention"


def test_without_a_witness_it_verifies_with_a_note(tmp_path: Path) -> None:
    audit, _, key_file = real_ledger(tmp_path)
    today = dt.datetime.now(dt.UTC).date()
    period = parse_period((today - dt.timedelta(days=1)).isoformat(), today.isoformat())
    opts = build.BuildOptions(ledger=audit, period=period, out=tmp_path / "p",
                              rules=ROOT / "rules", audit_key_file=str(key_file))
    w = generate.write_packet(opts, None, pdf=False)
    doc = json.loads((w.folder / "data" / "packet.json").read_text())
    assert section(doc, "integrity")["status_text"] == "verified, with notes"
    facts = {f["label"]: f["value"] for f in section(doc, "integrity")["facts"]}  # type: ignore[index]
    assert "truncation or rollback" in facts["Note"]


def test_gaps_in_evidence_are_marked_for_attention(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    con = duckdb.connect(str(path))
    synth.create_schema(con)
    synth.add_event(con, ts=dt.datetime(2026, 1, 5), subject=None)  # an allowed request without a user
    con.close()
    opts = build.BuildOptions(ledger=path, period=parse_period("2026-01-01", "2026-01-31"), out=tmp_path / "p",
                              rules=ROOT / "rules", verify=False)
    w = generate.write_packet(opts, None, pdf=False)
    doc = json.loads((w.folder / "data" / "packet.json").read_text())
    assert control(doc, "164.312(a)(2)(i)")["status"] == "attention"
    assert control(doc, "164.312(c)(1)")["status"] == "attention"  # not verified
    assert control(doc, "164.308(a)(4)")["status"] == "attention"  # no rule-file version recorded
    assert control(doc, "164.312(d)")["status"] == "evidence"
