"""Export decided by the answer: always-true filters against a real Chroma (rules/policy.yaml's
`max_records`). A filter that matches everything (`{"$and": []}`, `{"ward": {"$ne": "zz"}}`,
`where_document: {"$not_contains": ...}`) reads the whole collection; the gateway counts the answer,
withholds it above the cap and judges the request as the export it is: held for a privacy officer
(clinicians), then re-fetched in full once approved, or refused (agents, who may not export)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from addons.ledger.read import open_ledger
from tests.integration.test_approvals_chroma import Env, pending_for
from tests.support.servers import Chroma, Gateway, Idp, http_call

pytestmark = pytest.mark.integration

RECORDS = 120  # above the shipped cap of 100
BASE = "/api/v2/tenants/default_tenant/databases/default_database/collections"
ALWAYS_TRUE: list[dict[str, Any]] = [
    {"where": {"$and": []}},
    {"where": {"ward": {"$ne": "zz"}}},
    {"where_document": {"$not_contains": "zzqq"}},
]


def big_collection(env: Env) -> tuple[str, str]:
    name = f"patients_cap_{uuid.uuid4().hex[:8]}"
    base = f"{env.chroma.url}{BASE}"
    status, _, body = http_call("POST", base, {"name": name})
    assert status == 200, body
    cid = json.loads(body)["id"]
    records = {
        "ids": [f"n{i}" for i in range(RECORDS)],
        "embeddings": [[(i % 7) / 7, (i % 5) / 5, (i % 3) / 3, 0.5] for i in range(RECORDS)],
        "metadatas": [{"ward": "cardio" if i % 2 else "endo"} for i in range(RECORDS)],
        "documents": [f"note {i}: follow-up visit" for i in range(RECORDS)],
    }
    status, _, body = http_call("POST", f"{base}/{cid}/add", records)
    assert status in (200, 201), body
    return name, cid


class Call(threading.Thread):
    """One request through the gateway, in the background (it may be held)."""

    def __init__(self, url: str, body: dict[str, Any], token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.token = url, body, token
        self.answer: tuple[int, dict[str, str], bytes] | None = None
        self.start()

    def run(self) -> None:
        self.answer = http_call("POST", self.url, self.body, {"Authorization": f"Bearer {self.token}"}, timeout=90)

    def result(self) -> tuple[int, Any]:
        self.join(90)
        assert self.answer is not None
        return self.answer[0], json.loads(self.answer[2])


@pytest.fixture
def env(gateway_factory: Callable[..., Gateway], chroma: Chroma, idp: Idp, tmp_path: Path) -> Env:
    return Env(gateway_factory, chroma, idp, tmp_path)


def test_always_true_filters_never_return_a_whole_collection_unheld(env: Env) -> None:
    name, cid = big_collection(env)
    clin, agent = env.idp.token("clin-1"), env.idp.token("agent-1")
    env.open(name, clin)
    env.open(name, agent)
    admin = env.approver()
    get_url, query_url = f"{env.gw.url}{BASE}/{cid}/get", f"{env.gw.url}{BASE}/{cid}/query"
    vector = {"query_embeddings": [[0.1, 0.2, 0.3, 0.4]], "n_results": 500}

    # Agents may not export: any always-true filter on get or query is refused, never held.
    for flt in ALWAYS_TRUE:
        for url, body in ((get_url, flt), (query_url, {**vector, **flt})):
            status, answer = Call(url, body, agent).result()
            assert status == 403 and answer["error"] in ("too_many_records", "forbidden"), (url, flt, answer)
            assert "n0" not in json.dumps(answer)
    # (agents have no get rule at all: the get is refused by policy before the backend; the query
    # reaches it, comes back over the cap, and is refused as an export)
    status, answer = Call(query_url, {**vector, **ALWAYS_TRUE[0]}, agent).result()
    assert (status, answer["error"], answer["max_records"]) == (403, "too_many_records", 100), answer
    assert admin.pending() == []

    # Under the cap the same filter passes: the cap judges the answer, not the syntax.
    status, answer = Call(query_url, {**vector, "n_results": 5, **ALWAYS_TRUE[1]}, agent).result()
    assert status == 200 and len(answer["ids"][0]) == 5, answer

    # Clinicians: held as an export; denied, nothing is released.
    for flt in ALWAYS_TRUE:
        call = Call(query_url, {**vector, **flt}, clin)
        hold = pending_for(admin, name)
        assert (hold["operation"], hold["rule_id"]) == ("export", "export-needs-approval"), hold
        admin.deny(hold["hold_id"], "no ticket for a bulk read")
        status, answer = call.result()
        assert (status, answer["error"]) == (403, "hold_denied"), answer

    # Approved: the same request is sent again, unlimited, and the whole answer released.
    call = Call(get_url, {**ALWAYS_TRUE[0], "include": ["metadatas"]}, clin)
    hold = pending_for(admin, name)
    admin.approve(hold["hold_id"], "ticket PRIV-7: registry extract")
    status, answer = call.result()
    assert status == 200, answer
    assert sorted(answer["ids"]) == sorted(f"n{i}" for i in range(RECORDS))
    # The re-fetch is a second send to the backend: it has its own write-ahead intent, and the
    # request's one outcome settles both (no "outcome unknown").
    con = open_ledger(env.tmp_path / "audit")
    try:
        (request_id,) = con.execute("SELECT request_id FROM events WHERE hold_id = ?",
                                    [hold["hold_id"]]).fetchone() or (None,)
        sent = con.execute("SELECT hold_id FROM intents WHERE request_id = ? ORDER BY seq", [request_id]).fetchall()
    finally:
        con.close()
    # First sent with the cap (no hold yet), then re-fetched once approved.
    assert sent == [(None,), (hold["hold_id"],)], sent
