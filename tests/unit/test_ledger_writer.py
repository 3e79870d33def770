"""The ledger writer: group commit, durable-before-return, crash repair, fail closed and recovery."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from addons.ledger import canonical, keys, layout, merkle, recording, sink, verify, wal
from addons.ledger.read import open_ledger
from addons.ledger.writer import Ledger, LedgerError, Settings

NODE = "gw1"


def make(tmp: Path, **settings: int) -> Ledger:
    key = keys.parse_private(b"22" * 32, "test")
    led = Ledger(tmp / "audit", NODE, signing_key=key, witness=tmp / "witness.ndjson",
                 recording_key=recording.RecordingKey("k1", b"k" * 32), settings=Settings(**settings))
    led.open()
    return led


def pubs() -> dict[str, keys.Ed25519PublicKey]:
    pub = keys.parse_private(b"22" * 32, "test").public_key()
    return {keys.key_id_of(pub): pub}


def wal_seqs(led: Ledger) -> list[int]:
    data = led.dir.joinpath(layout.wal_name(led._wal_first)).read_bytes()
    return [orjson.loads(line)["s"] for line in data.splitlines() if b'"k":"event"' in line]


async def test_concurrent_appends_share_fsyncs_and_are_durable_on_return(tmp_path: Path) -> None:
    led = make(tmp_path)
    led.start()

    async def one(i: int) -> int:
        seq = await led.append("event", {"request_id": f"r{i}", "status": 200})
        # Durable before return: the line is already in the file when the caller resumes.
        assert seq in wal_seqs(led)
        return seq

    seqs = await asyncio.gather(*(one(i) for i in range(300)))
    assert sorted(seqs) == list(range(1, 301))
    assert led.batches < 50, f"{led.batches} fsync batches for 300 concurrent appends: no grouping"
    led.close()
    assert verify.verify(tmp_path / "audit", pubs(), tmp_path / "witness.ndjson").ok


async def test_a_slow_fsync_never_blocks_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    led = make(tmp_path)
    led.start()
    real = os.fdatasync

    def slow(fd: int) -> None:
        import time

        time.sleep(0.3)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    await led.append("event", {"request_id": "slow"})
    t.cancel()
    assert ticks >= 10, "the loop stalled while the fsync ran"
    monkeypatch.setattr(os, "fdatasync", real)
    led.close()


async def test_every_batch_is_signed_while_later_records_are_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    led = make(tmp_path)
    led.start()
    real = os.fdatasync

    def slow(fd: int) -> None:
        import time

        time.sleep(0.05)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow)
    loop = asyncio.get_running_loop()
    end = loop.time() + 2.6

    async def producer(p: int) -> None:
        # Independent flows: new records are staged while an earlier batch's fsync is in flight.
        n = 0
        while loop.time() < end:
            await led.append("event", {"request_id": f"r{p}-{n}"})
            n += 1
            await asyncio.sleep(0.003 * p)

    await asyncio.gather(*(producer(p) for p in range(8)))
    monkeypatch.setattr(os, "fdatasync", real)
    led.close()
    report = verify.verify(tmp_path / "audit", pubs(), tmp_path / "witness.ndjson")
    assert report.ok, report.problems
    # One checkpoint per committed batch (and the witness has each of them).
    assert report.nodes[0].checkpoints == report.nodes[0].witness_checkpoints >= led.batches >= 3


async def test_disk_full_fails_closed_then_recovers_with_an_incident(tmp_path: Path) -> None:
    led = make(tmp_path)
    led.start()
    await led.append("event", {"request_id": "before"})
    # Simulate ENOSPC: the next write goes to /dev/full.
    assert led._wal is not None
    real_fd = led._wal.fd
    led._wal.fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(LedgerError, match="No space left"):
        await led.append("event", {"request_id": "lost"})
    assert led.broken and "No space left" in led.broken
    with pytest.raises(LedgerError):
        await led.append("event", {"request_id": "while-broken"})
    led.refused_while_broken = 2
    os.close(real_fd)
    await led._try_recover()
    assert led.broken is None
    seq = await led.append("event", {"request_id": "after"})
    led.close()
    con = open_ledger(tmp_path / "audit")
    assert [r[0] for r in con.sql("SELECT request_id FROM events ORDER BY seq").fetchall()] == ["before", "after"]
    (incident,) = con.sql("SELECT kind, detail FROM incidents").fetchall()
    assert incident[0] == "audit_write_failure" and "2 requests refused" in incident[1]
    assert seq == 3  # numbering continues after the incident record
    assert verify.verify(tmp_path / "audit", pubs(), tmp_path / "witness.ndjson").ok


def test_crash_cut_tail_is_repaired_and_numbering_continues(tmp_path: Path) -> None:
    led = make(tmp_path)
    for i in range(5):
        led.append_now("event", {"request_id": f"r{i}"})
    led.checkpoint_now()
    wal = led._wal
    assert wal is not None
    os.write(wal.fd, b'{"k":"event","s":6,"h":"ab')  # a crash mid-write
    os.close(led._lock_fd)  # the process died: its lock goes with it
    led._lock_fd = -1
    again = make(tmp_path)
    assert again.size == 5
    assert again.append_now("event", {"request_id": "r5"}) == 6
    again.close()
    assert verify.verify(tmp_path / "audit", pubs(), tmp_path / "witness.ndjson").ok


def test_one_writer_per_node(tmp_path: Path) -> None:
    led = make(tmp_path)
    with pytest.raises(LedgerError, match="another process is writing node 'gw1'"):
        make(tmp_path)
    led.close()


async def test_readers_see_sealed_and_open_segments_while_the_writer_runs(tmp_path: Path) -> None:
    led = make(tmp_path, seal_events=50)
    led.start()
    for _ in range(3):
        await asyncio.gather(*(led.append("event", {"request_id": "x", "subject": "s"}) for _ in range(60)))
        await asyncio.sleep(0)
    for _ in range(100):
        if len(layout.list_node(led.dir).sealed) >= 2 and not led._to_seal:
            break
        await asyncio.sleep(0.05)
    files = layout.list_node(led.dir)
    assert len(files.sealed) >= 2 and files.wals
    con = open_ledger(tmp_path / "audit")  # the writer still holds its lock and files
    assert con.execute("SELECT count(*), count(DISTINCT seq), max(seq) FROM events").fetchone() == (180, 180, 180)
    led.close()


def test_records_are_checked_against_the_schema(tmp_path: Path) -> None:
    led = make(tmp_path)
    with pytest.raises(ValueError, match="unknown columns"):
        led.append_now("incident", {"kind": "x", "nonsense": 1})
    with pytest.raises(ValueError, match="unknown record kind"):
        led.append_now("gossip", {})
    assert led.append_now("incident", {"kind": "x", "detail": "y"}) == 1  # a bad record used no seq
    led.close()


def test_record_to_writes_a_signed_record_from_another_process(tmp_path: Path) -> None:
    key_file = tmp_path / "k.pem"
    keys.generate_key_file(key_file)
    seq = sink.record_to(tmp_path / "audit", "review", {"packet_sha256": "ab" * 32, "reviewer": "pat",
                                                        "signed_at": 1_700_000_000.0},
                         key_file=str(key_file), witness=tmp_path / "w/", node_id="tool-test")
    assert seq == 1
    con = open_ledger(tmp_path / "audit")
    assert con.sql("SELECT reviewer, node_id FROM reviews").fetchall() == [("pat", "tool-test")]
    private = keys.load_private(str(key_file))
    assert private is not None
    report = verify.verify(tmp_path / "audit", {keys.key_id_of(private.public_key()): private.public_key()},
                           tmp_path / "w/")
    assert report.ok and report.nodes[0].last_signed_size == 1


def test_sink_without_a_running_ledger_says_what_to_do() -> None:
    with pytest.raises(sink.SinkUnavailable, match="record_to"):
        sink.record("incident", {"kind": "x"})


def test_nodes_are_separate_trees_read_and_verified_as_one_record(tmp_path: Path) -> None:
    key = keys.parse_private(b"22" * 32, "test")
    for node, n in (("w1", 3), ("w2", 5)):
        led = Ledger(tmp_path / "audit", node, signing_key=key, witness=layout.witness_location(f"{tmp_path}/wit/"))
        led.open()
        for i in range(n):
            led.append_now("event", {"request_id": f"{node}-{i}"})
        led.close()
    con = open_ledger(tmp_path / "audit")
    assert con.execute("SELECT node_id, count(*), max(seq) FROM events GROUP BY node_id ORDER BY node_id"
                       ).fetchall() == [("w1", 3, 3), ("w2", 5, 5)]
    report = verify.verify(tmp_path / "audit", pubs(), tmp_path / "wit")
    assert report.ok and [(n.node_id, n.last_signed_size) for n in report.nodes] == [("w1", 3), ("w2", 5)]
    assert sorted(p.name for p in (tmp_path / "wit").iterdir()) == ["w1.ndjson", "w2.ndjson"]


def test_migrations_are_named_ordered_and_recorded_per_segment(tmp_path: Path) -> None:
    import duckdb

    from addons.ledger import schema

    names = [m.name for m in schema.MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names)
    con = duckdb.connect(":memory:")
    assert schema.apply_migrations(con) == names
    assert schema.apply_migrations(con) == []  # idempotent: nothing runs twice
    led = make(tmp_path, seal_events=2)
    led.append_now("event", {"request_id": "a"})
    led.append_now("event", {"request_id": "b"})
    led._rotate()
    led.seal_pending()
    (seg,) = layout.list_node(led.dir).sealed
    sealed = duckdb.connect(str(seg.path), read_only=True)
    assert [r[0] for r in sealed.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()] == names
    sealed.close()
    led.close()


async def test_sink_records_from_other_threads_on_the_running_ledger(tmp_path: Path) -> None:
    import threading

    led = make(tmp_path)
    led.start()
    sink.attach(led, asyncio.get_running_loop())
    try:
        t = threading.Thread(target=sink.record, args=("approval", {"hold_id": "h1", "kind": "grant",
                                                                    "outcome": "granted", "approvers": ["o"]}))
        t.start()
        t.join()
        await asyncio.sleep(0)  # the loop runs the thread's hand-off
        seq = await sink.record_durable("incident", {"kind": "fail_closed", "detail": "test"})
    finally:
        sink.attach(None)
    assert seq == 2
    led.close()
    con = open_ledger(tmp_path / "audit")
    assert con.execute("SELECT hold_id, outcome, approvers FROM approvals").fetchall() == [("h1", "granted", ["o"])]


async def test_close_while_the_background_sealer_runs_seals_each_segment_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    led = make(tmp_path, seal_events=200)
    led.start()
    for _ in range(4):
        await asyncio.gather(*(led.append("event", {"request_id": "x"}) for _ in range(250)))
    led.close()  # the background sealer is most likely still busy with a segment
    assert not [r for r in caplog.records if "sealing" in r.getMessage()]
    files = layout.list_node(led.dir)
    # Four group commits of 250 rotate after each full segment: at least three are sealed (a fourth
    # only if close()'s final checkpoint record lands in a full segment, which depends on timing),
    # each exactly once, and only the active write-ahead segment stays open.
    firsts = [seg.first for seg in files.sealed]
    assert len(firsts) >= 3 and len(firsts) == len(set(firsts)) and not files.wals[:-1]
    assert verify.verify(tmp_path / "audit", pubs(), tmp_path / "witness.ndjson").ok


def _forge_tail(tmp_path: Path, led_dir: Path, signer: keys.Ed25519PrivateKey | None) -> int:
    """Append a well-formed event (and optionally a checkpoint over it signed by `signer`, whose
    public key is published next to the data) to the write-ahead file, as someone without the
    gateway's key would."""
    node = layout.list_node(led_dir)
    res = verify.NodeResult(NODE)
    hashes = verify.node_data(node, res).hashes
    seq = len(hashes) + 1
    entry = canonical.encode("event", seq, {"node_id": NODE, "request_id": "forged"})
    lines = [wal.encode_line("event", seq, merkle.leaf_hash(entry), entry)]
    if signer is not None:
        root = merkle.root_of([*hashes, merkle.leaf_hash(entry)])
        cp = keys.sign_checkpoint(signer, NODE, seq, root, canonical.iso_ts(1_800_000_000.0))
        lines.append(wal.encode_line("checkpoint", None, None, orjson.dumps(cp.as_row(), option=orjson.OPT_SORT_KEYS)))
        pub = signer.public_key()
        (layout.keys_dir(tmp_path / "audit") / f"{keys.key_id_of(pub)}.pub").write_bytes(keys.public_pem(pub))
    with open(node.wals[-1].path, "ab") as fh:
        fh.write(b"".join(lines))
    return seq


