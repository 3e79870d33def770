"""`./run.sh report` command line: exit codes, messages that say how to fix, periods, charts' markup."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import xml.etree.ElementTree as ET
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from reports import charts, cli
from reports.buckets import choose
from reports.period import Period, PeriodError, parse_period
from tests.support import ledger_synth as synth


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "l.duckdb"
    synth.empty(path)
    return path


@pytest.mark.parametrize(("a", "b", "start", "end"), [
    ("2026-01-01", "2026-01-31", dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)),
    ("2026-01-01", "2026-01-01", dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2)),
    ("2026-01-01T10:00:00Z", "2026-01-01T12:30:00+02:00", dt.datetime(2026, 1, 1, 10), dt.datetime(2026, 1, 1, 10, 30)),
])
def test_period(a: str, b: str, start: dt.datetime, end: dt.datetime) -> None:
    assert parse_period(a, b) == Period(start, end)


@pytest.mark.parametrize(("a", "b", "message"), [
    ("2026-02-01", "2026-01-01", "is before --from"),
    ("yesterday", "2026-01-01", "--from: cannot read 'yesterday'"),
])
def test_bad_period(a: str, b: str, message: str) -> None:
    with pytest.raises(PeriodError, match=message):
        parse_period(a, b)


def test_packet_without_a_key_says_how_to_fix(ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PHIGATE_REPORT_KEY_FILE", "PHIGATE_REPORT_KEY", "PHIGATE_AUDIT_KEY_FILE", "PHIGATE_AUDIT_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run("--from", "2026-01-01", "--to", "2026-01-02", "--out", str(tmp_path / "p"),
                       "--ledger", str(ledger), "--audit-key-file", "")
    assert code == 2
    assert "no packet-signing key: pass --signing-key FILE (make one with ./run.sh report keygen)" in err
    assert not (tmp_path / "p").exists()


def test_packet_refuses_a_folder_that_is_not_empty(ledger: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run("--from", "2026-01-01", "--to", "2026-01-02", "--out", str(out), "--ledger", str(ledger),
                       "--unsigned", "--no-pdf")
    assert code == 2 and "is not empty; choose a new folder or pass --replace" in err
    code, _, err = run("--from", "2026-01-01", "--to", "2026-01-02", "--out", str(out), "--ledger", str(ledger),
                       "--unsigned", "--no-pdf", "--replace")
    assert code == 2 and "does not hold a packet; refusing to replace" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_packet_end_to_end_with_keygen_and_verify(ledger: Path, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    code, out, _ = run("keygen", "--out", str(key))
    assert code == 0 and "key id" in out
    assert run("keygen", "--out", str(key))[0] == 2  # never overwritten
    code, out, err = run("--from", "2026-01-01", "--to", "2026-01-02", "--out", str(tmp_path / "p"),
                         "--ledger", str(ledger), "--signing-key", str(key), "--no-pdf", "--no-verify")
    assert code == 0, err
    assert "packet sha256:" in out and "UNSIGNED" not in out
    code, out, _ = run("verify", "--packet", str(tmp_path / "p" / "manifest.json"), "--public-key", str(key))
    assert code == 0 and out.startswith("OK: packet")
    (tmp_path / "p" / "data" / "packet.json").write_text("{}")
    code, _, err = run("verify", "--packet", str(tmp_path / "p"))
    assert code == 1 and "packet.json: SHA-256 differs" in err


def test_missing_ledger(tmp_path: Path) -> None:
    code, _, err = run("--from", "2026-01-01", "--to", "2026-01-02", "--out", str(tmp_path / "p"),
                       "--ledger", str(tmp_path / "nowhere"), "--unsigned")
    assert code == 2 and "no ledger at" in err


def test_every_subcommand_has_help() -> None:
    for name in ("sign", "disclosures", "verify", "keygen"):
        with pytest.raises(SystemExit) as exc, redirect_stdout(io.StringIO()) as out:
            cli.main([name, "--help"])
        assert exc.value.code == 0 and f"run.sh report {name}" in out.getvalue()


def test_charts_escape_labels_and_parse_as_svg() -> None:
    svg = charts.horizontal_bars("Rules <b>", ["<script>x</script>", "a&b"],
                                 [charts.Series("deny", "#c62828", [3, 1])])
    root = ET.fromstring(str(svg))  # well-formed XML: nothing unescaped got in
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "<script>x</script>" in texts and "a&b" in texts and "Rules <b>" in texts
    assert "<script>" not in str(svg)


def test_empty_chart_says_so() -> None:
    svg = charts.stacked_columns("Requests", ["a", "b"], [charts.Series("allow", "#000", [0, 0])])
    assert "No requests in this period" in svg
    ET.fromstring(str(svg))


@pytest.mark.parametrize(("top", "ticks"), [(0, [0.0, 1.0]), (7, [0, 2, 4, 6, 8]), (1234, [0, 500, 1000, 1500])])
def test_nice_ticks(top: float, ticks: list[float]) -> None:
    assert charts.nice_ticks(top) == ticks


@pytest.mark.parametrize(("days", "unit", "count"), [(1, "hour", 24), (31, "day", 31), (365, "week", 53),
                                                     (365 * 6, "month", 72)])
def test_buckets(days: int, unit: str, count: int) -> None:
    start = dt.datetime(2026, 1, 1)
    b = choose(Period(start, start + dt.timedelta(days=days)))
    assert (b.unit, len(b.starts)) == (unit, count)


def test_sign_records_a_review_only_for_a_packet_that_verifies(ledger: Path, tmp_path: Path) -> None:
    from addons.ledger.read import open_ledger

    key = tmp_path / "k.pem"
    assert run("keygen", "--out", str(key))[0] == 0
    packet = tmp_path / "p"
    code, _, err = run("--from", "2026-01-01", "--to", "2026-01-31", "--out", str(packet), "--ledger", str(ledger),
                       "--signing-key", str(key), "--no-pdf", "--no-verify")
    assert code == 0, err
    audit = tmp_path / "audit"
    audit.mkdir()
    argv = ["sign", "--packet", str(packet / "packet.html"), "--reviewer", "Pat (privacy officer)",
            "--ledger", str(audit), "--public-key", str(key), "--node-id", "review-test", "--audit-key-file", ""]

    tampered = tmp_path / "tampered"
    shutil.copytree(packet, tampered)
    (tampered / "data" / "denials.csv").write_text("seq\n")
    code, _, err = run(*[str(tampered) if a == str(packet / "packet.html") else a for a in argv])
    assert code == 1 and "does not verify, so no review was recorded" in err

    code, out, err = run(*argv, "--notes", "no findings")
    assert code == 0, err
    assert "review recorded: packet " in out and "review-test:1" in out
    con = open_ledger(audit)
    try:
        rows = con.execute("SELECT reviewer, notes, period_from, period_to, packet_sha256 FROM reviews").fetchall()
    finally:
        con.close()
    sha = json.loads((packet / "manifest.json").read_text())["packet_sha256"]
    assert rows == [("Pat (privacy officer)", "no findings", dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1), sha)]
