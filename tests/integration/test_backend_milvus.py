"""A real Milvus 2.3.5 standalone server behind the gateway (REST v1), with masking by role.

Milvus runs with authorization on: it answers only `Authorization: Bearer root:Milvus`. Callers send
their OIDC access token; the gateway verifies it, classifies the REST call with rules/profiles/milvus.yaml,
applies policy, injects the backend credential and masks the output fields per role.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.milvus_server import MILVUS_BIN, ROOT_CREDENTIAL, Milvus, namespaces_work
from tests.support.servers import ROOT, Gateway, Idp, http_call

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not MILVUS_BIN.exists(), reason="Milvus not installed: run ./run.sh setup (ensure_milvus)"),
]

POLICY = """\
description: Milvus integration test policy.
roles:
  claim: groups
  map: {clinicians: clinician, agents: agent, privacy-office: approver, db-admins: db-admin, emergency: emergency}
rules:
  - {id: health-and-admin, roles: ["*"], operations: [health, admin], action: allow}
  - {id: no-drop, operations: [drop], action: deny, reason: dropping collections is disabled}
  - {id: agents-read, roles: [agent], operations: [search, get, export], action: allow}
  - {id: clinicians-all, roles: [clinician], operations: [search, get, export, write, delete, schema-write],
     action: allow}
"""

PATIENTS = [
    {"mrn": "MRN-4839201", "patient_name": "Maria Gonzalez", "ssn": "512-44-9081", "dob": "1958-03-14",
     "clinic": "endocrinology", "text": "Maria Gonzalez (MRN-4839201) reports improved glucose control."},
    {"mrn": "MRN-5520187", "patient_name": "James Oneil", "ssn": "078-05-1120", "dob": "1971-11-02",
     "clinic": "cardiology", "text": "James Oneil, MRN-5520187, follow-up for hypertension."},
]
VECTORS = [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]
OUT = ["mrn", "patient_name", "ssn", "dob", "clinic", "text"]


@pytest.fixture(scope="module")
def milvus() -> Iterator[Milvus]:
    with Milvus() as server:
        # Milvus 2.3 listens on every interface: it must be in its own network namespace wherever one can be made.
        assert server.isolated or not namespaces_work()
        server.call("collections/create", {"collectionName": "notes", "dimension": 4, "metricType": "L2"})
        yield server


@pytest.fixture
def gateway(milvus: Milvus, gateway_factory: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules" / "profiles", rules / "profiles")
    shutil.copy(ROOT / "rules" / "masking.yaml", rules / "masking.yaml")
    (rules / "policy.yaml").write_text(POLICY)
    return gateway_factory(milvus.url, phigate_profile="milvus", phigate_rules=str(rules),
                           env={"PHIGATE_TEST_BACKEND_CREDENTIAL": ROOT_CREDENTIAL})


def call(gw: Gateway, token: str | None, name: str, body: dict[str, Any] | None = None,
         method: str = "POST") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, raw = http_call(method, f"{gw.url}/v1/vector/{name}", body, headers)
    return status, json.loads(raw) if raw else None


def until(fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Milvus makes inserts and deletes visible to search a moment later (bounded consistency)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_milvus_session_through_gateway(gateway: Gateway, milvus: Milvus, idp: Idp) -> None:
    clin, agent = idp.token("clin-1"), idp.token("agent-1")

    # insert (clinician), through the gateway: the server only accepts the injected root credential.
    status, answer = call(gateway, clin, "insert", {"collectionName": "notes", "data": [
        {**p, "vector": v} for p, v in zip(PATIENTS, VECTORS, strict=True)]})
    assert status == 200 and answer["code"] == 200, answer
    ids = answer["data"]["insertIds"]
    assert len(ids) == 2

    search = {"collectionName": "notes", "vector": VECTORS[0], "outputFields": OUT, "limit": 2}

    def searched(token: str) -> list[dict[str, Any]]:
        status, answer = call(gateway, token, "search", search)
        assert status == 200, answer
        return list(answer["data"]) if len(answer["data"]) == 2 else []

    # search as a clinician: names and MRNs in the clear, SSNs redacted for everyone.
    rows = until(lambda: searched(clin))
    assert {r["patient_name"] for r in rows} == {"Maria Gonzalez", "James Oneil"}
    assert {r["mrn"] for r in rows} == {"MRN-4839201", "MRN-5520187"}
    assert all(r["ssn"] != p["ssn"] for r in rows for p in PATIENTS)

    # search as an agent: identifiers tokenized, dates generalized, notes scanned.
    rows = searched(agent)
    text = json.dumps(rows)
    for p in PATIENTS:
        for field in ("mrn", "patient_name", "ssn", "dob"):
            assert p[field] not in text, f"{field} reached an agent"
    assert all(r["mrn"].startswith("tok_mrn_") for r in rows)
    assert {r["clinic"] for r in rows} == {"endocrinology", "cardiology"}  # not masked: not PHI

    # query (get) and get by id, as an agent: the same masking on another route.
    status, answer = call(gateway, agent, "query", {"collectionName": "notes", "filter": 'clinic == "cardiology"',
                                                    "outputFields": OUT, "limit": 10})
    assert status == 200 and [r["clinic"] for r in answer["data"]] == ["cardiology"]
    assert "MRN-5520187" not in json.dumps(answer)
    status, answer = call(gateway, agent, "get", {"collectionName": "notes", "id": [ids[0]], "outputFields": OUT})
    assert status == 200 and len(answer["data"]) == 1 and "Maria Gonzalez" not in json.dumps(answer)

    # delete by id: an agent may not; a clinician may.
    status, answer = call(gateway, agent, "delete", {"collectionName": "notes", "id": [ids[1]]})
    assert status == 403 and answer["error"]
    status, answer = call(gateway, clin, "delete", {"collectionName": "notes", "id": [ids[1]]})
    assert status == 200 and answer["code"] == 200, answer
    def left() -> list[str]:
        rows = milvus.call("query", {"collectionName": "notes", "filter": "id > 0", "outputFields": ["mrn"]})["data"]
        mrns = [r["mrn"] for r in rows]
        return mrns if mrns == ["MRN-4839201"] else []

    assert until(left) == ["MRN-4839201"]

    # drop: denied, even for a clinician, and the collection is still there.
    status, answer = call(gateway, clin, "collections/drop", {"collectionName": "notes"})
    assert status == 403 and answer["error"], answer
    assert "notes" in milvus.call("collections", method="GET")["data"]

    # no token: refused before Milvus; an unknown route: denied.
    status, _ = call(gateway, None, "search", search)
    assert status == 401
    status, _ = call(gateway, clin, "flush", {"collectionName": "notes"})
    assert status == 403