@pytest.mark.parametrize("signer", [None, keys.parse_private(b"33" * 32, "forger")],
                         ids=["unsigned", "signed-by-a-published-foreign-key"])
def test_a_tail_no_trusted_checkpoint_covers_is_quarantined_never_signed(
    tmp_path: Path, signer: keys.Ed25519PrivateKey | None
) -> None:
    led = make(tmp_path)
    for i in range(3):
        led.append_now("event", {"request_id": f"r{i}"})
    led.close()
    seq = _forge_tail(tmp_path, led.dir, signer)
    again = make(tmp_path)
    assert again.size == seq - 1  # resumes from the last trusted checkpoint
    again.append_now("event", {"request_id": "after"})
    again.close()
    con = open_ledger(tmp_path / "audit")
    ids = [r[0] for r in con.sql("SELECT request_id FROM events ORDER BY seq").fetchall()]
    (detail,) = con.execute("SELECT detail FROM incidents WHERE kind = 'unsigned_tail_quarantined'").fetchone() or ("",)
    con.close()
    assert ids == ["r0", "r1", "r2", "after"]
    assert f"seq {seq}..{seq} (1 records)" in detail
    (moved,) = (led.dir / layout.QUARANTINE_DIR).iterdir()
    assert b'"request_id\\":\\"forged\\"' in moved.read_bytes()
    assert verify.verify(tmp_path / "audit", pubs(), tmp_path / "witness.ndjson").ok


