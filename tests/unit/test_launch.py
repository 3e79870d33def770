"""`./run.sh gateway` start-up checks (addons/runtime/launch.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from addons.runtime.commands import mitmdump_argv
from addons.runtime.launch import LaunchError, parse, phigate_options

ROOT = Path(__file__).resolve().parents[2]


def test_everything_missing_is_listed_with_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("PHIGATE_UPSTREAM", "PHIGATE_ISSUER", "PHIGATE_BACKEND_CREDENTIAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    args = parse(["--rules", str(tmp_path), "--cert", str(tmp_path / "none.pem")])
    with pytest.raises(LaunchError) as err:
        phigate_options(args)
    text = str(err.value)
    assert "--upstream" in text and "--issuer" in text and "has no policy.yaml" in text
    assert "run ./run.sh certs" in text


def test_unset_credential_env_var_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_CRED", raising=False)
    args = parse(["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9412",
                  "--rules", str(ROOT / "rules"), "--backend-credential-env", "NO_SUCH_CRED", "--plain-http"])
    with pytest.raises(LaunchError, match="NO_SUCH_CRED is empty or unset"):
        phigate_options(args)


def test_valid_arguments_become_mitmdump_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRED", "x")
    cert = tmp_path / "server.pem"
    cert.write_text("pem")
    args = parse(["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9412",
                  "--rules", str(ROOT / "rules"), "--backend-credential-env", "CRED", "--cert", str(cert),
                  "--set", "phigate_node_id=n1"])
    opts = phigate_options(args)
    assert opts["phigate_allow_plain_http"] == "false" and opts["phigate_node_id"] == "n1"
    argv = mitmdump_argv(args, opts)
    assert argv[argv.index("--mode") + 1] == "reverse:http://127.0.0.1:8000@127.0.0.1:8443"
    assert argv[argv.index("--certs") + 1] == f"*={cert}"
    assert "phigate_issuer=http://127.0.0.1:9412" in argv


def test_key_and_audit_flags_become_options_and_missing_files_are_named(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRED", "x")
    tokens = tmp_path / "token-keys"
    tokens.write_text("*k1=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")
    base = ["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9412", "--rules", str(ROOT / "rules"),
            "--backend-credential-env", "CRED", "--plain-http"]
    opts = phigate_options(parse([*base, "--audit-dir", str(tmp_path / "audit"), "--token-key-file", str(tokens),
                                  "--node-id", "gw-a"]))
    assert opts["phigate_audit_dir"] == str(tmp_path / "audit")
    assert opts["phigate_token_key_file"] == str(tokens) and opts["phigate_node_id"] == "gw-a"
    assert "phigate_witness" not in opts  # unset flags leave the addon's default alone
    with pytest.raises(LaunchError, match=r"--audit-key-file: .*nope.pem does not exist \(./run.sh keys"):
        phigate_options(parse([*base, "--audit-key-file", str(tmp_path / "nope.pem")]))
