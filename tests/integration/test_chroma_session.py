"""The unmodified chromadb client through the gateway, against a real Chroma and a real OpenID provider."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from addons.cli.certs import make_certs
from tests.support.servers import (
    ROOT,
    VENV_BIN,
    Chroma,
    Gateway,
    Idp,
    Process,
    chroma_steps,
    free_port,
    http_call,
    wait_http,
)

pytestmark = pytest.mark.integration

# Records without PHI, so masking (which is role-dependent) leaves them as they are and a session
# through the gateway must give exactly what the same session gives direct.
RECORDS = {
    "ids": ["n1", "n2", "n3"],
    "embeddings": [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.2, 0.2, 0.2, 0.2]],
    "metadatas": [{"ward": "cardio", "severity": 2}, {"ward": "endo", "severity": 1},
                  {"ward": "cardio", "severity": 3}],
    "documents": ["chest pain follow-up", "insulin dose review", "stress test scheduled"],
}


def session(collection: str) -> list[dict[str, Any]]:
    c = collection
    return [
        {"op": "heartbeat"},
        {"op": "create", "collection": c},
        {"op": "add", "collection": c, **RECORDS},
        {"op": "count", "collection": c},
        {"op": "query", "collection": c, "query_embeddings": [[0.1, 0.2, 0.3, 0.4]], "n_results": 2,
         "where": {"ward": "cardio"}, "include": ["documents", "metadatas", "distances", "embeddings"]},
        {"op": "get", "collection": c, "ids": ["n2"], "include": ["documents", "metadatas"]},
        {"op": "update", "collection": c, "ids": ["n2"], "metadatas": [{"ward": "endo", "severity": 4}]},
        {"op": "get", "collection": c, "ids": ["n2"], "include": ["metadatas"]},
        {"op": "delete", "collection": c, "ids": ["n3"]},
        {"op": "count", "collection": c},
        {"op": "drop", "collection": c},
    ]


def comparable(results: list[dict[str, Any]], collection: str) -> list[Any]:
    # Distances are floats computed by the same server on the same data: equal, but compare rounded.
    def norm(v: Any) -> Any:
        if v == collection:
            return "<collection>"
        if isinstance(v, float):
            return round(v, 5)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return [(r["op"], r["ok"], norm(r.get("result"))) for r in results]


def test_full_session_same_as_direct_and_drop_denied(
    chroma: Chroma, idp: Idp, gateway_factory: Callable[..., Gateway]
) -> None:
    gw = gateway_factory(chroma.url)
    direct = chroma_steps(chroma.url, None, session("notes_direct"))
    via = chroma_steps(gw.url, idp.token("admin-1"), session("notes_gateway"))
    assert all(r["ok"] for r in direct), direct
    # Every step but the drop behaves exactly as direct ...
    assert comparable(via[:-1], "notes_gateway") == comparable(direct[:-1], "notes_direct")
    # ... and the drop is refused by policy, with the rule's reason reaching the client.
    assert via[-1]["ok"] is False
    assert "no-drop" in via[-1]["error"]["message"] or "disabled" in via[-1]["error"]["message"]
    # The collection is still there: the denied drop never reached Chroma.
    status, _, body = http_call("GET", f"{chroma.url}/api/v2/tenants/default_tenant/databases/"
                                "default_database/collections/notes_gateway")
    assert status == 200 and json.loads(body)["name"] == "notes_gateway"


def test_drop_denial_is_a_403_with_rule_id(chroma: Chroma, idp: Idp,
                                           gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(chroma.url)
    chroma_steps(chroma.url, None, [{"op": "create", "collection": "keep_me"}])
    status, _, body = http_call(
        "DELETE", f"{gw.url}/api/v2/tenants/default_tenant/databases/default_database/collections/keep_me",
        headers={"Authorization": f"Bearer {idp.token('admin-1')}"})
    doc = json.loads(body)
    assert status == 403 and doc["rule_id"] == "no-drop" and doc["error"] == "forbidden"
    assert "disabled" in doc["detail"]


def test_one_role_searches_another_is_denied_a_delete(chroma: Chroma, idp: Idp,
                                                       gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(chroma.url)
    chroma_steps(chroma.url, None, [{"op": "create", "collection": "patients_notes_a"},
                                     {"op": "add", "collection": "patients_notes_a", **RECORDS}])
    clin = chroma_steps(gw.url, idp.token("clin-1"), [
        {"op": "query", "collection": "patients_notes_a", "query_embeddings": [[0.1, 0.2, 0.3, 0.4]],
         "n_results": 1, "where": {"ward": "cardio"}}])
    assert clin[0]["ok"], clin
    assert clin[0]["result"]["ids"] == [["n1"]]
    agent = chroma_steps(gw.url, idp.token("agent-1"), [{"op": "delete", "collection": "patients_notes_a",
                                                          "ids": ["n1"]}])
    assert agent[0]["ok"] is False
    assert chroma_steps(chroma.url, None, [{"op": "count", "collection": "patients_notes_a"}])[0]["result"] == 3


def test_native_key_header_works_unchanged(chroma: Chroma, idp: Idp,
                                           gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(chroma.url)
    res = chroma_steps(gw.url, idp.token("admin-1"), [{"op": "heartbeat"}, {"op": "list"}],
                       header="x-chroma-token")
    assert [r["ok"] for r in res] == [True, True], res
    res = chroma_steps(gw.url, None, [{"op": "list"}])
    assert res[0]["ok"] is False


def test_plain_http_is_refused_unless_asked_for(chroma: Chroma, idp: Idp,
                                                gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(chroma.url, phigate_allow_plain_http="false")
    status, _, body = http_call("GET", f"{gw.url}/api/v2/heartbeat",
                                headers={"Authorization": f"Bearer {idp.token('admin-1')}"})
    assert status == 400 and json.loads(body)["error"] == "tls_required"


def test_run_sh_gateway_serves_tls_with_the_dev_certificate(chroma: Chroma, idp: Idp, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", ["127.0.0.1", "localhost"])
    port = free_port()
    proc = Process("launch-tls", [
        str(ROOT / "run.sh"), "gateway", "--upstream", chroma.url, "--issuer", idp.issuer,
        "--port", str(port), "--cert", str(certs["server.pem"]), "--backend-credential-env", "T_CRED",
        "--set", f"phigate_audit_dir={tmp_path / 'audit'}"], env={"T_CRED": "backend-secret"}, cwd=ROOT)
    proc.start()
    try:
        res: list[dict[str, Any]] = []
        # run.sh may first refresh the venv (pyproject changed): allow for that.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.proc is not None and proc.proc.poll() is None:
            res = chroma_steps(f"https://127.0.0.1:{port}", idp.token("admin-1"), [{"op": "heartbeat"}],
                               env={"SSL_CERT_FILE": str(certs["ca.crt"])})
            if res[0]["ok"]:
                break
            time.sleep(0.5)
        assert res and res[0]["ok"], f"{res}\n{proc.log()[-3000:]}"
    finally:
        proc.stop()


def test_missing_required_options_stop_stock_mitmdump(tmp_path: Path) -> None:
    port = free_port()
    proc = Process("no-options", [str(VENV_BIN / "mitmdump"), "--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{port}",
                                  "-s", str(ROOT / "addons" / "chain.py"), "--set", f"confdir={tmp_path}"])
    proc.start()
    assert proc.proc is not None
    try:
        proc.proc.wait(timeout=30)
    finally:
        proc.stop()
    log = proc.log()
    assert "phigate_rules is not set" in log and "phigate_profile is not set" in log
    with pytest.raises(Exception):  # noqa: B017 - nothing listens: the gateway did not start serving
        wait_http(f"http://127.0.0.1:{port}/-/healthz", timeout=1)
