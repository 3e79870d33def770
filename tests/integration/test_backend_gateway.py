"""The real clients of Qdrant, Pinecone, OpenSearch, Weaviate and mem0 drive the gateway.

No server of these backends installs here, so the upstream is tests/support/recorded_upstream.py:
it answers with responses built from each backend's published API documents and records what it
received. The clients (qdrant-client over REST, pinecone, opensearch-py; Weaviate, mem0 over their
REST/GraphQL calls) run in .phigate/clients-venv, as tests/support/backend_clients.py.

Checked on every backend, with tokens from the real OpenID provider:
- search, get and export pass, and the client receives no PHI the masking rules mask;
- writes pass (Qdrant's batch, OpenSearch's NDJSON _bulk) and reach the backend unchanged;
- the caller's token never reaches the backend; the backend's own credential does, in its header;
- a drop, the tricky mixed writes/deletes and an unknown route are refused, and never reach it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKEND_CREDENTIAL
from tests.support.recorded_upstream import RecordedUpstream
from tests.support.servers import ROOT, STATE, Gateway, Idp, http_call

pytestmark = pytest.mark.integration

CLIENTS_PYTHON = STATE / "clients-venv" / "bin" / "python"
DRIVER = ROOT / "tests" / "support" / "backend_clients.py"
RECORDED = ("qdrant", "pinecone", "opensearch", "weaviate", "mem0")

# The fixtures' patients: none of these may reach a non-clinical caller.
PHI = ("MRN-4839201", "MRN-5520187", "MRN-6017342", "Maria Gonzalez", "Aiko Tanaka", "512-44-9081",
       "078-05-1120", "219-09-9999", "1958-03-14")

POLICY = """\
description: Backend profile integration tests (tests/integration/test_backend_gateway.py).
roles:
  claim: groups
  map: {clinicians: clinician, agents: agent, privacy-office: approver, db-admins: db-admin, emergency: emergency}
rules:
  - {id: health-and-admin, roles: ["*"], operations: [health, admin], action: allow}
  - {id: no-drop, operations: [drop], action: deny, reason: dropping is disabled in this deployment}
  - id: agents-read-write
    roles: [agent]
    operations: [search, get, export, write]
    action: allow
  - id: clinicians-all
    roles: [clinician]
    operations: [search, get, export, write, delete, schema-write]
    action: allow
