"""`./run.sh container-test`: the gateway image and deploy/compose.yaml, built and run with podman.

Not part of `./run.sh test` (building the images takes minutes): collected only with
PHIGATE_CONTAINER_TEST=1, which deploy/container-test.sh sets after making the Debian base image.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from addons.cli.certs import make_certs
from addons.cli.keys import make_keys
from tests.support.servers import ROOT, chroma_steps, client_token, free_port

COMPOSE = ROOT / "deploy" / "compose.yaml"
GATEWAY_UID = "10001"
IDP_UID = "10003"


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    url: str
    admin_url: str
    idp_url: str
    ca: Path

    def compose(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman-compose", "-p", self.project, "-f", str(COMPOSE), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=120)

    def token(self, client_id: str) -> str:
        return client_token(self.idp_url, client_id, cafile=str(self.ca))

    def get(self, url: str, token: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(url)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        ctx = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()


def compose_file() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def build_images(s: Stack) -> None:
    """Each service's image, as compose would build it (podman-compose 1.0 exits 0 even when a build
    fails, and cannot mount a file into a build). The build host's CA bundle is mounted over the
    image's for the build only: hosts behind a TLS-inspecting proxy reach PyPI through their own CA."""
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    for service in compose_file()["services"].values():
        argv = ["podman", "build", "-q", "-t", service["image"], "-f", str(ROOT / service["build"]["dockerfile"])]
        if ca.is_file():
            argv += ["-v", f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro"]
        out = subprocess.run([*argv, str(ROOT)], env=s.env, capture_output=True, text=True, timeout=1800)
        assert out.returncode == 0, f"{service['image']} was not built:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"


def secrets_for_the_gateway(folder: Path) -> None:
    """TLS certificate and development keys, readable by the gateway's user only (as in production);
    the IdP's copy of the certificate, by the IdP's user only."""
    make_certs(folder / "tls", ["127.0.0.1", "localhost", "idp"])
    make_keys(folder / "keys")
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, int(GATEWAY_UID), int(GATEWAY_UID))
    shutil.copytree(folder / "tls", folder / "idp-tls")
    for path in [folder / "idp-tls", *(folder / "idp-tls").iterdir()]:
        os.chown(path, int(IDP_UID), int(IDP_UID))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="phigate-compose-"))
    secrets_for_the_gateway(work / "secrets")
    project = f"phigate-ct{os.getpid()}"
    env = {**os.environ, "PHIGATE_PROJECT": project, "PHIGATE_SECRETS": str(work / "secrets"),
           "PHIGATE_PORT": str(free_port()), "PHIGATE_ADMIN_PORT": str(free_port()),
           "PHIGATE_IDP_PORT": str(free_port())}
    s = Stack(project, env, f"https://127.0.0.1:{env['PHIGATE_PORT']}",
              f"https://127.0.0.1:{env['PHIGATE_ADMIN_PORT']}", f"https://127.0.0.1:{env['PHIGATE_IDP_PORT']}",
              work / "secrets" / "tls" / "ca.crt")
    build_images(s)
    up = s.compose("up", "-d", timeout=300)
    try:
        running = s.podman("ps", "--format", "{{.Names}}").stdout.split()
        assert {f"{project}-{n}" for n in ("idp", "chroma", "gateway")} <= set(running), (
            f"{running}\n{up.stdout[-4000:]}{up.stderr[-4000:]}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if s.get(f"{s.url}/-/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            logs = s.podman("logs", f"{project}-gateway")
            raise AssertionError(f"the gateway did not get ready:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        yield s
    finally:
        s.compose("down", "-v", timeout=300)
        shutil.rmtree(work, ignore_errors=True)


def test_the_gateway_runs_as_a_non_root_user_on_a_read_only_root(stack: Stack) -> None:
    name = f"{stack.project}-gateway"
    assert stack.podman("exec", name, "id", "-u").stdout.strip() == GATEWAY_UID
    touched = stack.podman("exec", name, "touch", "/opt/phigate/rules/x")
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr
    inspect = json.loads(stack.podman("inspect", name).stdout)[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    mounts = {m["Destination"]: m for m in inspect["Mounts"]}
    assert {"/var/lib/phigate/audit", "/var/lib/phigate/witness"} <= set(mounts)
    assert mounts["/var/lib/phigate/audit"]["Type"] == "volume"


def test_clients_go_through_the_gateway_to_chroma_with_metrics_and_json_logs(stack: Stack) -> None:
    admin, clin = stack.token("admin-1"), stack.token("clin-1")
    assert stack.get(f"{stack.url}/api/v2/heartbeat")[0] == 401
    assert stack.get(f"{stack.url}/api/v2/heartbeat", admin)[0] == 200
    ssl_env = {"SSL_CERT_FILE": str(stack.ca)}
    steps = [{"op": "create", "collection": "patients_compose"},
             {"op": "add", "collection": "patients_compose", "ids": ["p1"], "embeddings": [[0.1, 0.2, 0.3]],
              "metadatas": [{"ward": "cardio", "mrn": "1234567"}], "documents": ["follow-up"]}]
    assert all(r["ok"] for r in chroma_steps(stack.url, admin, steps, env=ssl_env)), "seeding through the gateway"
    (found,) = chroma_steps(stack.url, clin, [{"op": "query", "collection": "patients_compose",
                                               "query_embeddings": [[0.1, 0.2, 0.3]], "n_results": 1,
                                               "where": {"ward": "cardio"}, "include": ["metadatas"]}], env=ssl_env)
    assert found["ok"], found
    status, body = stack.get(f"{stack.admin_url}/metrics")
    assert status == 200
    text = body.decode()
    assert 'phigate_requests_total{backend="chroma",decision="allow",operation="search",status="200"}' in text
    assert 'phigate_refusals_total{reason="missing_token",stage="identity"}' in text or "stage=\"identity\"" in text
    logs = stack.podman("logs", f"{stack.project}-gateway")
    lines = [json.loads(x) for x in (logs.stdout + logs.stderr).splitlines() if x.startswith("{")]
    assert any(x.get("msg") == "decision" and x.get("operation") == "search" for x in lines)
    assert admin not in logs.stdout + logs.stderr and clin not in logs.stdout + logs.stderr


def test_the_audit_volume_holds_a_ledger_that_verifies(stack: Stack) -> None:
    stop = stack.podman("stop", "-t", "20", f"{stack.project}-gateway")  # seals the ledger
    assert stop.returncode == 0, stop.stderr
    audit = stack.podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{stack.project}_audit").stdout.strip()
    witness = stack.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                           f"{stack.project}_witness").stdout.strip()
    out = subprocess.run([str(ROOT / ".phigate" / "venv" / "bin" / "python"), "-m", "addons.cli.verify", "--dir",
                          audit, "--witness", witness + "/"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr
