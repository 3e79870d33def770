"""Tampering with a real ledger, written through the gateway, as a hostile operator would.

One ledger is built by the real gateway (stock mitmdump with the chain, the real OpenID provider, a
recording upstream): two runs of traffic (queries, anonymous calls, break-glass passes), small
write-ahead segments so that several are sealed, and a copy of the ledger kept after the first
run (for rollbacks). Each case tampers with a fresh copy and asserts that `verify` fails naming
what is wrong; the untouched copy verifies (no false alarm), and every reader (verify, export,
replay, report, disclosures) answers corrupt input with a clear error, never a traceback.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addons.cli import export as cli_export
from addons.cli import replay as cli_replay
from addons.cli import verify as cli_verify
from addons.ledger import canonical, keys, layout, merkle, verify, wal
from addons.ledger.read import open_ledger
from reports import cli as report_cli
from tests.integration.test_audit_gateway import QUERY, REC_KEY, Setup, call
from tests.support.servers import Idp, RecordingUpstream, http_call

pytestmark = pytest.mark.integration

NODE = "it-node"


def traffic(setup: Setup, prefix: str, n: int) -> None:
    gw = setup.gateway(phigate_audit_seal_events="40")
    try:
        token = setup.idp.token("clin-1")
        for i in range(n):
            assert call(gw, token, f"{prefix}-{i}")[0] == 200
        for i in range(2):
            assert call(gw, None, f"{prefix}-anon-{i}")[0] == 401
        # A whole-collection search is held; the emergency role passes it with a justification
        # (an approval record of kind break_glass).
        er = setup.idp.token("er-1")
        status, _, _ = http_call("POST", gw.url + QUERY, {"n_results": 1}, {
            "authorization": f"Bearer {er}", "user-agent": f"{prefix}-bg",
            "x-break-glass": "patient coding in bay 3, chart needed now"})
        assert status == 200
    finally:
        gw.stop()


@dataclass
class Built:
    root: Path  # audit/, witness/, signing.pem, signing.pub
    old_audit: Path  # the ledger as it stood after the first run


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    # The gateway asks the backend once for the name behind a collection id it has not seen.
    by_id = "GET /api/v2/tenants/default_tenant/databases/default_database/collections/by-id/c-1"
    with RecordingUpstream({"POST " + QUERY: (200, {"ids": [["p1"]], "documents": [["note"]]}),
                            by_id: (200, {"id": "c-1", "name": "patients"})}) as server:
        yield server


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, idp: Idp, upstream: RecordingUpstream) -> Built:
    root = tmp_path_factory.mktemp("ledger")
    setup = Setup(root, idp, upstream.url)
    traffic(setup, "run1", 25)
    old = tmp_path_factory.mktemp("old") / "audit"
    shutil.copytree(setup.audit, old)
    traffic(setup, "run2", 40)
    key = keys.load_private(str(setup.key_file))
    assert key is not None
    (root / "signing.pub").write_bytes(keys.public_pem(key.public_key()))
    files = layout.list_node(layout.node_dir(setup.audit, NODE))
    assert len(files.sealed) >= 3 and files.wals, "expected sealed segments and an open write-ahead file"
    return Built(root, old)


class Copy:
    """A fresh copy of the built ledger, its witness and keys, to tamper with."""

    def __init__(self, built: Built, tmp: Path) -> None:
        self.root = tmp / "copy"
        shutil.copytree(built.root, self.root)
        self.audit = self.root / "audit"
        self.witness = self.root / "witness"
        self.key_file = self.root / "signing.pem"
        self.pub_file = self.root / "signing.pub"
        self.old_audit = built.old_audit

    @property
    def files(self) -> layout.NodeFiles:
        return layout.list_node(layout.node_dir(self.audit, NODE))

    def segment_with(self, table: str) -> Path:
        for seg in self.files.sealed:
            con = duckdb.connect(str(seg.path), read_only=True)
            try:
                (n,) = con.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,)
            finally:
                con.close()
            if n:
                return seg.path
        raise AssertionError(f"no sealed segment holds {table}")

    def wal_lines(self) -> list[bytes]:
        return self.files.wals[-1].path.read_bytes().splitlines(keepends=True)

    def write_wal(self, lines: list[bytes]) -> None:
        self.files.wals[-1].path.write_bytes(b"".join(lines))

    def argv(self, *, pinned: bool = True, witness: bool = True) -> list[str]:
        out = ["--dir", str(self.audit)]
        if witness:
            out += ["--witness", str(self.witness) + "/"]
        return out + (["--public-key", str(self.pub_file)] if pinned else [])

    def verify(self, *extra: str, pinned: bool = True, witness: bool = True) -> tuple[int, str]:
        return run(cli_verify.main, [*self.argv(pinned=pinned, witness=witness), *extra])


def run(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    """A CLI in process: exit code and everything it printed (an exception fails the test)."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture
def copy(built: Built, tmp_path: Path) -> Copy:
    return Copy(built, tmp_path)


