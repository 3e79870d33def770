"""The gateway's start-up settings: one table, read from a config file, the environment and flags.

    ./run.sh gateway --config phigate.yaml [--port 9443 ...]

Each setting has one key (the config file key), one flag and one environment variable. Highest
first: the flag, then the environment variable, then the config file, then the default. Any other
mitmproxy or phigate option goes under `set:` in the file (or `--set OPTION=VALUE`, which wins).

    upstream: http://127.0.0.1:8000
    issuer: https://idp.example.org
    backend_credential_env: CHROMA_CREDENTIAL
    audit_dir: /var/lib/phigate/audit
    set:
      phigate_admin_port: 8444

A bad file stops the launcher with the file, the key, the bad value and what was expected.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addons.config.rulefiles import ConfigError, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
SET_KEY = "set"


class SettingError(ConfigError):
    """A config file entry that cannot be used: file, key, bad value, expected."""

    def diagnostics(self) -> str:
        shown = repr(self.value)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        key = f", key {self.rule_id!r}" if self.rule_id else ""
        return f"{self.file}{key}: bad value {shown}; expected {self.expected}"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # config file key, and the launcher's attribute name
    help: str
    default: Any = ""
    kind: type = str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    option: str | None = None  # the mitmproxy option it is passed on as, when it is one
    env_name: str | None = None  # when it is not PHIGATE_KEY

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return self.env_name or "PHIGATE_" + self.key.upper()

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            hi = f"-{self.maximum}" if self.maximum is not None else " or more"
            return f"an integer {self.minimum}{hi}" if self.minimum is not None else "an integer"
        return "a string"

    def check(self, value: Any, file: str) -> Any:
        """The value, typed; SettingError when it is not what this setting takes."""
        ok = isinstance(value, self.kind) and not (self.kind is int and isinstance(value, bool))
        if self.kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            value, ok = str(value), True  # `node_id: 7` means the string "7"
        if ok and self.choices and value not in self.choices:
            ok = False
        if ok and self.kind is int and ((self.minimum is not None and value < self.minimum)
                                        or (self.maximum is not None and value > self.maximum)):
            ok = False
        if not ok:
            raise SettingError(file, self.key, value, self.expected())
        return value

    def from_env(self, text: str) -> Any:
        source = f"environment variable {self.env}"
        if self.kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise SettingError(source, None, text, "1 or 0 (true or false)")
            return text.lower() in ("1", "true", "yes")
        if self.kind is int:
            try:
                return self.check(int(text), source)
            except ValueError:
                raise SettingError(source, None, text, self.expected()) from None
        return self.check(text, source)


SETTINGS: tuple[Setting, ...] = (
    Setting("upstream", "backend base URL, e.g. http://127.0.0.1:8000"),
    Setting("profile", "backend profile: rules/profiles/NAME.yaml", "chroma"),
    Setting("rules", "rules folder", str(ROOT / "rules")),
    Setting("host", "listen address", "127.0.0.1"),
    Setting("port", "listen port", 8443, int, minimum=1, maximum=65535),
    Setting("cert", "PEM with the listener's key and chain (./run.sh certs makes one)",
            str(ROOT / "certs" / "server.pem"), env_name="PHIGATE_TLS_CERT"),
    Setting("plain_http", "accept plain HTTP instead of TLS; for loopback tests only", False, bool),
    Setting("issuer", "OIDC issuer URL"),
    Setting("audience", "expected token audience", "phigate"),
    Setting("backend_credential_env", "env var holding the backend's own credential"),
    Setting("backend_credential_file", "file holding the backend's own credential"),
    Setting("no_backend_credential", "the backend takes no credential (say so explicitly)", False, bool),
    # Secrets and the audit trail: files outside the repository (./run.sh keys makes development ones).
    Setting("audit_dir", "folder of the tamper-evident audit ledger", option="phigate_audit_dir"),
    Setting("audit_key_file", "Ed25519 key that signs audit checkpoints (kept away from the ledger)",
            option="phigate_audit_key_file"),
    Setting("witness", "file or folder outside the audit folder that receives every checkpoint",
            option="phigate_witness"),
    Setting("recording_key_file", "AES-GCM key(s) for encrypted session recordings",
            option="phigate_recording_key_file"),
    Setting("token_key_file", "keys for consistent PHI tokens (masking)", option="phigate_token_key_file"),
    Setting("node_id", "this gateway's node id in the audit ledger", option="phigate_node_id"),
    Setting("engine", "lean: the chain in a mitmproxy master with only the built-ins a gateway needs "
            "(addons/runtime/engine.py; unknown --set names are an error); mitmdump: stock mitmdump -s "
            "addons/chain.py", "lean", choices=("lean", "mitmdump")),
    Setting("workers", "gateway processes behind HAProxy on the one listen address (1: a single process, "
            "no HAProxy)", 1, int, minimum=1, maximum=64),
    Setting("log_format", "log lines as text, or json (one object per line, UTC timestamps)", "text",
            choices=("text", "json"), option="phigate_log_format"),
)
BY_KEY = {s.key: s for s in SETTINGS}


def load_file(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A config file's settings (typed) and its `set:` options; SettingError on anything wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingError(p, None, str(p), f"a readable config file ({exc.strerror})") from exc
    doc = parse_yaml(p, text)
    if doc is None:
        return {}, {}
    if not isinstance(doc, dict):
        raise SettingError(p, None, doc, "a mapping of setting: value")
    values: dict[str, Any] = {}
    sets: dict[str, str] = {}
    for key, value in doc.items():
        if key == SET_KEY:
            sets = _sets(p, value)
        elif key in BY_KEY:
            values[key] = BY_KEY[key].check(value, str(p))
        else:
            raise SettingError(p, str(key), value, "a known key: " + ", ".join([*BY_KEY, SET_KEY]))
    return values, sets


def _sets(p: Path, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise SettingError(p, SET_KEY, value, "a mapping of OPTION: VALUE (as for --set OPTION=VALUE)")
    out: dict[str, str] = {}
    for name, v in value.items():
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise SettingError(p, f"{SET_KEY}.{name}", name, "an option name")
        if isinstance(v, bool):
            out[name] = "true" if v else "false"
        elif isinstance(v, str | int | float):
            out[name] = str(v)
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            out[name] = ",".join(v)
        else:
            raise SettingError(p, f"{SET_KEY}.{name}", v, "a string, number, boolean or list of strings")
    return out


def resolve(given: Mapping[str, Any], file_values: Mapping[str, Any],
            environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Every setting's value and where it came from (flag, env, file or default)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        if given.get(s.key) is not None:
            values[s.key], sources[s.key] = s.check(given[s.key], f"flag {s.flag}"), "flag"
        elif env.get(s.env):
            values[s.key], sources[s.key] = s.from_env(env[s.env]), f"env {s.env}"
        elif s.key in file_values:
            values[s.key], sources[s.key] = file_values[s.key], "config file"
        else:
            values[s.key], sources[s.key] = s.default, "default"
    return values, sources


# Words in an option name whose value is (or may be) a secret itself rather than where one is kept.
SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "apikey", "api_key", "key")
POINTERS = ("_file", "_env", "_dir", "_roles", "_claim")
ELIDED = "<elided>"


def elide(name: str, value: str) -> str:
    """The value as --print-config shows it: secrets and URL credentials or queries elided."""
    low = name.lower()
    if any(w in low for w in SECRET_WORDS) and not low.endswith(POINTERS):
        return ELIDED if value else value
    parts = []
    for item in value.split(","):
        url = urllib.parse.urlsplit(item)
        if url.scheme in ("http", "https") and (url.username or url.password or url.query):
            # A webhook or upstream URL can carry a key in its user part or query string.
            host = url.hostname or ""
            netloc = f"{ELIDED}@{host}" if url.username or url.password else host
            if url.port:
                netloc += f":{url.port}"
            item = urllib.parse.urlunsplit((url.scheme, netloc, url.path, ELIDED if url.query else "", ""))
        parts.append(item)
    return ",".join(parts)
