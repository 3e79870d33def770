"""The real chromadb client against a real Chroma through the gateway: per-role masking, tokens as handles."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.masking_fixtures import PHI_SEED as SEED
from tests.support.masking_fixtures import TEST_KEY
from tests.support.servers import Chroma, Gateway, Idp, run_chroma_client

pytestmark = pytest.mark.integration

KEYS = {"PHIGATE_TOKEN_KEYS": f"k1={TEST_KEY}"}

QUERY = """
import chromadb, json
c = chromadb.HttpClient(host="{host}", port={port}, headers={{"Authorization": "Bearer {token}"}})
col = c.get_collection("{name}")
# A filter keeps the search out of the whole-collection hold (rules/policy.yaml).
r = col.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=2, where={{"ward": {{"$in": ["cardio", "endo"]}}}},
              include=["metadatas", "documents", "distances"])
g = col.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=2, where={{"mrn": {handle!r}}},
              include=["metadatas"]) if {handle!r} else None
print(json.dumps({{"metadatas": r["metadatas"], "documents": r["documents"], "distances": r["distances"],
                  "get": g and {{"ids": g["ids"], "metadatas": g["metadatas"]}}}}))
"""


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
    return host, int(port)


def _query(gw: Gateway, idp: Idp, client: str, name: str, handle: str = "") -> Any:
    host, port = _hostport(gw.url)
    return run_chroma_client(QUERY.format(host=host, port=port, token=idp.token(client), name=name, handle=handle))


def test_same_query_two_roles_and_a_token_as_handle(chroma: Chroma, idp: Idp,
                                                     gateway_factory: Callable[..., Gateway]) -> None:
    host, port = _hostport(chroma.url)
    name = run_chroma_client(SEED.format(host=host, port=port))["name"]
    gw = gateway_factory(chroma.url, env=KEYS)
    clinician = _query(gw, idp, "clin-1", name)
    agent = _query(gw, idp, "agent-1", name)
    clear = {m["mrn"] for m in clinician["metadatas"][0]}
    assert clear == {"1234567", "2345678"}
    masked = [m["mrn"] for m in agent["metadatas"][0]]
    assert all(v.startswith("tok_mrn_k1_") for v in masked)
    text = json.dumps(agent)
    for secret in ("1234567", "2345678", "John Smith", "Jane Doe", "1980-02-14"):
        assert secret not in text
    assert agent["distances"] == clinician["distances"]
    # The agent never saw the MRN, yet its token finds the record.
    handle = next(m["mrn"] for m in agent["metadatas"][0] if m["ward"] == "endo")
    found = _query(gw, idp, "agent-1", name, handle=handle)["get"]
    assert found["ids"] == [["p2"]] and found["metadatas"][0][0]["mrn"] == handle