# ---------------------------------------------------------------- tampering helpers

def sql(path: Path, statement: str, params: list[Any] | None = None) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(statement, params or [])
    finally:
        con.close()


def rehash_row(path: Path, table: str, seq: int, old: str, new: str) -> None:
    """Edit one sealed record consistently: column, entry and its stored leaf hash."""
    con = duckdb.connect(str(path))
    try:
        (entry,) = con.execute(f"SELECT entry FROM {table} WHERE seq = ?", [seq]).fetchone() or ("",)
        assert old in entry
        entry = entry.replace(old, new)
        leaf = merkle.leaf_hash(entry.encode()).hex()
        con.execute(f"UPDATE {table} SET entry = ?, leaf_hash = ? WHERE seq = ?", [entry, leaf, seq])
    finally:
        con.close()


def wal_record(line: bytes) -> dict[str, Any]:
    return dict(orjson.loads(line))


def wal_line(kind: str, seq: int, entry: bytes) -> bytes:
    return wal.encode_line(kind, seq, merkle.leaf_hash(entry), entry)


def forged_event(seq: int) -> bytes:
    return wal_line("event", seq, canonical.encode("event", seq, {
        "node_id": NODE, "ts": 1_800_000_000.0, "request_id": "forged-request", "subject": "nobody",
        "status": 200, "decision": "allow", "operation": "search"}))


def resign(c: Copy, attacker: Ed25519PrivateKey) -> None:
    """Re-sign every checkpoint (ledger only) over the current leaves with another key, and publish it."""
    res = verify.NodeResult(NODE)
    levels = merkle.Levels(verify.node_data(c.files, res).hashes)

    def signed(size: int, ts: str) -> keys.Checkpoint:
        return keys.sign_checkpoint(attacker, NODE, size, levels.root(size), ts)

    for seg in c.files.sealed:
        con = duckdb.connect(str(seg.path))
        try:
            for size, ts in con.execute(
                    "SELECT size, strftime(ts, '%Y-%m-%dT%H:%M:%S.%f') FROM checkpoints").fetchall():
                cp = signed(int(size), str(ts))
                con.execute("UPDATE checkpoints SET root = ?, key_id = ?, signature = ? WHERE size = ?",
                            [cp.root, cp.key_id, cp.signature, size])
        finally:
            con.close()
    lines = []
    for line in c.wal_lines():
        rec = wal_record(line)
        if rec["k"] == "checkpoint":
            old = orjson.loads(rec["e"])
            body = orjson.dumps(signed(int(old["size"]), str(old["ts"])).as_row(), option=orjson.OPT_SORT_KEYS)
            line = wal.encode_line("checkpoint", None, None, body)
        lines.append(line)
    c.write_wal(lines)
    kdir = layout.keys_dir(c.audit)
    for pub in kdir.glob("*.pub"):
        pub.unlink()
    (kdir / f"{keys.key_id_of(attacker.public_key())}.pub").write_bytes(keys.public_pem(attacker.public_key()))


def edit_wal_event(c: Copy, rehash: bool) -> int:
    lines = c.wal_lines()
    i = next(n for n, line in enumerate(lines) if wal_record(line)["k"] == "event")
    rec = wal_record(lines[i])
    entry = rec["e"].replace('"status":200', '"status":500').encode()
    assert entry != rec["e"].encode()
    lines[i] = wal_line("event", rec["s"], entry) if rehash else wal.encode_line(
        "event", rec["s"], bytes.fromhex(rec["h"]), entry)
    c.write_wal(lines)
    return int(rec["s"])