def test_a_rotated_key_resumes_without_quarantine(tmp_path: Path) -> None:
    led = make(tmp_path)
    led.append_now("event", {"request_id": "old-key"})
    led.close()
    new = keys.parse_private(b"44" * 32, "rotated")
    again = Ledger(tmp_path / "audit", NODE, signing_key=new, witness=tmp_path / "witness.ndjson")
    again.open()
    assert again.size == 1 and not (again.dir / layout.QUARANTINE_DIR).exists()
    again.append_now("event", {"request_id": "new-key"})
    again.close()
    both = {**pubs(), keys.key_id_of(new.public_key()): new.public_key()}
    assert verify.verify(tmp_path / "audit", both, tmp_path / "witness.ndjson").ok


def test_the_witness_append_only_flag_is_checked_and_set_when_allowed(tmp_path: Path) -> None:
    led = make(tmp_path)
    try:
        if led.witness_append_only() is None:
            pytest.skip("this filesystem has no append-only attribute")
        assert led.witness_append_only() is False
        if os.geteuid() != 0:
            assert led.witness_append_only(set_flag=True) is False  # needs CAP_LINUX_IMMUTABLE
            return
        assert led.witness_append_only(set_flag=True) is True
        led.append_now("event", {"request_id": "appended"})  # appends still work
        assert led.witness is not None
        with pytest.raises(PermissionError):
            led.witness.write_bytes(b"")  # a rewrite does not
    finally:
        led.close()
        if led.witness is not None:
            subprocess.run(["chattr", "-a", str(led.witness)], check=False)


def test_a_segment_sealed_before_the_configuration_table_existed_still_reads(tmp_path: Path) -> None:
    import duckdb

    from addons.ledger.read import open_ledger

    led = make(tmp_path, seal_events=2)
    led.append_now("incident", {"kind": "test", "detail": "before the migration"})
    led.append_now("incident", {"kind": "test", "detail": "also before"})
    led._rotate()
    led.seal_pending()
    (seg,) = layout.list_node(led.dir).sealed
    con = duckdb.connect(str(seg.path))
    con.execute("DROP TABLE configuration")  # as a segment sealed before 0002_configuration
    con.close()
    led.append_now("configuration", {"kind": "gateway_settings", "name": "n", "content": {"a": 1}})
    led.close()
    con = open_ledger(tmp_path / "audit")
    try:
        assert con.execute("SELECT count(*) FROM incidents").fetchone() == (2,)
        assert con.execute("SELECT kind, content->>'a' FROM configuration").fetchall() == [("gateway_settings", "1")]
    finally:
        con.close()