"""

# How each backend's own credential must arrive upstream (profile auth.upstream).
UPSTREAM_AUTH = {
    "qdrant": ("api-key", BACKEND_CREDENTIAL), "pinecone": ("api-key", BACKEND_CREDENTIAL),
    "opensearch": ("authorization", f"Basic {BACKEND_CREDENTIAL}"),
    "weaviate": ("authorization", f"Bearer {BACKEND_CREDENTIAL}"),
    "mem0": ("x-api-key", BACKEND_CREDENTIAL),
}

# Refused for an agent (allowed to write, not to delete or drop): (op, why)
REFUSED = {
    "qdrant": [("drop", "drop"), ("batch_mixed", "a delete inside a write batch"), ("delete_filter", "delete")],
    "pinecone": [("drop", "drop"), ("delete_all", "deleteAll is a drop"), ("delete_ids", "delete")],
    "opensearch": [("drop", "drop"), ("drop_wildcard", "wildcard drop"), ("bulk_mixed", "a delete in a bulk")],
    "weaviate": [("drop", "drop"), ("delete_filter", "delete by filter")],
    "mem0": [("drop", "/reset"), ("delete_filter", "delete every memory of a user")],
}
READS = {"qdrant": ["search", "get", "export"], "pinecone": ["search", "get", "export"],
         "opensearch": ["search", "msearch", "get", "export"], "weaviate": ["search", "get", "export"],
         "mem0": ["search", "get", "export", "history"]}

UNKNOWN = {
    "qdrant": ("POST", "/collections/notes/points/teleport", {}, "api-key"),
    "pinecone": ("GET", "/vectors/fetch?namespace=clinic-a", None, "Api-Key"),  # fetch without ids
    "opensearch": ("POST", "/_nodes/reload_secure_settings", {}, "Authorization"),
    "weaviate": ("POST", "/v1/graphql", {"query": "mutation { dropEverything }"}, "Authorization"),
    "mem0": ("GET", "/memories", None, "X-API-Key"),  # list every user's memories
}

# Writes an agent may make (including Qdrant's batch and OpenSearch's NDJSON _bulk without deletes).
WRITES = {"qdrant": ["write", "set_payload", "batch_write"], "pinecone": ["write", "update"],
          "opensearch": ["write", "bulk_write"], "weaviate": ["write", "batch_write"], "mem0": ["write", "update"]}

needs_clients = pytest.mark.skipif(not CLIENTS_PYTHON.exists(),
                                   reason="backend clients venv missing: run ./run.sh setup (ensure_clients)")


def rules_dir(tmp: Path, policy: str = POLICY) -> Path:
    """A rules folder with the repo's profiles and masking rules, and this test's policy."""
    out = tmp / "rules"
    shutil.copytree(ROOT / "rules" / "profiles", out / "profiles")
    shutil.copy(ROOT / "rules" / "masking.yaml", out / "masking.yaml")
    (out / "policy.yaml").write_text(policy)
    return out


def drive(backend: str, url: str, token: str, *ops: str) -> dict[str, dict[str, Any]]:
    out = subprocess.run([str(CLIENTS_PYTHON), str(DRIVER), backend, *ops, "--url", url, "--token", token],
                         capture_output=True, text=True, timeout=180, check=True, cwd=ROOT)
    return {r["op"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])}


@pytest.fixture
def backend_gateway(gateway_factory: Callable[..., Gateway], tmp_path: Path
                    ) -> Iterator[Callable[[str], tuple[RecordedUpstream, Gateway]]]:
    upstreams: list[RecordedUpstream] = []

    def start(backend: str) -> tuple[RecordedUpstream, Gateway]:
        up = RecordedUpstream(backend).start()
        upstreams.append(up)
        gw = gateway_factory(up.url, phigate_profile=backend, phigate_rules=str(rules_dir(tmp_path / backend)))
        return up, gw

    yield start
    for up in upstreams:
        up.stop()


@needs_clients
@pytest.mark.parametrize("backend", RECORDED)
def test_real_client_through_gateway(backend: str, idp: Idp,
                                     backend_gateway: Callable[[str], tuple[RecordedUpstream, Gateway]]) -> None:
    up, gw = backend_gateway(backend)
    agent = idp.token("agent-1")

    # Reads pass, masked for a non-clinical caller.
    results = drive(backend, gw.url, agent, *READS[backend])
    for op, r in results.items():
        assert r["ok"], f"{backend} {op}: {r}"
        shown = json.dumps(r["result"], ensure_ascii=False)
        leaked = [v for v in PHI if v in shown]
        assert leaked == [], f"{backend} {op} returned {leaked}"
    search = json.dumps(results["search"]["result"])
    assert "tok_mrn_" in search or "tok_" in search, "the records came back (masked), not an empty answer"

    # What reached the backend: its own credential, never the caller's token.
    header, value = UPSTREAM_AUTH[backend]
    assert up.received, "the reads reached the upstream"
    for req in up.received:
        assert req.headers.get(header) == value, f"{req.method} {req.path}: {header}"
        assert all(agent not in v for v in req.headers.values())

    # Writes pass, and reach the backend as the client sent them.
    up.clear()
    writes = drive(backend, gw.url, agent, *WRITES[backend])
    assert all(r["ok"] for r in writes.values()), writes
    assert len(up.received) == len(WRITES[backend])
    assert b"MRN-7700112" in b"".join(r.body for r in up.received)  # request bodies are not masked

    # Refused on purpose: nothing of it reaches the backend.
    up.clear()
    refused = drive(backend, gw.url, agent, *[op for op, _ in REFUSED[backend]])
    for op, why in REFUSED[backend]:
        assert not refused[op]["ok"] and refused[op]["status"] == 403, f"{backend} {op} ({why}): {refused[op]}"
    assert up.received == [], f"refused requests reached {backend}: {[r.path for r in up.received]}"

    # An unknown route, even for a clinician: denied, never forwarded.
    method, path, body, header = UNKNOWN[backend]
    token = idp.token("clin-1")
    status, _, answer = http_call(method, gw.url + path, body,
                                  {header: f"Bearer {token}" if header == "Authorization" else token})
    assert status == 403, answer
    assert json.loads(answer)["error"]
    assert up.received == []


def test_caller_token_in_native_header_is_replaced(idp: Idp,
                                                   backend_gateway: Callable[[str], tuple[RecordedUpstream, Gateway]]
                                                   ) -> None:
    """Pinecone's `Api-Key` carries the caller's OIDC token in; the backend gets its own key."""
    up, gw = backend_gateway("pinecone")
    token = idp.token("clin-1")
    status, _, _ = http_call("GET", gw.url + "/vectors/fetch?ids=note-1&namespace=clinic-a", None,
                             {"Api-Key": token, "X-Pinecone-Api-Version": "2025-04"})
    assert status == 200
    (req,) = up.received
    assert req.headers["api-key"] == BACKEND_CREDENTIAL
    assert req.headers["x-pinecone-api-version"] == "2025-04"
    # A made-up key is not a token: refused before anything is forwarded.
    up.clear()
    status, _, _ = http_call("GET", gw.url + "/vectors/fetch?ids=note-1", None, {"Api-Key": "pcsk_not_a_jwt"})
    assert status == 401
    assert up.received == []