# ---------------------------------------------------------------- the cases

def _sealed_column(c: Copy) -> str:
    sql(c.segment_with("events"), "UPDATE events SET subject = 'someone-else' WHERE seq = "
        "(SELECT min(seq) FROM events WHERE subject IS NOT NULL)")
    return "differs from its hashed entry in subject"  # the one column edited, no other


def _sealed_rehashed(c: Copy) -> str:
    seg = c.segment_with("events")
    con = duckdb.connect(str(seg), read_only=True)
    (seq,) = con.execute("SELECT min(seq) FROM events WHERE status = 200").fetchone() or (0,)
    con.close()
    rehash_row(seg, "events", int(seq), '"status":200', '"status":403')
    sql(seg, "UPDATE events SET status = 403 WHERE seq = ?", [seq])
    return f"a record in seq {seq} was changed"


def _wal_edit(c: Copy) -> str:
    return f"seq {edit_wal_event(c, rehash=False)}: entry does not hash to its stored leaf hash"


def _wal_rehashed(c: Copy) -> str:
    return f"a record in seq {edit_wal_event(c, rehash=True)} was changed"


def _sealed_delete(c: Copy) -> str:
    seg = c.segment_with("events")
    con = duckdb.connect(str(seg))
    (seq,) = con.execute("SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET 1").fetchone() or (0,)
    con.execute("DELETE FROM events WHERE seq = ?", [seq])
    con.close()
    return f"seq {seq}..{seq} missing (deleted records)"


def _wal_delete(c: Copy) -> str:
    lines = c.wal_lines()
    i = next(n for n, line in enumerate(lines) if wal_record(line)["s"] is not None)
    seq = wal_record(lines[i])["s"]
    c.write_wal(lines[:i] + lines[i + 1:])
    return f"seq {seq}..{seq} missing"


def _insert_middle(c: Copy) -> str:
    sql(c.segment_with("events"), "INSERT INTO events SELECT * REPLACE ('forged' AS request_id) FROM events "
        "WHERE seq = (SELECT min(seq) FROM events)")
    return "differs from its hashed entry in request_id"


def _insert_wal_middle(c: Copy) -> str:
    lines = c.wal_lines()
    i = next(n for n, line in enumerate(lines) if wal_record(line)["k"] == "event")
    seq = wal_record(lines[i])["s"]
    c.write_wal([*lines[:i], forged_event(seq), *lines[i:]])
    return f"seq {seq} appears again"


def _insert_after_checkpoint(c: Copy) -> str:
    last = max(wal_record(line)["s"] or 0 for line in c.wal_lines())
    c.write_wal([*c.wal_lines(), forged_event(last + 1)])
    return f"seq {last + 1} (1 records) covered by no signed checkpoint"


def _reorder(c: Copy) -> str:
    sql(c.segment_with("events"), "UPDATE events SET seq = CASE WHEN seq = (SELECT min(seq) FROM events) "
        "THEN (SELECT min(seq) FROM events WHERE seq > (SELECT min(seq) FROM events)) ELSE "
        "(SELECT min(seq) FROM events) END WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT 2)")
    return "differs from its hashed entry in seq"


def _truncate(c: Copy) -> str:
    lines = c.wal_lines()
    first = next(n for n, line in enumerate(lines) if wal_record(line)["s"] is not None)
    c.write_wal(lines[:first + 2])
    return "the tail was cut, or the ledger was replaced by an older copy"


def _segment_deleted(c: Copy) -> str:
    seg = c.files.sealed[1]
    seg.path.unlink()
    return f"seq {seg.first}..{seg.last} missing (deleted records)"


def _segment_cut(c: Copy) -> str:
    seg = c.files.sealed[1].path
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) // 2])
    return f"sealed segment {seg.name}"


def _segment_random(c: Copy) -> str:
    seg = c.files.sealed[0].path
    seg.write_bytes(os.urandom(seg.stat().st_size))
    return f"sealed segment {seg.name}"


def _wal_random(c: Copy) -> str:
    w = c.files.wals[-1].path
    w.write_bytes(bytes(b if b != 0x0A else 0x0B for b in os.urandom(4096)))  # no line at all
    return f"{w.name}: its last 4096 bytes are not ledger records"


