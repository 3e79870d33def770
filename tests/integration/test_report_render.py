"""A million-event packet, rendered the way people read it: the HTML in headless Chromium (Debian
chromium), the PDF as PNG pages (pdftoppm) and as text (pdftotext), with every section, the control
table, and numbers that match counts computed here directly from the ledger."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pytest

from reports import build, generate, manifest
from reports.period import parse_period
from tests.support import ledger_synth as synth
from tests.unit.test_report_packet import CITES, SECTION_TITLES

pytestmark = pytest.mark.integration

EVENTS = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed; ./run.sh setup installs it (Debian chromium, poppler-utils)")
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, generate.Written]:
    tmp = tmp_path_factory.mktemp("big")
    ledger = tmp / "ledger.duckdb"
    synth.generate(ledger, EVENTS, dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1))
    opts = build.BuildOptions(ledger=ledger, period=parse_period("2026-01-01", "2026-01-31"), out=tmp / "packet",
                              rules=ROOT / "rules", verify=False)
    return ledger, generate.write_packet(opts, None, pdf=True)


def expected(ledger: Path) -> dict[str, int]:
    con = duckdb.connect(str(ledger), read_only=True)
    try:
        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE decision = 'deny'), count(*) FILTER (WHERE decision = 'hold'),"
            " count(DISTINCT subject) FROM events"
        ).fetchone()
        fails = con.execute("SELECT count(*) FROM auth_failures").fetchone()
    finally:
        con.close()
    assert row is not None and fails is not None
    return {"events": row[0], "deny": row[1], "hold": row[2], "users": row[3], "auth_failures": fails[0]}


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_html_renders_in_headless_chromium(big: tuple[Path, generate.Written], tmp_path: Path) -> None:
    chromium = need("chromium")
    _, w = big
    shot = tmp_path / "packet.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={shot}", "--window-size=1280,4000", w.html.resolve().as_uri()],
            capture_output=True, timeout=120, check=True,
        )
    assert png_size(shot) == (1280, 4000)
    assert shot.stat().st_size > 100_000, "the screenshot is (nearly) blank"


def test_pdf_has_every_section_the_control_table_and_the_ledgers_numbers(big: tuple[Path, generate.Written],
                                                                         tmp_path: Path) -> None:
    need("pdftotext")
    ledger, w = big
    assert w.pdf is not None
    text = subprocess.run(["pdftotext", "-layout", str(w.pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    flat = re.sub(r"\s+", " ", text)
    for i, title in enumerate(SECTION_TITLES, start=2):
        assert f"{i} {title}" in flat, title
    for cite in CITES:
        assert f"§{cite}" in flat, cite
    e = expected(ledger)
    assert e["events"] == EVENTS
    assert re.search(rf"{e['events']:,} {e['deny']:,} {e['hold']:,} {e['users']:,} {e['auth_failures']:,}", flat)
    assert re.search(rf"Requests {e['events']:,}\b", flat)
    assert re.search(rf"Denied {e['deny']:,}\b", flat)
    assert re.search(rf"Held for a human decision \(any outcome\) {e['hold']:,}\b", flat)
    assert re.search(rf"Distinct users {e['users']:,}\b", flat)
    assert re.search(rf"Authentication failures {e['auth_failures']:,}\b", flat)
    assert f"Showing 60 of {e['deny']:,} rows" in flat  # long tables are summarised, the data file has all
    assert sum(1 for _ in (w.folder / "data" / "denials.csv").open()) == e["deny"] + 1


def test_pdf_pages_render_to_images(big: tuple[Path, generate.Written], tmp_path: Path) -> None:
    need("pdftoppm")
    _, w = big
    assert w.pdf is not None
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(w.pdf), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    info = subprocess.run(["pdfinfo", str(w.pdf)], capture_output=True, text=True, check=True).stdout
    count = int(re.search(r"Pages:\s+(\d+)", info).group(1))  # type: ignore[union-attr]
    assert len(pages) == count >= len(SECTION_TITLES)
    width, height = png_size(pages[0])
    assert width > height, "landscape pages"
    manifest.verify_packet(w.folder, require_signature=False)
