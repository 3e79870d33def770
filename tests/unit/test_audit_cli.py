"""`./run.sh export` and `./run.sh replay` (and retention purge), with exact output and exit codes."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import duckdb
import pytest

from addons.cli import export as cli_export
from addons.cli import replay as cli_replay
from addons.ledger import keys, recording, verify
from addons.ledger.writer import Ledger, Settings
from tests.support.servers import RecordingUpstream

KEY = recording.RecordingKey("rk1", b"q" * 32)
KEY_TEXT = "rk1:" + base64.b64encode(b"q" * 32).decode()
DAY1 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC).timestamp()
DAY2 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC).timestamp()


def exchange(path: str, body: bytes, resp: bytes) -> bytes:
    return recording.exchange_payload("POST", path, {"content-type": "application/json",
                                                     "authorization": "Bearer never-recorded"},
                                      body, 200, {"content-type": "application/json"}, resp)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    signing = keys.parse_private(b"33" * 32, "t")
    led = Ledger(tmp_path / "audit", "n1", signing_key=signing, witness=tmp_path / "w/", recording_key=KEY,
                 settings=Settings())
    led.open()
    led.append_now("event", {"ts": DAY1, "request_id": "a1", "session_id": "sess-1", "subject": "alice",
                             "method": "POST", "path": "/q", "status": 200, "decision": "allow",
                             "operation": "search", "collection": "notes"},
                   exchange("/q?x=1", b'{"n":1}', b'{"ids":["[MASKED]"]}'))
    led.append_now("event", {"ts": DAY2, "request_id": "a2", "session_id": "sess-1", "subject": "alice",
                             "method": "POST", "path": "/q", "status": 403, "decision": "deny"},
                   exchange("/q", b'{"n":2}', b'{"error":"forbidden"}'))
    led.append_now("event", {"ts": DAY2, "request_id": "b1", "session_id": "sess-2", "subject": "bob",
                             "status": 200, "decision": "allow"})
    led.checkpoint_now()
    led.close()
    return tmp_path / "audit"


def run(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_export_json_lines_for_a_period(ledger_dir: Path) -> None:
    code, out, _ = run(cli_export.main, ["--dir", str(ledger_dir), "--from", "2026-03-02", "--to", "2026-03-02"])
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["request_id"] for r in rows] == ["a2", "b1"]
    assert "entry" not in rows[0] and rows[0]["leaf_hash"]
    code, out, _ = run(cli_export.main, ["--dir", str(ledger_dir), "--from", "2026-03-01", "--to", "2026-03-01",
                                         "--with-entry"])
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["request_id"] == "a1" and json.loads(row["entry"])["request_id"] == "a1"


def test_export_csv_and_parquet(ledger_dir: Path, tmp_path: Path) -> None:
    code, out, _ = run(cli_export.main, ["--dir", str(ledger_dir), "--format", "csv"])
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("seq,ts,node_id,request_id") and len(lines) == 4
    target = tmp_path / "events.parquet"
    code, _, err = run(cli_export.main, ["--dir", str(ledger_dir), "--format", "parquet", "--out", str(target)])
    assert code == 0 and err.strip() == f"exported 3 events records to {target}"
    assert duckdb.sql(f"SELECT list(request_id ORDER BY seq) FROM '{target}'").fetchall() == [(["a1", "a2", "b1"],)]


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "parquet"], "parquet is binary: pass --out FILE.parquet"),
    (["--from", "March"], "'March': expected a date (2026-11-30) or ISO date-time"),
])
def test_export_usage_errors_say_how_to_fix(ledger_dir: Path, argv: list[str], message: str) -> None:
    code, _, err = run(cli_export.main, ["--dir", str(ledger_dir), *argv])
    assert (code, err.strip()) == (2, f"error: {message}")


def test_export_without_a_ledger_folder(tmp_path: Path) -> None:
    code, _, err = run(cli_export.main, ["--dir", str(tmp_path / "none")])
    assert code == 2 and "pass --dir AUDIT_DIR" in err


def test_replay_prints_the_session_in_order(ledger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIGATE_RECORDING_KEY", KEY_TEXT)
    code, out, _ = run(cli_replay.main, ["sess-1", "--dir", str(ledger_dir)])
    assert code == 0
    assert out.splitlines() == [
        "#1 2026-03-01T12:00:00.000000Z n1:1 alice (-) POST /q -> 200 allow [search notes]",
        "   > POST /q?x=1",
        '   > {"n":1}',
        '   < 200 {"ids":["[MASKED]"]}',
        "#2 2026-03-02T09:30:00.000000Z n1:2 alice (-) POST /q -> 403 deny [-]",
        "   > POST /q",
        '   > {"n":2}',
        '   < 200 {"error":"forbidden"}',
    ]
    assert "never-recorded" not in out


def test_replay_without_the_key_fails_authentication(ledger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIGATE_RECORDING_KEY", "rk1:" + base64.b64encode(b"z" * 32).decode())
    code, out, _ = run(cli_replay.main, ["sess-1", "--dir", str(ledger_dir)])
    assert code == 1 and "fails authentication" in out


def test_replay_resends_requests_to_a_target(ledger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIGATE_RECORDING_KEY", KEY_TEXT)
    with RecordingUpstream() as target:
        code, out, _ = run(cli_replay.main, ["sess-1", "--dir", str(ledger_dir), "--to", target.url,
                                             "--header", "Authorization: Bearer auditor-token", "--json"])
        got: list[dict[str, Any]] = target.requests
    assert code == 0
    assert [(r["method"], r["path"], r["body"]) for r in got] == [("POST", "/q?x=1", b'{"n":1}'),
                                                                   ("POST", "/q", b'{"n":2}')]
    assert all(r["headers"]["authorization"] == "Bearer auditor-token" for r in got)
    assert [json.loads(line)["replayed_status"] for line in out.splitlines()] == [200, 200]


def test_unknown_session(ledger_dir: Path) -> None:
    code, _, err = run(cli_replay.main, ["nope", "--dir", str(ledger_dir)])
    assert code == 1 and err.strip() == f"error: no events for session 'nope' in {ledger_dir}"


def test_purging_recordings_keeps_the_ledger_verifiable(ledger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec_dir = ledger_dir / "nodes" / "n1" / "recordings"
    now = dt.datetime(2026, 3, 2, 18, 0, tzinfo=dt.UTC).timestamp()
    removed = recording.purge(rec_dir, retention_days=0, now=now)
    assert [p.name for p in removed] == ["rec-20260301.ndjson"]
    monkeypatch.setenv("PHIGATE_RECORDING_KEY", KEY_TEXT)
    code, out, _ = run(cli_replay.main, ["sess-1", "--dir", str(ledger_dir)])
    assert code == 0 and "(exchange not recorded (no recording key) or purged after the retention period)" in out
    pub = keys.parse_private(b"33" * 32, "t").public_key()
    report = verify.verify(ledger_dir, {keys.key_id_of(pub): pub}, ledger_dir.parent / "w/")
    assert report.ok and report.nodes[0].last_signed_size == 3
    assert recording.purge(rec_dir, retention_days=2190, now=time.time()) == []