def _wal_malformed(c: Copy) -> str:
    lines = c.wal_lines()
    lines.insert(3, b'{"k":"event","s":"x","h":null,"e":"{}"}\n')
    c.write_wal(lines)
    return "not a ledger record"


def _rollback_witness_kept(c: Copy) -> str:
    shutil.rmtree(c.audit)
    shutil.copytree(c.old_audit, c.audit)
    return "replaced by an older copy"


def _rollback_witness_deleted(c: Copy) -> str:
    _rollback_witness_kept(c)
    shutil.rmtree(c.witness)
    return f"the witness {c.witness} does not exist"


def _witness_file_deleted(c: Copy) -> str:
    _rollback_witness_kept(c)
    (c.witness / f"{NODE}.ndjson").unlink()
    return f"the witness {c.witness / f'{NODE}.ndjson'} is missing"


def _witness_emptied(c: Copy) -> str:
    (c.witness / f"{NODE}.ndjson").write_bytes(b"")
    return "holds no checkpoint of this node"


def _key_swap(c: Copy) -> str:
    edit_wal_event(c, rehash=True)
    resign(c, Ed25519PrivateKey.generate())
    return "signed by unknown key"


def _checkpoints_deleted(c: Copy) -> str:
    for seg in c.files.sealed:
        sql(seg.path, "DELETE FROM checkpoints")
    c.write_wal([line for line in c.wal_lines() if wal_record(line)["k"] != "checkpoint"])
    return "no valid checkpoint signed by a trusted key"


def _rule_version_edited(c: Copy) -> str:
    sql(c.segment_with("rule_versions"), "UPDATE rule_versions SET content = replace(content, 'deny', 'allow')")
    return "rule_versions row"


def _approval_edited(c: Copy) -> str:
    seg = c.segment_with("approvals")
    sql(seg, "UPDATE approvals SET justification = 'routine review'")
    return "approvals row"


CASES: dict[str, tuple[Callable[[Copy], str], dict[str, bool]]] = {
    "sealed column edit": (_sealed_column, {}),
    "sealed edit with recomputed hash": (_sealed_rehashed, {}),
    "write-ahead edit": (_wal_edit, {}),
    "write-ahead edit with recomputed hash": (_wal_rehashed, {}),
    "sealed record deleted": (_sealed_delete, {}),
    "write-ahead record deleted": (_wal_delete, {}),
    "sealed record inserted": (_insert_middle, {}),
    "write-ahead record inserted": (_insert_wal_middle, {}),
    "record appended after the last checkpoint": (_insert_after_checkpoint, {}),
    "records reordered": (_reorder, {}),
    "tail truncated": (_truncate, {}),
    "sealed segment deleted": (_segment_deleted, {}),
    "sealed segment cut in half": (_segment_cut, {}),
    "sealed segment of random bytes": (_segment_random, {}),
    "write-ahead file of random bytes": (_wal_random, {}),
    "malformed write-ahead line": (_wal_malformed, {}),
    "rollback, witness kept": (_rollback_witness_kept, {}),
    "rollback, witness deleted": (_rollback_witness_deleted, {}),
    "rollback, node's witness file deleted": (_witness_file_deleted, {}),
    "witness emptied": (_witness_emptied, {"pinned": False}),
    "key swapped, checkpoints re-signed, key pinned": (_key_swap, {}),
    "key swapped, checkpoints re-signed, keys from the ledger folder": (_key_swap, {"pinned": False}),
    "all checkpoints deleted, key pinned": (_checkpoints_deleted, {}),
    "all checkpoints deleted, no witness, keys from the ledger folder": (_checkpoints_deleted,
                                                                          {"pinned": False, "witness": False}),
    "rule version edited": (_rule_version_edited, {}),
    "approval edited": (_approval_edited, {}),
}


