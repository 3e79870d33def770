"""The progress line of long commands: drawn on a terminal, never into pipes or with --quiet."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from addons.core import progress
from addons.ledger import keys
from addons.ledger.writer import Ledger, Settings

ROOT = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_phase_counts_and_time_then_a_clean_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    term = Terminal()
    with progress.line("verify", stream=term):
        progress.phase("verifying segments", total=4)
        progress.advance(3)
        time.sleep(progress.TICK_S * 2.5)  # the ticker redraws
    text = term.getvalue()
    assert "\rverify: starting" in text and "verify: verifying segments 3/4 (75%), 0 s" in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == ""  # erased at the end


@pytest.mark.parametrize(("stream", "quiet", "term"), [(io.StringIO(), False, "xterm"), (Terminal(), True, "xterm"),
                                                       (Terminal(), False, "dumb")])
def test_nothing_is_written_off_a_terminal_with_quiet_or_a_dumb_terminal(
        stream: io.StringIO, quiet: bool, term: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", term)
    with progress.line("export", quiet=quiet, stream=stream):
        progress.phase("exporting", total=2)
        progress.advance()
    assert stream.getvalue() == ""


def ledger(tmp_path: Path) -> Path:
    led = Ledger(tmp_path / "audit", "n1", signing_key=keys.parse_private(b"33" * 32, "t"),
                 witness=tmp_path / "w/", settings=Settings(seal_events=2))
    led.open()
    for i in range(5):
        led.append_now("event", {"request_id": f"r{i}", "status": 200, "decision": "allow"})
        led.checkpoint_now()
    led.close()
    return tmp_path / "audit"


def on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; (exit status, everything it wrote)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, cwd=ROOT,
                            env={**os.environ, "TERM": "xterm", "PYTHONPATH": str(ROOT)})
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(60), out.decode(errors="replace")


@pytest.mark.parametrize(("quiet", "shown"), [(False, True), (True, False)])
def test_verify_shows_progress_on_a_terminal_unless_quiet(tmp_path: Path, quiet: bool, shown: bool) -> None:
    audit = ledger(tmp_path)
    code, text = on_a_terminal([sys.executable, "-m", "addons.cli.verify", "--dir", str(audit), "--witness",
                                str(tmp_path / "w/"), *(["--quiet"] if quiet else [])])
    assert code == 0 and "OK: the ledger verifies" in text
    assert ("verify: verifying segments" in text) is shown


def test_export_through_a_pipe_has_no_progress_line(tmp_path: Path) -> None:
    audit = ledger(tmp_path)
    out = subprocess.run([sys.executable, "-m", "addons.cli.export", "--dir", str(audit), "--out",
                          str(tmp_path / "e.csv"), "--format", "csv"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stderr == "exported 5 events records to " + str(tmp_path / "e.csv") + "\n"
    code, text = on_a_terminal([sys.executable, "-m", "addons.cli.export", "--dir", str(audit), "--out",
                                str(tmp_path / "e2.csv"), "--format", "csv"])
    assert code == 0 and "export: opening the ledger's segments" in text and "exported 5 events records" in text
