"""`./run.sh demo` installs only what its backend uses, and `--dir` never deletes a folder it did not make."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.demo import MARKER, DirRefused, demo_dir
from tests.support.servers import ROOT


def needs(*args: str) -> set[str]:
    out = subprocess.run(["bash", str(ROOT / "run.sh"), "needs", *args], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return set(out.split())


@pytest.mark.parametrize(("args", "expected"), [
    (("demo",), {"venv", "chroma", "idp", "debs:FONT_DEBS"}),
    (("demo", "--dir", "x"), {"venv", "chroma", "idp", "debs:FONT_DEBS"}),
    (("demo", "--backend", "milvus"), {"venv", "idp", "milvus", "debs:FONT_DEBS"}),
    (("demo", "--backend=milvus", "--keep-running"), {"venv", "idp", "milvus", "debs:FONT_DEBS"}),
    (("gateway", "--upstream", "http://127.0.0.1:8000"), {"venv"}),
    (("gateway", "--workers", "2"), {"venv", "debs:WORKER_DEBS"}),
    (("export", "--dir", "a"), {"venv"}),
    (("test",), {"venv", "chroma", "idp", "debs:TEST_DEBS", "clients", "milvus"}),
])
def test_each_command_installs_only_what_it_uses(args: tuple[str, ...], expected: set[str]) -> None:
    assert needs(*args) == expected


def test_the_demo_packages_are_fonts_only() -> None:
    text = (ROOT / "run.sh").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("FONT_DEBS=")]
    assert line == "FONT_DEBS=(fonts:fonts-dejavu-core)"


def test_dir_refuses_a_folder_it_did_not_make_and_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(DirRefused, match="is not empty and was not made by the demo"):
        demo_dir(str(tmp_path), "x-")
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    out = subprocess.run([sys.executable, "-m", "tests.support.demo", "--dir", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "was not made by the demo" in out.stderr and not out.stdout
    assert (tmp_path / "thesis.tex").is_file()


def test_dir_reuses_its_own_folder_afresh_and_accepts_new_or_empty_ones(tmp_path: Path) -> None:
    own = demo_dir(str(tmp_path / "new" / "demo"), "x-")
    assert (own / MARKER).is_file()
    (own / "audit").mkdir()
    assert demo_dir(str(own), "x-") == own and not (own / "audit").exists() and (own / MARKER).is_file()
    (tmp_path / "empty").mkdir()
    assert demo_dir(str(tmp_path / "empty"), "x-") == tmp_path / "empty"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DirRefused, match="is a file"):
        demo_dir(str(tmp_path / "afile"), "x-")
