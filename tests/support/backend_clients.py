"""Drive each backend's real client (run with .phigate/clients-venv/bin/python, not the gateway venv).

The official clients' pins clash with mitmproxy's, so they live in their own venv and tests run
this file as a subprocess. Each operation is one call of the real client, exactly as an
application would make it; the result (or the HTTP status the client raised) is printed as JSON so
the test can check what came back:

    clients-venv/bin/python tests/support/backend_clients.py qdrant --url URL --token T search get
    clients-venv/bin/python tests/support/backend_clients.py qdrant --capture   # record what it sends

`--capture` starts the recorded upstream itself, runs every operation against it and writes what
the client sent to tests/fixtures/backends/<backend>/captures.json: the profiles are tested on
those bytes, not on requests written by hand.

Weaviate (the v4 client searches over gRPC), Milvus (pymilvus speaks gRPC) and mem0 are driven with
plain HTTP, the REST calls their documents give.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VEC = [0.12, 0.31, 0.05, 0.77]
NEW = {"mrn": "MRN-7700112", "patient_name": "Lena Fischer", "dob": "1990-01-05", "ssn": "345-67-8901",
       "diagnosis": "migraine", "clinic": "neurology",
       "text": "Lena Fischer (MRN-7700112) reports migraine with aura; phone 212-555-0199."}

Op = Callable[[], Any]


class HttpError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> Any:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise HttpError(exc.code, exc.read().decode(errors="replace")) from None
    return json.loads(text) if text.strip() else None


def status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def plain(value: Any) -> Any:
    """Any client result as JSON-able data (pydantic models, client response objects, ...)."""
    for method in ("model_dump", "to_dict"):
        fn = getattr(value, method, None)
        if callable(fn):
            try:
                return plain(fn())
            except TypeError:
                continue
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dict__"):
        return {k: plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    return repr(value)


# ---------------------------------------------------------------- Qdrant (qdrant-client, REST)

def qdrant_ops(url: str, token: str) -> dict[str, Op]:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(url=url, api_key=token, prefer_grpc=False, check_compatibility=False, timeout=30)
    # Server-side inference (Qdrant Cloud): the client sends the raw text as `{text, model}`.
    inferring = QdrantClient(url=url, api_key=token, prefer_grpc=False, check_compatibility=False, timeout=30,
                             cloud_inference=True)
    clinic = models.Filter(must=[models.FieldCondition(key="clinic", match=models.MatchValue(value="cardiology"))])
    point = models.PointStruct(id=4, vector=VEC, payload=NEW)
    return {
        "search": lambda: client.query_points("notes", query=VEC, limit=3, with_payload=True, query_filter=clinic),
        "search_text": lambda: inferring.query_points(
            "notes", query=models.Document(text="Maria Gonzalez MRN-4839201 glucose", model="qdrant/bm25"), limit=3),
        "get": lambda: client.retrieve("notes", ids=[1, 2], with_payload=True),
        "export": lambda: client.scroll("notes", limit=100, with_payload=True),
        "count": lambda: client.count("notes", count_filter=clinic),
        "write": lambda: client.upsert("notes", points=[point]),
        "set_payload": lambda: client.set_payload("notes", payload={"clinic": "neurology"}, points=[4]),
        "batch_write": lambda: client.batch_update_points("notes", update_operations=[
            models.UpsertOperation(upsert=models.PointsList(points=[point])),
            models.SetPayloadOperation(set_payload=models.SetPayload(payload={"clinic": "neurology"}, points=[4])),
        ]),
        "batch_mixed": lambda: client.batch_update_points("notes", update_operations=[
            models.UpsertOperation(upsert=models.PointsList(points=[point])),
            models.DeleteOperation(delete=models.PointIdsList(points=[2])),
        ]),
        "delete_ids": lambda: client.delete("notes", points_selector=models.PointIdsList(points=[1])),
        "delete_filter": lambda: client.delete("notes", points_selector=models.FilterSelector(filter=clinic)),
        "drop": lambda: client.delete_collection("notes"),
        "create": lambda: client.create_collection(
            "notes", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)),
    }


# ---------------------------------------------------------------- Pinecone (pinecone, REST data plane)

def pinecone_ops(url: str, token: str) -> dict[str, Op]:
    from pinecone import Pinecone

    pc = Pinecone(api_key=token, host=url)
    index = pc.index(host=url)
    flt = {"clinic": {"$eq": "cardiology"}}
    return {
        "search": lambda: index.query(vector=VEC, top_k=3, include_metadata=True, include_values=True,
                                      filter=flt, namespace="clinic-a"),
        "search_text": lambda: index.search(namespace="clinic-a", top_k=3,
                                            inputs={"text": "Maria Gonzalez MRN-4839201 glucose"}),
        "get": lambda: index.fetch(ids=["note-1", "note-2"], namespace="clinic-a"),
        "export": lambda: index.list_paginated(namespace="clinic-a", limit=100),
        "stats": lambda: index.describe_index_stats(),
        "write": lambda: index.upsert(vectors=[{"id": "note-4", "values": VEC, "metadata": NEW}],
                                      namespace="clinic-a"),
        "update": lambda: index.update(id="note-4", set_metadata={"clinic": "neurology"}, namespace="clinic-a"),
        "delete_ids": lambda: index.delete(ids=["note-1"], namespace="clinic-a"),
        "delete_filter": lambda: index.delete(filter=flt, namespace="clinic-a"),
        "delete_all": lambda: index.delete(delete_all=True, namespace="clinic-a"),
        "drop": lambda: pc.delete_index("notes", timeout=-1),
    }


# ---------------------------------------------------------------- OpenSearch (opensearch-py)

def opensearch_ops(url: str, token: str) -> dict[str, Op]:
    from opensearchpy import OpenSearch

    host, port = url.removeprefix("http://").split(":")
    client = OpenSearch(hosts=[{"host": host, "port": int(port)}], use_ssl=False, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})
    knn = {"size": 3, "query": {"knn": {"embedding": {"vector": VEC, "k": 3,
                                                      "filter": {"term": {"clinic": "cardiology"}}}}}}

    def export() -> Any:
        first = client.search(index="notes", scroll="1m", body={"size": 100, "query": {"match_all": {}}})
        return [first, client.scroll(scroll_id=first["_scroll_id"], scroll="1m")]

    bulk_write = [{"index": {"_index": "notes", "_id": "4"}}, {**NEW, "embedding": VEC},
                  {"update": {"_index": "notes", "_id": "2"}}, {"doc": {"clinic": "neurology"}}]
    bulk_mixed = [{"index": {"_index": "notes", "_id": "4"}}, {**NEW, "embedding": VEC},
                  {"delete": {"_index": "notes", "_id": "2"}}]
    return {
        "search": lambda: client.search(index="notes", body=knn),
        "msearch": lambda: client.msearch(body=[{"index": "notes"}, knn, {"index": "notes"},
                                                {"query": {"match": {"text": "hypertension"}}}]),
        "get": lambda: client.get(index="notes", id="1"),
        "mget": lambda: client.mget(index="notes", body={"ids": ["1", "3"]}),
        "export": export,
        "count": lambda: client.count(index="notes"),
        "write": lambda: client.index(index="notes", id="4", body={**NEW, "embedding": VEC}),
        "bulk_write": lambda: client.bulk(body=bulk_write),
        "bulk_mixed": lambda: client.bulk(body=bulk_mixed),
        "delete_ids": lambda: client.delete(index="notes", id="1"),
        "delete_filter": lambda: client.delete_by_query(index="notes",
                                                        body={"query": {"term": {"mrn": "MRN-5520187"}}}),
        "drop": lambda: client.indices.delete(index="notes"),
        "drop_wildcard": lambda: client.indices.delete(index="notes*"),
    }


# ---------------------------------------------------------------- Weaviate (REST + GraphQL)

def weaviate_ops(url: str, token: str) -> dict[str, Op]:
    h = {"Authorization": f"Bearer {token}"}
    gql = ('{ Get { Note(nearVector: {vector: [0.12, 0.31, 0.05, 0.77]}, limit: 3, '
           'where: {path: ["clinic"], operator: Equal, valueText: "cardiology"}) '
           '{ mrn patient_name text _additional { id distance } } } }')
    where = {"path": ["mrn"], "operator": "Equal", "valueText": "MRN-4839201"}
    uid = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    return {
        "search": lambda: http("POST", f"{url}/v1/graphql", {"query": gql}, h),
        "get": lambda: http("GET", f"{url}/v1/objects/Note/{uid}", None, h),
        "export": lambda: http("GET", f"{url}/v1/objects?class=Note&limit=100", None, h),
        "write": lambda: http("POST", f"{url}/v1/objects", {"class": "Note", "properties": NEW, "vector": VEC}, h),
        "batch_write": lambda: http("POST", f"{url}/v1/batch/objects",
                                    {"objects": [{"class": "Note", "properties": NEW, "vector": VEC}]}, h),
        "delete_ids": lambda: http("DELETE", f"{url}/v1/objects/Note/{uid}", None, h),
        "delete_filter": lambda: http("DELETE", f"{url}/v1/batch/objects",
                                      {"match": {"class": "Note", "where": where}, "output": "minimal"}, h),
        "drop": lambda: http("DELETE", f"{url}/v1/schema/Note", None, h),
    }


# ---------------------------------------------------------------- Milvus (REST v1, and v2 paths)

def milvus_ops(url: str, token: str) -> dict[str, Op]:
    h = {"Authorization": f"Bearer {token}"}
    out = ["mrn", "patient_name", "text"]

    def v1(name: str, body: dict[str, Any]) -> Any:
        return http("POST", f"{url}/v1/vector/{name}", body, h)

    def v2(name: str, body: dict[str, Any]) -> Any:
        return http("POST", f"{url}/v2/vectordb/{name}", body, h)

    return {
        "search": lambda: v1("search", {"collectionName": "notes", "vector": VEC, "outputFields": out, "limit": 3}),
        "get": lambda: v1("get", {"collectionName": "notes", "id": ["470645205279178800"], "outputFields": out}),
        "export": lambda: v1("query", {"collectionName": "notes", "filter": "id > 0", "outputFields": out,
                                       "limit": 100, "offset": 0}),
        "write": lambda: v1("insert", {"collectionName": "notes", "data": [{**NEW, "vector": VEC}]}),
        "delete_ids": lambda: v1("delete", {"collectionName": "notes", "id": ["470645205279178800"]}),
        "drop": lambda: v1("collections/drop", {"collectionName": "notes"}),
        "v2_search": lambda: v2("entities/search", {"collectionName": "notes", "data": [VEC], "limit": 3,
                                                    "outputFields": out}),
        "v2_query": lambda: v2("entities/query", {"collectionName": "notes", "filter": "clinic == \"cardiology\"",
                                                  "outputFields": out, "limit": 100}),
        "v2_delete_ids": lambda: v2("entities/delete", {"collectionName": "notes",
                                                        "filter": "id in [470645205279178800]"}),
        "v2_delete_filter": lambda: v2("entities/delete", {"collectionName": "notes",
                                                           "filter": "mrn == \"MRN-5520187\""}),
        "v2_drop": lambda: v2("collections/drop", {"collectionName": "notes"}),
    }


# ---------------------------------------------------------------- mem0 REST server

def mem0_ops(url: str, token: str) -> dict[str, Op]:
    h = {"X-API-Key": token}
    mid = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    return {
        "search": lambda: http("POST", f"{url}/search", {"query": "What is Maria Gonzalez's glucose control?",
                                                         "user_id": "maria.gonzalez"}, h),
        "get": lambda: http("GET", f"{url}/memories/{mid}", None, h),
        "history": lambda: http("GET", f"{url}/memories/{mid}/history", None, h),
        "export": lambda: http("GET", f"{url}/memories?user_id=maria.gonzalez", None, h),
        "write": lambda: http("POST", f"{url}/memories", {
            "messages": [{"role": "user", "content": NEW["text"]}], "user_id": "lena.fischer",
            "metadata": {"mrn": NEW["mrn"]}}, h),
        "update": lambda: http("PUT", f"{url}/memories/{mid}", {"text": "glucose stable"}, h),
        "delete_ids": lambda: http("DELETE", f"{url}/memories/{mid}", None, h),
        "delete_filter": lambda: http("DELETE", f"{url}/memories?user_id=maria.gonzalez", None, h),
        "drop": lambda: http("POST", f"{url}/reset", None, h),
        "configure": lambda: http("POST", f"{url}/configure", {"vector_store": {"provider": "pgvector", "config": {
            "password": "not-a-real-password"}}}, h),
    }


OPS: dict[str, Callable[[str, str], dict[str, Op]]] = {
    "qdrant": qdrant_ops, "pinecone": pinecone_ops, "opensearch": opensearch_ops,
    "weaviate": weaviate_ops, "milvus": milvus_ops, "mem0": mem0_ops,
}


def run(backend: str, url: str, token: str, names: list[str]) -> list[dict[str, Any]]:
    ops = OPS[backend](url, token)
    results: list[dict[str, Any]] = []
    for name in names or list(ops):
        try:
            value = ops[name]()
            results.append({"op": name, "ok": True, "status": 200, "result": plain(value)})
        except Exception as exc:
            body = getattr(exc, "body", None)
            results.append({"op": name, "ok": False, "status": status_of(exc), "error": type(exc).__name__,
                            "body": body if isinstance(body, str) else repr(exc)[:2000]})
    return results


def capture(backend: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.support.recorded_upstream import FIXTURES, RecordedUpstream

    token = "caller-token-for-capture"
    with RecordedUpstream(backend) as up:
        ops = OPS[backend](up.url, token)
        captures = []
        for name in ops:
            up.clear()
            outcome = run(backend, up.url, token, [name])[0]
            for r in up.requests():
                body = r.body.decode() if r.body else ""
                captures.append({
                    "op": name, "client_ok": outcome["ok"], "method": r.method, "path": r.path,
                    "headers": {k: v for k, v in r.headers.items()
                                if k in ("content-type", "api-key", "x-pinecone-api-version", "authorization",
                                         "x-api-key", "user-agent")},
                    "body": body if body.isprintable() or "\n" in body else base64.b64encode(r.body).decode(),
                    "matched": r.route_id,
                })
    out = FIXTURES / backend / "captures.json"
    out.write_text(json.dumps(captures, indent=1, ensure_ascii=False) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Drive a backend's real client.")
    parser.add_argument("backend", choices=sorted(OPS))
    parser.add_argument("ops", nargs="*", help="operations to run (default: all)")
    parser.add_argument("--url", help="gateway or upstream URL")
    parser.add_argument("--token", default="", help="the caller's token, sent in the backend's native header")
    parser.add_argument("--capture", action="store_true", help="record what the client sends (see above)")
    args = parser.parse_args()
    if args.capture:
        print(capture(args.backend))
        return
    print(json.dumps(run(args.backend, args.url, args.token, args.ops)))


if __name__ == "__main__":
    main()
