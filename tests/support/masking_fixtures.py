"""A Chroma backend profile for masking tests, built the way rules/profiles/chroma.yaml describes it.

Masking unit tests must not depend on the profile compiler to exercise the masker;
the record paths here are the ones each backend's API documents and the captured traffic show.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from addons.config.profile_model import BackendAuth, Profile, RecordPaths, Route
from addons.core.context import OpKind

# Real captures of the chromadb client against a Chroma 1.5.9 server, with its OpenAPI document.
CHROMA_CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chroma-1.5.9"
FIXTURES = CHROMA_CAPTURES

T = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}"
TEST_KEY = base64.b64encode(b"k" * 32).decode()
OLD_KEY = base64.b64encode(b"o" * 32).decode()


def chroma_profile() -> Profile:
    include = ["documents", "embeddings", "metadatas", "distances", "uris", "data"]
    nested = RecordPaths(ids=("$.ids[*][*]",), documents=("$.documents[*][*]", "$.uris[*][*]"),
                         metadata=("$.metadatas[*][*]",), vectors=("$.embeddings[*][*]",),
                         other={"distances": "numbers", "data": "null", "include": include})
    flat = RecordPaths(ids=("$.ids[*]",), documents=("$.documents[*]", "$.uris[*]"), metadata=("$.metadatas[*]",),
                       vectors=("$.embeddings[*]",), other={"data": "null", "include": include})
    req = RecordPaths(ids=("$.ids",), filters=("$.where", "$.where_document"))
    routes = (
        Route("chroma.query", OpKind.SEARCH, "POST", T + "/query", "collection_id", True,
              request=req, response=nested),
        Route("chroma.get", OpKind.GET, "POST", T + "/get", "collection_id", True, request=req, response=flat),
        Route("chroma.export", OpKind.EXPORT, "POST", T + "/get", "collection_id", True, request=req,
              response=flat),
        Route("chroma.count", OpKind.GET, "GET", T + "/count", "collection_id", True),
        Route("chroma.add", OpKind.WRITE, "POST", T + "/add", "collection_id", True,
              request=RecordPaths(ids=("$.ids",), documents=("$.documents[*]",), metadata=("$.metadatas[*]",))),
    )
    return Profile("chroma", "chroma", BackendAuth(("authorization", "x-chroma-token"), None), routes,
                   {r.id: r for r in routes}, error_fields={"error": re.compile("[A-Z][A-Za-z]{0,63}")})


def fixture(seq: int) -> dict[str, Any]:
    """One captured exchange from tests/fixtures/chroma-1.5.9 by sequence number."""
    (path,) = FIXTURES.glob(f"{seq:03d}_*.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]
