"""`./run.sh approvals` (addons/cli/approvals.py): documented commands, exit codes and messages."""

from __future__ import annotations

import argparse

import pytest

from addons.cli import approvals as cli_approvals
from tests.support.servers import free_port


def subcommands() -> list[str]:
    parser = cli_approvals.parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_every_command_is_documented() -> None:
    doc = cli_approvals.__doc__ or ""
    assert subcommands() == ["approve", "decisions", "deny", "grant", "grants", "list", "revoke", "show"]
    for name in subcommands():
        assert f"./run.sh approvals {name}" in doc, f"{name} is not in the module's usage text"


def test_no_token_says_how_to_fix_it(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHIGATE_TOKEN", raising=False)
    assert cli_approvals.main(["list"]) == 2
    assert capsys.readouterr().err == ("error: no access token: set PHIGATE_TOKEN (or pass --token) to your own "
                                       "OIDC access token\n")


def test_unreachable_admin_api_says_where_it_looked(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli_approvals.main(["--url", url, "--token", "t", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the admin API at {url}") and "PHIGATE_ADMIN_URL" in err


@pytest.mark.parametrize("argv", [["approve", "h-1"], ["deny", "h-1"], ["revoke", "g-1"],
                                  ["grant", "--user", "u", "--operation", "export", "--collection", "c",
                                   "--minutes", "5"]])
def test_decisions_require_a_reason(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_approvals.main(["--token", "t", *argv])
    assert exit_.value.code == 2 and "--reason" in capsys.readouterr().err