def test_the_untouched_ledger_verifies_and_every_reader_reads_it(copy: Copy, monkeypatch: pytest.MonkeyPatch) -> None:
    for pinned in (True, False):
        code, out = copy.verify(pinned=pinned)
        assert code == 0 and "OK: the ledger verifies" in out, out
    code, out = run(cli_export.main, ["--dir", str(copy.audit), "--format", "json"])
    assert code == 0 and len(out.splitlines()) > 60
    con = open_ledger(copy.audit)
    try:
        (session,) = con.execute("SELECT session_id FROM events WHERE user_agent = 'run2-0'").fetchone() or ("",)
        kinds = dict(con.execute("SELECT kind, count(*) FROM approvals GROUP BY ALL").fetchall())
        intents = con.execute("SELECT count(*) FROM intents i JOIN events e ON e.intent_seq = i.seq").fetchone()
    finally:
        con.close()
    assert kinds.get("break_glass") == 2 and intents is not None and intents[0] >= 67
    monkeypatch.setenv("PHIGATE_RECORDING_KEY", REC_KEY)
    code, out = run(cli_replay.main, [str(session), "--dir", str(copy.audit)])
    assert code == 0 and "POST" in out, out


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_detected(copy: Copy, case: str) -> None:
    tamper, how = CASES[case]
    expected = tamper(copy)
    code, out = copy.verify(**how)
    assert code == 1, f"{case}: verify passed\n{out}"
    assert expected in out, f"{case}: expected {expected!r} in\n{out}"
    assert "Traceback" not in out


def test_an_unsigned_tail_fails_unless_allowed_and_a_restart_never_signs_it(
    copy: Copy, idp: Idp, upstream: RecordingUpstream
) -> None:
    expected = _insert_after_checkpoint(copy)
    assert copy.verify()[0] == 1
    code, out = copy.verify("--allow-unsigned-tail")
    assert code == 0, out
    forged_seq = int(expected.split()[1])

    # The next gateway start moves it aside with an incident instead of signing it.
    setup = Setup.__new__(Setup)
    setup.tmp, setup.idp, setup.upstream = copy.root, idp, upstream.url
    setup.audit, setup.witness, setup.key_file = copy.audit, copy.witness, copy.key_file
    setup.extra_script = copy.root / "unused.py"
    gw = setup.gateway()
    try:
        assert call(gw, idp.token("clin-1"), "after-restart")[0] == 200
    finally:
        gw.stop()
    code, out = copy.verify()
    assert code == 0, out
    con = open_ledger(copy.audit)
    try:
        forged = con.execute("SELECT count(*) FROM events WHERE request_id = 'forged-request'").fetchone()
        incidents = con.execute("SELECT detail FROM incidents WHERE kind = 'unsigned_tail_quarantined'").fetchall()
    finally:
        con.close()
    assert forged == (0,)
    assert len(incidents) == 1 and f"seq {forged_seq}..{forged_seq} (1 records)" in incidents[0][0]
    quarantined = list((layout.node_dir(copy.audit, NODE) / layout.QUARANTINE_DIR).iterdir())
    assert len(quarantined) == 1 and b"forged-request" in quarantined[0].read_bytes()


CORRUPT = {"sealed segment cut in half": _segment_cut, "sealed segment of random bytes": _segment_random,
           "malformed write-ahead line": _wal_malformed}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_readers_name_the_corrupt_file_instead_of_crashing(copy: Copy, case: str, tmp_path: Path) -> None:
    expected = CORRUPT[case](copy)
    bad = expected.split()[-1] if "segment" in expected else copy.files.wals[-1].path.name
    readers: list[tuple[Callable[[list[str]], int], list[str]]] = [
        (cli_export.main, ["--dir", str(copy.audit), "--format", "csv"]),
        (cli_replay.main, ["some-session", "--dir", str(copy.audit)]),
        (report_cli.main, ["--from", "2020-01-01", "--to", "2099-12-31", "--out", str(tmp_path / "packet"),
                           "--ledger", str(copy.audit), "--unsigned", "--no-pdf"]),
        (report_cli.main, ["disclosures", "--subject", "MRN-1", "--ledger", str(copy.audit)]),
    ]
    for main, argv in readers:
        code, out = run(main, argv)
        assert code in (1, 2), f"{main.__module__}: exit {code}\n{out}"
        assert bad in out and "Traceback" not in out, f"{main.__module__}:\n{out}"


def test_a_write_ahead_file_of_random_bytes_is_a_warning_not_silence(copy: Copy) -> None:
    _wal_random(copy)
    code, out = run(cli_export.main, ["--dir", str(copy.audit), "--format", "json"])
    assert code == 0
    assert "are not ledger records" in out and copy.files.wals[-1].path.name in out
