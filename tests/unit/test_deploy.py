"""deploy/: the container image, the compose file and the systemd unit, checked without building
(`./run.sh container-test` builds and runs them): non-root, read-only, volumes, hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from addons.config import settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


@pytest.mark.parametrize("name", ["Containerfile", "chroma.Containerfile", "idp.Containerfile"])
def test_every_image_runs_as_a_numeric_non_root_user_and_copies_only_what_exists(name: str) -> None:
    ins = instructions(DEPLOY / name)
    users = [arg for op, arg in ins if op == "USER"]
    assert users, f"{name} has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"{name}: USER {users[-1]} (root or a name the runtime cannot check)"
    assert ins[0][0] == "ARG" and ins[1] == ("FROM", "${BASE}")  # the mmdebstrap-made Debian base
    for op, arg in ins:
        if op == "COPY":
            *sources, _ = arg.split()
            for src in sources:
                if src != ".phigate/idp/node_modules":  # made by ./run.sh setup
                    assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"


def test_the_gateway_image_keeps_audit_and_witness_on_volumes_and_starts_from_the_config() -> None:
    ins = dict(instructions(DEPLOY / "Containerfile"))
    volumes = yaml.safe_load(ins["VOLUME"])
    assert {"/var/lib/phigate/audit", "/var/lib/phigate/witness"} <= set(volumes)
    assert yaml.safe_load(ins["ENTRYPOINT"])[-2:] == ["-m", "addons.runtime.launch"]
    assert yaml.safe_load(ins["CMD"]) == ["--config", "/etc/phigate/phigate.yaml"]


def test_compose_services_are_read_only_unprivileged_and_published_on_loopback_only() -> None:
    doc = compose()
    assert set(doc["services"]) == {"gateway", "chroma", "idp"}
    for name, svc in doc["services"].items():
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges" in svc["security_opt"], name
        assert (DEPLOY / svc["build"]["dockerfile"].removeprefix("deploy/")).is_file(), name
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # Chroma is reachable only through the gateway: it publishes nothing.
    assert "ports" not in doc["services"]["chroma"]


def mount(spec: str) -> tuple[str, str]:
    """(destination, source) of a short volume spec; the source may hold ${VAR:-default}."""
    parts = spec.split(":")
    if parts[-1] in ("ro", "rw"):
        parts = parts[:-1]
    return parts[-1], ":".join(parts[:-1])


def test_compose_mounts_what_the_gateway_config_names() -> None:
    gw = compose()["services"]["gateway"]
    mounts = dict(mount(v) for v in gw["volumes"])
    assert mounts["/var/lib/phigate/audit"] == "audit" and mounts["/var/lib/phigate/witness"] == "witness"
    assert {"audit", "witness", "state"} <= set(compose()["volumes"])
    assert mounts["/etc/phigate/phigate.yaml"] == "./phigate.yaml"
    values, sets = settings.load_file(DEPLOY / "phigate.yaml")
    files = [values["cert"], values["audit_key_file"], values["token_key_file"], values["recording_key_file"],
             sets["phigate_admin_certfile"], sets["phigate_admin_keyfile"]]
    for f in files:
        assert any(f.startswith(m + "/") for m in mounts), f"{f} is not on a mounted folder"
    for f in (values["audit_dir"], values["witness"], sets["phigate_holds_db"], sets["confdir"]):
        assert any(f.startswith(m) for m in mounts if m.startswith("/var/lib/phigate/")), f


def test_the_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    unit = (DEPLOY / "phigate.service").read_text()
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                   "PrivateDevices=yes", "DynamicUser=yes", "CapabilityBoundingSet=\n", "RestrictNamespaces=yes",
                   "SystemCallFilter=@system-service", "StateDirectory=phigate"):
        assert option in unit, option
    # Verified as installed from this checkout: the install prefix is the only change.
    copy = tmp_path / "phigate.service"
    copy.write_text(unit.replace("/opt/phigate", str(ROOT)))
    verify = subprocess.run([SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", str(copy)],
                              capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-2000:]
    assert "Overall exposure level for phigate.service: 1." in security.stdout
