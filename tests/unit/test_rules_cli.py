"""`./run.sh rules apply` refusals that need no identity provider: a file the gateway could not load,
an unknown target, no ledger. Nothing is recorded or replaced in any of them."""

from __future__ import annotations

import io
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from addons.cli import rules as rules_cli
from tests.support.servers import ROOT


def apply(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = rules_cli.main(["apply", *argv])
    return code, err.getvalue()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return Path(shutil.copytree(ROOT / "rules", tmp_path / "rules"))


@pytest.mark.parametrize(("edit", "target", "code", "message"), [
    (lambda t: t.replace("approvals_required: 1", "approvals_required: 11", 1), "policy.yaml", 1,
     "approvals_required: a whole number from 1 to 10"),
    (lambda t: t + "\nsurprise: true\n", "masking.yaml", 1, "does not compile, nothing changed"),
    (lambda t: t, "chain.py", 2, "expected policy.yaml, masking.yaml or profiles/NAME.yaml"),
    (lambda t: t, "../policy.yaml", 2, "expected policy.yaml, masking.yaml or profiles/NAME.yaml"),
])
def test_refused_before_anything_changes(rules: Path, tmp_path: Path, edit: object, target: str, code: int,
                                         message: str) -> None:
    source = "masking.yaml" if target == "masking.yaml" else "policy.yaml"
    new = tmp_path / "new.yaml"
    new.write_text(edit((rules / source).read_text()))  # type: ignore[operator]
    (tmp_path / "audit").mkdir()
    before = {p.name: p.read_bytes() for p in rules.iterdir() if p.is_file()}
    got, err = apply(str(new), "--to", target, "--reason", "test", "--rules", str(rules),
                     "--ledger", str(tmp_path / "audit"), "--token", "x", "--issuer", "http://127.0.0.1:9")
    assert got == code and message in err
    assert {p.name: p.read_bytes() for p in rules.iterdir() if p.is_file()} == before
    assert not any((tmp_path / "audit").iterdir())


def test_without_a_ledger_nothing_changes(rules: Path, tmp_path: Path) -> None:
    code, err = apply(str(rules / "policy.yaml"), "--reason", "test", "--rules", str(rules),
                      "--ledger", str(tmp_path / "missing"))
    assert code == 2 and "--ledger must be the gateway's ledger folder" in err
