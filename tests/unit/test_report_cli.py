"""`./run.sh report` command line: exit codes, messages that say how to fix, periods, charts' markup."""

from __future__ import annotations

import datetime as dt
import io
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
    assert code == 0 and out.startswith("OK: packet") and "signed with the pinned key" in out
    (tmp_path / "p" / "data" / "packet.json").write_text("{}")
    code, _, err = run("verify", "--packet", str(tmp_path / "p"), "--public-key", str(key))
    assert code == 1 and "packet.json: SHA-256 differs" in err


def test_verify_needs_a_pinned_key_and_refuses_a_re_signed_packet(ledger: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHIGATE_REPORT_PUBLIC_KEY_FILE", raising=False)
    key, forger = tmp_path / "k.pem", tmp_path / "forger.pem"
    assert run("keygen", "--out", str(key))[0] == 0 and run("keygen", "--out", str(forger))[0] == 0
    common = ["--from", "2026-01-01", "--to", "2026-01-02", "--ledger", str(ledger), "--no-pdf", "--no-verify"]
    assert run(*common, "--out", str(tmp_path / "p"), "--signing-key", str(key))[0] == 0
    # Without a pinned key nothing verifies, and the message says why and how to fix it.
    code, _, err = run("verify", "--packet", str(tmp_path / "p"))
    assert code == 1
    assert "no trusted public key was given: pass --public-key FILE" in err and "PHIGATE_REPORT_PUBLIC_KEY_FILE" in err
    # The same packet with edited data, re-signed by someone else's key (which it then carries inside):
    # its own embedded key would accept it; the pinned key does not.
    assert run(*common, "--out", str(tmp_path / "forged"), "--signing-key", str(forger))[0] == 0
    code, _, err = run("verify", "--packet", str(tmp_path / "forged"), "--public-key", str(key))
    assert code == 1 and "not with the given public key" in err
    # The configured file works like the flag.
    monkeypatch.setenv("PHIGATE_REPORT_PUBLIC_KEY_FILE", str(key))
    code, out, _ = run("verify", "--packet", str(tmp_path / "p"))
    assert code == 0 and "signed with the pinned key" in out


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


def test_sign_needs_the_reviewers_own_token(ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHIGATE_TOKEN", raising=False)
    key = tmp_path / "k.pem"
    assert run("keygen", "--out", str(key))[0] == 0
    packet = tmp_path / "p"
    assert run("--from", "2026-01-01", "--to", "2026-01-31", "--out", str(packet), "--ledger", str(ledger),
               "--signing-key", str(key), "--no-pdf", "--no-verify")[0] == 0
    audit = tmp_path / "audit"
    audit.mkdir()
    argv = ["sign", "--packet", str(packet), "--ledger", str(audit), "--public-key", str(key), "--issuer",
            "http://127.0.0.1:9", "--audit-key-file", ""]
    code, _, err = run(*argv)
    assert code == 2 and "no review recorded: no token: set PHIGATE_TOKEN" in err
    # A name is not an identity: the old free-text option is gone.
    with pytest.raises(SystemExit), redirect_stderr(io.StringIO()):
        cli.main([*argv, "--reviewer", "Pat"])
    code, _, err = run(*argv, "--token", "not-a-jwt")
    assert code == 2 and "your token does not verify: the token is not a signed JWT" in err
    assert not any(audit.iterdir())  # nothing was written
