"""The gateway's settings: one config file, overridden by environment and flags, validated with
file, key, bad value and what was expected; --print-config elides secrets; --version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from addons.config import settings
from addons.runtime import launch

ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "phigate.yaml"
    p.write_text(text)
    return p


def test_every_flag_setting_has_a_config_key() -> None:
    flags = {a.dest for a in launch.parser()._actions if a.option_strings and a.dest not in
             ("help", "config", "print_config", "version", "sets")}
    assert flags == set(settings.BY_KEY)


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    cfg = write(tmp_path, "port: 9001\nprofile: qdrant\nworkers: 3\nplain_http: true\n"
                          "set: {phigate_admin_port: 9444}\n")
    args = launch.parse(["--config", str(cfg), "--port", "9003", "--set", "phigate_admin_port=9445"],
                        environ={"PHIGATE_PORT": "9002", "PHIGATE_PROFILE": "milvus"})
    assert (args.port, args.profile, args.workers, args.plain_http, args.audience) == (9003, "milvus", 3, True,
                                                                                         "phigate")
    assert args.sources["port"] == "flag" and args.sources["profile"] == "env PHIGATE_PROFILE"
    assert args.sources["workers"] == "config file" and args.sources["audience"] == "default"
    assert args.sets[-1] == "phigate_admin_port=9445"  # --set comes after the file's set: and wins
    args = launch.parse(["--config", str(cfg)], environ={})
    assert args.port == 9001 and args.sets == ["phigate_admin_port=9444"]


def test_file_settings_become_the_same_options_as_flags(tmp_path: Path) -> None:
    cfg = write(tmp_path, f"upstream: http://127.0.0.1:8000\nissuer: http://127.0.0.1:9\nrules: {ROOT / 'rules'}\n"
                          "plain_http: true\nno_backend_credential: true\naudit_dir: /var/lib/phigate/audit\n"
                          "node_id: 7\nlog_format: json\nengine: mitmdump\n")
    from_file = launch.phigate_options(launch.parse(["--config", str(cfg)], environ={}))
    from_flags = launch.phigate_options(launch.parse(
        ["--upstream", "http://127.0.0.1:8000", "--issuer", "http://127.0.0.1:9", "--rules", str(ROOT / "rules"),
         "--plain-http", "--no-backend-credential", "--audit-dir", "/var/lib/phigate/audit", "--node-id", "7",
         "--log-format", "json", "--engine", "mitmdump"], environ={}))
    assert from_file == from_flags
    assert from_file["phigate_node_id"] == "7" and from_file["phigate_log_format"] == "json"


@pytest.mark.parametrize(("text", "message"), [
    ("port: 70000\n", "key 'port': bad value 70000; expected an integer 1-65535"),
    ("port: '8443'\n", "key 'port': bad value '8443'; expected an integer 1-65535"),
    ("workers: true\n", "key 'workers': bad value True; expected an integer 1-64"),
    ("plain_http: 'yes'\n", "key 'plain_http': bad value 'yes'; expected true or false"),
    ("engine: fast\n", "key 'engine': bad value 'fast'; expected one of lean, mitmdump"),
    ("log_format: JSON\n", "key 'log_format': bad value 'JSON'; expected one of text, json"),
    ("upstrem: http://x\n", "key 'upstrem': bad value 'http://x'; expected a known key: upstream, profile"),
    ("issuer: [a, b]\n", "key 'issuer': bad value \\['a', 'b'\\]; expected a string"),
    ("set: [phigate_x]\n", "key 'set': bad value \\['phigate_x'\\]; expected a mapping of OPTION: VALUE"),
    ("set: {phigate_x: {a: 1}}\n", "key 'set.phigate_x': bad value \\{'a': 1\\}; expected a string, number"),
    ("- port\n", "bad value \\['port'\\]; expected a mapping of setting: value"),
    ("port: 1\nport: 2\n", "expected valid YAML \\(duplicate key 'port'\\)"),
])
def test_a_bad_file_names_file_key_value_and_expected(tmp_path: Path, text: str, message: str) -> None:
    cfg = write(tmp_path, text)
    with pytest.raises(launch.LaunchError, match=f"cannot start the gateway: {cfg}.*{message}"):
        launch.parse(["--config", str(cfg)], environ={})


@pytest.mark.parametrize(("env", "message"), [
    ({"PHIGATE_PORT": "http"}, "environment variable PHIGATE_PORT: bad value 'http'; expected an integer 1-65535"),
    ({"PHIGATE_PLAIN_HTTP": "maybe"}, "environment variable PHIGATE_PLAIN_HTTP: bad value 'maybe'; expected 1 or 0"),
    ({"PHIGATE_ENGINE": "x"}, "environment variable PHIGATE_ENGINE, key 'engine': bad value 'x'; expected one of"),
])
def test_a_bad_environment_value_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(launch.LaunchError, match=message):
        launch.parse([], environ=env)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(launch.LaunchError, match=r"nope.yaml: bad value .*expected a readable config file"):
        launch.parse(["--config", str(tmp_path / "nope.yaml")], environ={})


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("phigate_client_secret", "s3cr3t", "<elided>"),
    ("phigate_admin_password", "pw", "<elided>"),
    ("phigate_api_key", "k", "<elided>"),
    ("phigate_token_key_file", "/etc/phigate/keys/token-keys", "/etc/phigate/keys/token-keys"),
    ("phigate_token_key_env", "PHIGATE_TOKEN_KEYS", "PHIGATE_TOKEN_KEYS"),
    ("phigate_approval_webhooks", "https://h.example/a?token=x,https://u:p@h2.example:8/b",
     "https://h.example/a?<elided>,https://<elided>@h2.example:8/b"),
    ("upstream", "http://127.0.0.1:8000", "http://127.0.0.1:8000"),
])
def test_print_config_elides_secrets_not_where_they_are_kept(name: str, value: str, shown: str) -> None:
    assert settings.elide(name, value) == shown


def test_print_config_and_version_through_run_sh(tmp_path: Path) -> None:
    cfg = write(tmp_path, "upstream: http://127.0.0.1:8000\nport: 9001\n"
                          "set: {phigate_approval_webhooks: 'https://hooks.example/x?key=abc123'}\n")
    env = {"PATH": "/usr/bin:/bin", "PHIGATE_PORT": "9002", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "addons.runtime.launch", "--config", str(cfg), "--print-config",
                          "--workers", "2"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'upstream: "http://127.0.0.1:8000"  # config file' in lines
    assert "port: 9002  # env PHIGATE_PORT" in lines and "workers: 2  # flag" in lines
    assert '  phigate_approval_webhooks: "https://hooks.example/x?<elided>"' in lines
    assert "abc123" not in out.stdout
    assert any(x.startswith("#  - --issuer") for x in lines)  # says why it would not start
    ver = subprocess.run([sys.executable, "-m", "addons.runtime.launch", "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert ver.returncode == 0 and ver.stdout.startswith("phigate 0.1.0 (mitmproxy 12.")


def test_the_deploy_config_file_is_valid() -> None:
    values, sets = settings.load_file(ROOT / "deploy" / "phigate.yaml")
    assert values["audit_dir"] and values["witness"] and values["log_format"] == "json"
    assert sets["phigate_admin_host"]
