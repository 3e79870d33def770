"""`verify` names the first bad record for every kind of tampering the issue lists."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import orjson
import pytest

from addons.cli import verify as cli_verify
from addons.ledger import keys, layout, merkle, verify
from addons.ledger.writer import Ledger, Settings

NODE = "gw1"


class Fixture:
    def __init__(self, tmp: Path, fresh: bool = True) -> None:
        self.tmp = tmp
        self.audit = tmp / "audit"
        self.witness = tmp / "witness"
        self.key_file = tmp / "signing.pem"
        if fresh:
            self.witness.mkdir()
            keys.generate_key_file(self.key_file)
        self.key = keys.load_private(str(self.key_file))
        assert self.key is not None
        self.pubs = {keys.key_id_of(self.key.public_key()): self.key.public_key()}

    def ledger(self, seal_events: int = 40) -> Ledger:
        led = Ledger(self.audit, NODE, signing_key=self.key, witness=self.witness,
                     settings=Settings(seal_events=seal_events))
        led.open()
        return led

    def write(self, n: int, start: int = 0, seal_events: int = 40) -> None:
        """n events, a checkpoint every 10, sealing whole write-ahead segments of `seal_events`."""
        led = self.ledger(seal_events)
        for i in range(start, start + n):
            led.append_now("event", {"request_id": f"req-{i}", "subject": f"user{i % 3}", "status": 200,
                                     "roles": ["clinician"], "masking": {"by_rule": {"r": 1}, "by_type": {}},
                                     "latency_ms": 1.5 + i})
            if (i + 1) % 10 == 0:
                led.checkpoint_now()
            if led._wal_leaves >= seal_events:
                led._rotate()
                led.seal_pending()
        led.close()

    def result(self) -> verify.Report:
        return verify.verify(self.audit, self.pubs, self.witness)

    def segment(self) -> Path:
        return layout.list_node(layout.node_dir(self.audit, NODE)).sealed[0].path

    def wal(self) -> Path:
        return layout.list_node(layout.node_dir(self.audit, NODE)).wals[-1].path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pristine")
    Fixture(base).write(95)  # seq 1..40 and 41..80 sealed, 81..95 in the write-ahead segment
    return base


@pytest.fixture
def lf(pristine: Path, tmp_path: Path) -> Fixture:
    copy = tmp_path / "ledger"
    shutil.copytree(pristine, copy)
    return Fixture(copy, fresh=False)


def first_bad(report: verify.Report) -> tuple[int, str]:
    assert not report.ok
    p = report.problems[0]
    return p.seq, p.what


def sql(path: Path, statement: str) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(statement)
    finally:
        con.close()


def test_untouched_ledger_verifies(lf: Fixture) -> None:
    report = lf.result()
    assert report.ok, report.problems
    (node,) = report.nodes
    assert (node.leaves, node.events, node.last_signed_size, node.unsigned_tail) == (95, 95, 95, 0)
    assert len(layout.list_node(layout.node_dir(lf.audit, NODE)).sealed) == 2


def test_modified_column_is_found_at_its_seq(lf: Fixture) -> None:
    sql(lf.segment(), "UPDATE events SET subject = 'someone-else' WHERE seq = 17")
    seq, what = first_bad(lf.result())
    assert seq == 17
    # Exactly the edited column: the others still say what the entry says.
    assert what.endswith("differs from its hashed entry in subject")


def test_modified_entry_is_found_by_its_leaf_hash(lf: Fixture) -> None:
    sql(lf.segment(), "UPDATE events SET status = 403, entry = replace(entry, '\"status\":200', '\"status\":403') "
                      "WHERE seq = 23")
    seq, what = first_bad(lf.result())
    assert (seq, "modified") == (23, what.split("(the record was ")[-1].rstrip(")"))


def test_consistently_rewritten_record_fails_the_signed_root(lf: Fixture) -> None:
    con = duckdb.connect(str(lf.segment()))
    entry = con.execute("SELECT entry FROM events WHERE seq = 24").fetchone()[0].replace('"status":200', '"status":404')
    leaf = merkle.leaf_hash(entry.encode()).hex()
    con.execute("UPDATE events SET status = 404, entry = ?, leaf_hash = ? WHERE seq = 24", [entry, leaf])
    con.close()
    report = lf.result()
    seq, what = first_bad(report)
    # Every append_now is its own signed batch: the bad root pins the one changed record.
    assert seq == 24 and "seq 24 was changed" in what


def test_deleted_event_is_reported_missing(lf: Fixture) -> None:
    sql(lf.segment(), "DELETE FROM events WHERE seq = 7")
    seq, what = first_bad(lf.result())
    assert seq == 7 and "missing" in what


def test_inserted_event_is_reported(lf: Fixture) -> None:
    sql(lf.segment(), "INSERT INTO events SELECT * REPLACE ('forged' AS request_id) FROM events WHERE seq = 12")
    seq, what = first_bad(lf.result())
    assert seq == 12
    assert "request_id" in what or "appears again" in what


def test_reordered_events_are_reported(lf: Fixture) -> None:
    sql(lf.segment(), "UPDATE events SET seq = CASE seq WHEN 5 THEN 6 ELSE 5 END WHERE seq IN (5, 6)")
    seq, what = first_bad(lf.result())
    assert seq == 5 and "seq" in what


def test_modified_write_ahead_record_is_found(lf: Fixture) -> None:
    wal = lf.wal()
    lines = wal.read_bytes().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"s":88' in line)
    lines[i] = lines[i].replace(b"req-87", b"req-xx")
    wal.write_bytes(b"".join(lines))
    seq, what = first_bad(lf.result())
    assert seq == 88 and "modified" in what


def test_truncated_tail_is_caught_by_the_witness(lf: Fixture) -> None:
    wal = lf.wal()
    lines = wal.read_bytes().splitlines(keepends=True)
    keep = [line for line in lines if b'"s":9' not in line and b'"k":"checkpoint"' not in line]
    wal.write_bytes(b"".join(keep))  # drop seq 90..95 and the checkpoints that signed them
    report = lf.result()
    assert any(p.seq == 90 and "witness" in p.what and "tail was cut" in p.what for p in report.problems)
    # The checkpoints that signed 81..89 are gone too: the witness still has them.
    seq, what = first_bad(report)
    assert seq == 81 and "gone from the ledger" in what


def test_whole_ledger_replaced_by_an_older_copy_is_caught(lf: Fixture, tmp_path: Path) -> None:
    old = tmp_path / "old-copy"
    shutil.copytree(lf.audit, old)
    lf.write(30, start=95)
    shutil.rmtree(lf.audit)
    old.rename(lf.audit)
    report = lf.result()
    seq, what = first_bad(report)
    assert seq == 96 and "older copy" in what
    # Without the witness, the older copy would look fine: that is what the witness is for.
    assert verify.verify(lf.audit, lf.pubs, None).ok


def test_forged_checkpoint_signature_is_reported(lf: Fixture) -> None:
    wfile = layout.witness_file(lf.witness, NODE)
    lines = wfile.read_bytes().splitlines()
    cp = orjson.loads(lines[0])
    cp["root"] = "00" * 32
    wfile.write_bytes(b"\n".join([orjson.dumps(cp), *lines[1:]]) + b"\n")
    report = lf.result()
    assert any("bad signature" in p.what for p in report.problems)


def test_unknown_signing_key_is_reported(lf: Fixture) -> None:
    other = keys.parse_private(b"11" * 32, "test")
    report = verify.verify(lf.audit, {keys.key_id_of(other.public_key()): other.public_key()}, lf.witness)
    assert any("unknown key" in p.what for p in report.problems)


def test_cli_verify_exit_codes_and_first_bad_seq(lf: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dir", str(lf.audit), "--witness", str(lf.witness), "--key-file", str(lf.key_file)]
    assert cli_verify.main(argv) == 0
    assert "OK: the ledger verifies (95 records" in capsys.readouterr().out
    sql(lf.segment(), "UPDATE events SET email = 'x@example.org' WHERE seq = 33")
    assert cli_verify.main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED: first bad record: node gw1 seq 33" in out and "email" in out
    assert cli_verify.main(["--dir", str(lf.tmp / "nope")]) == 2
    assert "expected the gateway's phigate_audit_dir" in capsys.readouterr().err


def test_cli_inclusion_proof_checks_against_a_signed_checkpoint(
    lf: Fixture, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dir", str(lf.audit), "--witness", str(lf.witness), "--key-file", str(lf.key_file)]
    assert cli_verify.main([*argv, "--event", "req-41"]) == 0
    proof = orjson.loads(capsys.readouterr().out)
    # Every batch is signed: the first checkpoint covering seq 42 is the one its own append wrote.
    assert proof["verified"] is True and proof["seq"] == 42 and proof["checkpoint"]["size"] == 42
    cp = keys.Checkpoint(**proof["checkpoint"])
    assert keys.check_signature(lf.key.public_key(), cp)  # type: ignore[union-attr]
    ok = merkle.verify_inclusion(41, 42, bytes.fromhex(proof["leaf_hash"]),
                                 [bytes.fromhex(h) for h in proof["audit_path"]], bytes.fromhex(cp.root))
    assert ok
    assert cli_verify.main([*argv, "--event", "no-such-request"]) == 1
