"""Every documented route of each backend classifies to the expected kind, on every backend profile.

Two tables: hand-written requests (one per route, with the tricky ones on purpose), and what the real
clients sent (tests/fixtures/backends/<backend>/captures.json, made by tests/support/backend_clients.py
--capture). An unknown route on any backend matches nothing and the policy denies it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from addons.config.profile_model import Profile
from addons.config.profiles import classify_request, load_profile
from addons.config.rulefiles import ConfigError
from addons.core.context import Action, Caller, Operation, OpKind
from addons.request.canonical_form import Ambiguous

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "backends"
BACKENDS = ("qdrant", "pinecone", "weaviate", "milvus", "opensearch", "mem0")

SEARCH, GET, EXPORT, WRITE = OpKind.SEARCH, OpKind.GET, OpKind.EXPORT, OpKind.WRITE
DELETE, DROP, SCHEMA, ADMIN, HEALTH = OpKind.DELETE, OpKind.DROP, OpKind.SCHEMA, OpKind.ADMIN, OpKind.HEALTH


def profile(name: str) -> Profile:
    return load_profile(ROOT / "rules", name).current


def run(backend: str, method: str, target: str, body: Any = None) -> Any:
    path, _, query = target.partition("?")
    if body is None:
        raw = None
    elif isinstance(body, bytes):
        raw = body
    elif isinstance(body, list) and (backend == "opensearch" or (path.endswith("/upsert") and "records" in path)):
        raw = b"".join(json.dumps(line).encode() + b"\n" for line in body)
    else:
        raw = json.dumps(body).encode()
    return classify_request(profile(backend), method, path, query, raw)


def gql(query: str, **variables: Any) -> dict[str, Any]:
    return {"query": query, "variables": variables} if variables else {"query": query}


C = "/collections/notes"
VEC = [0.1, 0.2]
FLT = {"must": [{"key": "mrn", "match": {"value": "MRN-4839201"}}]}

# (backend, method, target, body, route id, kind, collection, facts that must hold)
CASES: list[tuple[str, str, str, Any, str, OpKind, str | None, dict[str, Any]]] = [
    # --- Qdrant ---------------------------------------------------------------------------------------
    ("qdrant", "GET", "/", None, "qdrant.root", HEALTH, None, {}),
    ("qdrant", "GET", "/healthz", None, "qdrant.healthz", HEALTH, None, {}),
    ("qdrant", "GET", "/collections", None, "qdrant.list_collections", ADMIN, None, {}),
    ("qdrant", "GET", C, None, "qdrant.collection_info", ADMIN, "notes", {}),
    ("qdrant", "PUT", C, {"vectors": {"size": 4, "distance": "Cosine"}}, "qdrant.create_collection", SCHEMA,
     "notes", {}),
    ("qdrant", "POST", C + "/points/query", {"query": VEC, "filter": FLT, "limit": 5}, "qdrant.query", SEARCH,
     "notes", {"has_filter": True, "limit": 5}),
    ("qdrant", "POST", C + "/points/query", {"query": {"nearest": VEC}}, "qdrant.query", SEARCH, "notes",
     {"has_filter": False}),
    ("qdrant", "POST", C + "/points/query", {"query": 42}, "qdrant.query", SEARCH, "notes", {}),
    # {text, model}: raw text to be embedded server-side, scanned like a document.
    ("qdrant", "POST", C + "/points/query", {"query": {"text": "Maria Gonzalez MRN-4839201", "model": "bm25"}},
     "qdrant.query.text", SEARCH, "notes", {"raw_text": True}),
    ("qdrant", "POST", C + "/points/query",
     {"prefetch": [{"query": {"text": "diabetes", "model": "m"}}], "query": {"fusion": "rrf"}},
     "qdrant.query.text", SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/query",
     {"prefetch": {"prefetch": [{"query": {"nearest": {"text": "MRN-4839201", "model": "m"}}}]}, "query": VEC},
     "qdrant.query.text", SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/query",
     {"prefetch": {"query": {"text": "Maria Gonzalez", "model": "m"}}, "query": {"fusion": "rrf"}},
     "qdrant.query.text", SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/query",
     {"prefetch": [{"prefetch": [{"query": {"nearest": {"text": "MRN-4839201", "model": "m"}}}]}]},
     "qdrant.query.text", SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/query/batch", {"searches": [{"query": VEC}, {"query": VEC, "filter": FLT}]},
     "qdrant.query_batch", SEARCH, "notes", {"queries": 2, "has_filter": True}),
    ("qdrant", "POST", C + "/points/query/groups", {"query": VEC, "group_by": "mrn"}, "qdrant.query_groups",
     SEARCH, "notes", {"group_by": "mrn"}),
    ("qdrant", "POST", C + "/points/search", {"vector": VEC, "limit": 3}, "qdrant.search", SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/search/batch", {"searches": [{"vector": VEC}]}, "qdrant.search_batch", SEARCH,
     "notes", {}),
    ("qdrant", "POST", C + "/points/search/groups", {"vector": VEC, "group_by": "clinic"}, "qdrant.search_groups",
     SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/recommend", {"positive": [1]}, "qdrant.search", SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/discover", {"target": 1}, "qdrant.search", SEARCH, "notes", {}),
    ("qdrant", "POST", C + "/points/search/matrix/pairs", {"sample": 10}, "qdrant.search_matrix", SEARCH, "notes",
     {}),
    ("qdrant", "POST", C + "/points/count", {"filter": FLT}, "qdrant.count", SEARCH, "notes", {"has_filter": True}),
    ("qdrant", "POST", C + "/facet", {"key": "mrn"}, "qdrant.facet", SEARCH, "notes", {"key": "mrn"}),
    ("qdrant", "GET", C + "/points/7", None, "qdrant.get_point", GET, "notes", {}),
    ("qdrant", "POST", C + "/points", {"ids": [1, 2, 3]}, "qdrant.retrieve", GET, "notes", {"ids_count": 3}),
    ("qdrant", "POST", C + "/points/scroll", {"limit": 100}, "qdrant.scroll", EXPORT, "notes", {"limit": 100}),
    ("qdrant", "POST", C + "/snapshots", None, "qdrant.snapshot_create", EXPORT, "notes", {}),
    ("qdrant", "GET", C + "/snapshots/notes-1.snapshot", None, "qdrant.snapshot_download", EXPORT, "notes", {}),
    ("qdrant", "GET", "/snapshots", None, "qdrant.full_snapshots", EXPORT, None, {}),
    ("qdrant", "PUT", C + "/points?wait=true", {"points": [{"id": 1, "vector": VEC, "payload": {"mrn": "x"}}]},
     "qdrant.upsert", WRITE, "notes", {"points_count": 1}),
    ("qdrant", "POST", C + "/points/payload", {"payload": {"a": 1}, "points": [1]}, "qdrant.payload", WRITE,
     "notes", {}),
    ("qdrant", "PUT", C + "/points/payload", {"payload": {"a": 1}, "filter": FLT}, "qdrant.payload", WRITE, "notes",
     {"has_filter": True}),
    ("qdrant", "PUT", C + "/points/vectors", {"points": [{"id": 1, "vector": VEC}]}, "qdrant.update_vectors",
     WRITE, "notes", {}),
    ("qdrant", "PUT", C + "/snapshots/recover", {"location": "file:///s"}, "qdrant.snapshot_recover", WRITE,
     "notes", {}),
    # /points/batch mixing writes and deletes: one delete makes the whole batch a delete.
    ("qdrant", "POST", C + "/points/batch",
     {"operations": [{"upsert": {"points": [{"id": 1, "vector": VEC}]}}, {"set_payload": {"payload": {},
                                                                                           "points": [1]}}]},
     "qdrant.batch", WRITE, "notes", {"operations": 2}),
    ("qdrant", "POST", C + "/points/batch",
     {"operations": [{"upsert": {"points": [{"id": 1, "vector": VEC}]}}, {"delete": {"points": [2]}}]},
     "qdrant.batch.delete", DELETE, "notes", {"operations": 2}),
    ("qdrant", "POST", C + "/points/batch",
     {"operations": [{"upsert": {"points": []}}, {"clear_payload": {"filter": FLT}}]},
     "qdrant.batch.delete", DELETE, "notes", {"has_filter": True}),
    ("qdrant", "POST", C + "/points/batch", {"operations": [{"delete_vectors": {"points": [1], "vector": ["v"]}}]},
     "qdrant.batch.delete", DELETE, "notes", {}),
    ("qdrant", "POST", C + "/points/delete", {"points": [1, 2]}, "qdrant.delete.by_id", DELETE, "notes",
     {"ids_count": 2, "has_filter": False}),
    ("qdrant", "POST", C + "/points/delete", {"filter": FLT}, "qdrant.delete.by_filter", DELETE, "notes",
     {"has_filter": True}),
    ("qdrant", "POST", C + "/points/payload/delete", {"keys": ["mrn"], "points": [1]}, "qdrant.delete_payload",
     DELETE, "notes", {}),
    ("qdrant", "POST", C + "/points/payload/clear", {"points": [1]}, "qdrant.delete_payload", DELETE, "notes", {}),
    ("qdrant", "POST", C + "/points/vectors/delete", {"points": [1], "vector": ["v"]}, "qdrant.delete_vectors",
     DELETE, "notes", {}),
    ("qdrant", "DELETE", C, None, "qdrant.drop", DROP, "notes", {}),
    # --- Pinecone -------------------------------------------------------------------------------------
    ("pinecone", "POST", "/query", {"vector": VEC, "topK": 5, "namespace": "clinic-a"}, "pinecone.query", SEARCH,
     "clinic-a", {"top_k": 5, "has_filter": False}),
    ("pinecone", "POST", "/query", {"id": "note-1", "topK": 5, "filter": {"mrn": {"$eq": "x"}}}, "pinecone.query",
     SEARCH, None, {"by_id": True, "has_filter": True}),
    ("pinecone", "POST", "/records/namespaces/clinic-a/search", {"query": {"inputs": {"text": "MRN-4839201"},
                                                                          "top_k": 3}},
     "pinecone.records_search", SEARCH, "clinic-a", {"raw_text": True}),
    # Fetch carries its ids in the query string.
    ("pinecone", "GET", "/vectors/fetch?ids=note-1&ids=note-2&ids=note-3&namespace=clinic-a", None,
     "pinecone.fetch", GET, "clinic-a", {"ids_count": 3}),
    ("pinecone", "POST", "/vectors/fetch_by_metadata", {"filter": {"clinic": "a"}, "namespace": "n"},
     "pinecone.fetch_by_metadata", GET, "n", {"has_filter": True}),
    ("pinecone", "GET", "/vectors/list?namespace=clinic-a&limit=100", None, "pinecone.list", EXPORT, "clinic-a",
     {"limit": "100"}),
    ("pinecone", "POST", "/indexes/notes/backups", {"name": "b"}, "pinecone.create_backup", EXPORT, "notes", {}),
    ("pinecone", "POST", "/bulk/imports", {"uri": "s3://b/p"}, "pinecone.start_import", WRITE, None, {}),
    ("pinecone", "POST", "/vectors/upsert", {"vectors": [{"id": "a", "values": VEC}], "namespace": "n"},
     "pinecone.upsert", WRITE, "n", {"vectors_count": 1}),
    ("pinecone", "POST", "/vectors/update", {"id": "a", "setMetadata": {"x": 1}}, "pinecone.update", WRITE, None,
     {}),
    ("pinecone", "POST", "/vectors/update", {"filter": {"clinic": "a"}, "setMetadata": {"x": 1}},
     "pinecone.update.by_filter", WRITE, None, {"has_filter": True}),
    ("pinecone", "POST", "/records/namespaces/clinic-a/upsert", [{"_id": "r1", "text": "t"}, {"_id": "r2"}],
     "pinecone.records_upsert", WRITE, "clinic-a", {"records_count": 2}),
    ("pinecone", "POST", "/vectors/delete", {"ids": ["a", "b"], "namespace": "n"}, "pinecone.delete.by_id", DELETE,
     "n", {"ids_count": 2}),
    ("pinecone", "POST", "/vectors/delete", {"filter": {"clinic": "a"}}, "pinecone.delete.by_filter", DELETE, None,
     {"has_filter": True}),
    # deleteAll empties a namespace: a drop, even with ids alongside.
    ("pinecone", "POST", "/vectors/delete", {"deleteAll": True, "namespace": "n"}, "pinecone.delete.all", DROP,
     "n", {}),
    ("pinecone", "POST", "/vectors/delete", {"deleteAll": True, "ids": ["a"]}, "pinecone.delete.all", DROP, None,
     {}),
    ("pinecone", "POST", "/vectors/delete", {"deleteAll": False, "ids": ["a"]}, "pinecone.delete.by_id", DELETE,
     None, {}),
    ("pinecone", "DELETE", "/namespaces/clinic-a", None, "pinecone.delete_namespace", DROP, "clinic-a", {}),
    ("pinecone", "DELETE", "/indexes/notes", None, "pinecone.drop", DROP, "notes", {}),
    ("pinecone", "POST", "/describe_index_stats", {}, "pinecone.describe_index_stats", ADMIN, None, {}),
    # --- Weaviate -------------------------------------------------------------------------------------
    ("weaviate", "GET", "/v1/.well-known/ready", None, "weaviate.ready", HEALTH, None, {}),
    ("weaviate", "GET", "/v1/meta", None, "weaviate.meta", ADMIN, None, {}),
    ("weaviate", "POST", "/v1/schema", {"class": "Note"}, "weaviate.schema_create", SCHEMA, "Note", {}),
    ("weaviate", "POST", "/v1/graphql",
     gql('{ Get { Note(nearVector: {vector: [0.1]}, limit: 3) { mrn text _additional { id distance } } } }'),
     "weaviate.graphql.search", SEARCH, "Note", {"limit": 3, "has_filter": False, "properties": ["mrn", "text"]}),
    ("weaviate", "POST", "/v1/graphql",
     gql('{ Get { Note(hybrid: {query: "Maria Gonzalez"}, where: {path: ["clinic"], operator: Equal, '
         'valueText: "x"}) { mrn } } }'),
     "weaviate.graphql.search", SEARCH, "Note", {"has_filter": True, "raw_text": True}),
    # The filter, the class and the search operator hidden behind a variable, an alias and a fragment.
    ("weaviate", "POST", "/v1/graphql",
     gql('query Q($w: GetObjectsNoteWhereInpObj) { Get { n: Note(bm25: {query: "asthma"}, where: $w) '
         '{ ...P } } } fragment P on Note { ssn mrn }', w={"path": ["mrn"], "operator": "Equal", "valueText": "x"}),
     "weaviate.graphql.search", SEARCH, "Note", {"has_filter": True, "properties": ["mrn", "ssn"]}),
    ("weaviate", "POST", "/v1/graphql",
     gql('{ Get { Note(where: {path: ["mrn"], operator: Equal, valueText: "MRN-1"}) { mrn } } }'),
     "weaviate.graphql.get", GET, "Note", {"has_filter": True}),
    ("weaviate", "POST", "/v1/graphql", gql("{ Get { Note(limit: 10000) { mrn patient_name text } } }"),
     "weaviate.graphql.export", EXPORT, "Note", {"limit": 10000}),
    ("weaviate", "POST", "/v1/graphql", gql("{ Aggregate { Note { meta { count } } } }"),
     "weaviate.graphql.aggregate", SEARCH, "Note", {}),
    ("weaviate", "POST", "/v1/graphql", gql('{ Explore(nearText: {concepts: ["x"]}) { beacon className } }'),
     "weaviate.graphql.explore", SEARCH, None, {"raw_text": True}),
    ("weaviate", "POST", "/v1/graphql", gql("{ __schema { types { name } } }"), "weaviate.graphql.introspection",
     ADMIN, None, {}),
    ("weaviate", "GET", "/v1/objects/Note/5c56c793-69f3-4fbf-87e6-c4bf54c28c26", None, "weaviate.object_get", GET,
     "Note", {}),
    ("weaviate", "HEAD", "/v1/objects/Note/5c56c793-69f3-4fbf-87e6-c4bf54c28c26", None, "weaviate.object_get", GET,
     "Note", {}),
    ("weaviate", "GET", "/v1/objects?class=Note&after=abc&limit=100", None, "weaviate.objects_list", EXPORT, "Note",
     {"after": "abc"}),
    ("weaviate", "POST", "/v1/backups/filesystem", {"id": "b1", "include": ["Note"]}, "weaviate.backup_create",
     EXPORT, "Note", {}),
    ("weaviate", "POST", "/v1/objects", {"class": "Note", "properties": {"mrn": "x"}}, "weaviate.object_create",
     WRITE, "Note", {}),
    ("weaviate", "PUT", "/v1/objects/Note/5c56c793-69f3-4fbf-87e6-c4bf54c28c26", {"class": "Note", "properties": {}},
     "weaviate.object_update", WRITE, "Note", {}),
    ("weaviate", "PATCH", "/v1/objects/Note/5c56c793-69f3-4fbf-87e6-c4bf54c28c26", {"properties": {}},
     "weaviate.object_update", WRITE, "Note", {}),
    ("weaviate", "POST", "/v1/batch/objects", {"objects": [{"class": "Note", "properties": {}}]},
     "weaviate.batch_objects", WRITE, "Note", {"objects_count": 1}),
    ("weaviate", "DELETE", "/v1/objects/Note/5c56c793-69f3-4fbf-87e6-c4bf54c28c26", None, "weaviate.object_delete",
     DELETE, "Note", {}),
    ("weaviate", "DELETE", "/v1/batch/objects", {"match": {"class": "Note", "where": {"path": ["mrn"]}}},
     "weaviate.batch_delete", DELETE, "Note", {"has_filter": True}),
    ("weaviate", "DELETE", "/v1/schema/Note", None, "weaviate.drop", DROP, "Note", {}),
    # --- Milvus ---------------------------------------------------------------------------------------
    ("milvus", "POST", "/v1/vector/search", {"collectionName": "notes", "vector": VEC, "outputFields": ["mrn"]},
     "milvus.v1.search", SEARCH, "notes", {"output_fields": ["mrn"], "has_filter": False}),
    ("milvus", "POST", "/v1/vector/query", {"collectionName": "notes", "filter": "id > 0", "limit": 10},
     "milvus.v1.query", GET, "notes", {"has_filter": True}),
    ("milvus", "POST", "/v1/vector/query", {"collectionName": "notes", "filter": "id > 0", "offset": 100},
     "milvus.v1.query.export", EXPORT, "notes", {"offset": 100}),
    ("milvus", "POST", "/v1/vector/query", {"collectionName": "notes", "filter": " ", "limit": 16384},
     "milvus.v1.query.unfiltered", EXPORT, "notes", {"has_filter": False, "limit": 16384}),
    ("milvus", "POST", "/v1/vector/query", {"collectionName": "notes", "limit": 16384},
     "milvus.v1.query.no_filter", EXPORT, "notes", {"has_filter": False}),
    ("milvus", "POST", "/v1/vector/get", {"collectionName": "notes", "id": [1, 2]}, "milvus.v1.get", GET, "notes",
     {"ids_count": 2}),
    ("milvus", "POST", "/v1/vector/insert", {"collectionName": "notes", "data": [{"vector": VEC}]},
     "milvus.v1.insert", WRITE, "notes", {"rows": 1}),
    ("milvus", "POST", "/v1/vector/upsert", {"collectionName": "notes", "data": [{"id": 1, "vector": VEC}]},
     "milvus.v1.insert", WRITE, "notes", {}),
    ("milvus", "POST", "/v1/vector/delete", {"collectionName": "notes", "id": [1, 2]}, "milvus.v1.delete.by_id",
     DELETE, "notes", {"by_id": True}),
    ("milvus", "POST", "/v1/vector/delete", {"collectionName": "notes", "filter": "id in [1, 2]"},
     "milvus.v1.delete.by_id_expr", DELETE, "notes", {"by_id": True}),
    ("milvus", "POST", "/v1/vector/delete", {"collectionName": "notes", "filter": 'mrn == "MRN-1"'},
     "milvus.v1.delete.by_filter", DELETE, "notes", {"by_id": False, "has_filter": True}),
    ("milvus", "GET", "/v1/vector/collections", None, "milvus.v1.list_collections", ADMIN, None, {}),
    ("milvus", "GET", "/v1/vector/collections/describe?collectionName=notes", None, "milvus.v1.describe_collection",
     ADMIN, "notes", {}),
    ("milvus", "POST", "/v1/vector/collections/create", {"collectionName": "notes", "dimension": 4},
     "milvus.v1.create_collection", SCHEMA, "notes", {}),
    ("milvus", "POST", "/v1/vector/collections/drop", {"collectionName": "notes"}, "milvus.v1.drop", DROP, "notes",
     {}),
    ("milvus", "POST", "/v2/vectordb/entities/search", {"collectionName": "notes", "data": [VEC]},
     "milvus.v2.search", SEARCH, "notes", {}),
    ("milvus", "POST", "/v2/vectordb/entities/hybrid_search", {"collectionName": "notes", "search": []},
     "milvus.v2.search", SEARCH, "notes", {}),
    ("milvus", "POST", "/v2/vectordb/entities/get", {"collectionName": "notes", "id": [1]}, "milvus.v2.get", GET,
     "notes", {"ids_count": 1}),
    ("milvus", "POST", "/v2/vectordb/entities/query", {"collectionName": "notes", "filter": "clinic == 'a'"},
     "milvus.v2.query", GET, "notes", {}),
    ("milvus", "POST", "/v2/vectordb/entities/query", {"collectionName": "notes", "filter": "id > 0", "limit": 100,
                                                        "offset": 0},
     "milvus.v2.query.export", EXPORT, "notes", {"offset": 0}),
    ("milvus", "POST", "/v2/vectordb/entities/query", {"collectionName": "notes", "limit": 100},
     "milvus.v2.query.no_filter", EXPORT, "notes", {"has_filter": False}),
    ("milvus", "POST", "/v2/vectordb/entities/query", {"collectionName": "notes", "filter": "", "limit": 100},
     "milvus.v2.query.unfiltered", EXPORT, "notes", {"has_filter": False}),
    ("milvus", "POST", "/v2/vectordb/entities/insert", {"collectionName": "notes", "data": [{}, {}]},
     "milvus.v2.insert", WRITE, "notes", {"rows": 2}),
    ("milvus", "POST", "/v2/vectordb/entities/upsert", {"collectionName": "notes", "data": [{}]},
     "milvus.v2.insert", WRITE, "notes", {}),
    # The filter expression decides by-id vs by-filter.
    ("milvus", "POST", "/v2/vectordb/entities/delete", {"collectionName": "notes", "filter": "id in [1, 2, 3]"},
     "milvus.v2.delete.by_id", DELETE, "notes", {"by_id": True}),
    ("milvus", "POST", "/v2/vectordb/entities/delete", {"collectionName": "notes", "filter": 'pk == "a-1"'},
     "milvus.v2.delete.by_id", DELETE, "notes", {"by_id": True}),
    ("milvus", "POST", "/v2/vectordb/entities/delete", {"collectionName": "notes", "filter": "id in [1] or id > 0"},
     "milvus.v2.delete.by_filter", DELETE, "notes", {"by_id": False}),
    ("milvus", "POST", "/v2/vectordb/entities/delete", {"collectionName": "notes", "filter": "clinic in ['a']"},
     "milvus.v2.delete.by_filter", DELETE, "notes", {"by_id": False}),
    ("milvus", "POST", "/v2/vectordb/entities/delete", {"collectionName": "notes", "filter": "id > 0"},
     "milvus.v2.delete.by_filter", DELETE, "notes", {"by_id": False, "has_filter": True}),
    ("milvus", "POST", "/v2/vectordb/collections/create", {"collectionName": "notes"}, "milvus.v2.collections_schema",
     SCHEMA, "notes", {}),
    ("milvus", "POST", "/v2/vectordb/collections/list", {}, "milvus.v2.collections_read", ADMIN, None, {}),
    ("milvus", "POST", "/v2/vectordb/collections/drop", {"collectionName": "notes"}, "milvus.v2.drop", DROP, "notes",
     {}),
    ("milvus", "POST", "/v2/vectordb/partitions/drop", {"collectionName": "notes", "partitionName": "p"},
     "milvus.v2.partitions_drop", DROP, "notes", {}),
    ("milvus", "POST", "/v2/vectordb/databases/drop", {"dbName": "default"}, "milvus.v2.databases_drop", DROP, None,
     {}),
    # --- OpenSearch -----------------------------------------------------------------------------------
    ("opensearch", "GET", "/", None, "opensearch.root", HEALTH, None, {}),
    ("opensearch", "POST", "/notes/_search", {"size": 3, "query": {"knn": {"embedding": {"vector": VEC, "k": 3}}}},
     "opensearch.search", SEARCH, "notes", {"k": 3, "has_filter": False, "wildcard": False}),
    ("opensearch", "GET", "/notes/_search", {"query": {"neural": {"embedding": {"query_text": "x", "k": 5}}}},
     "opensearch.search", SEARCH, "notes", {}),
    ("opensearch", "GET", "/notes*/_search", {"query": {"match_all": {}}}, "opensearch.search", SEARCH, None,
     {"wildcard": True}),
    ("opensearch", "POST", "/notes/_search?scroll=1m", {"size": 1000}, "opensearch.search.scroll", EXPORT, "notes",
     {}),
    ("opensearch", "POST", "/_search", {"pit": {"id": "abc"}, "search_after": [1]}, "opensearch.search_all.pit",
     EXPORT, None, {}),
    ("opensearch", "POST", "/_search/scroll", {"scroll": "1m", "scroll_id": "abc"}, "opensearch.scroll", EXPORT,
     None, {}),
    ("opensearch", "POST", "/notes/_search/point_in_time?keep_alive=1m", None, "opensearch.pit_create", EXPORT,
     "notes", {}),
    ("opensearch", "POST", "/_msearch", [{"index": "notes"}, {"query": {"match_all": {}}}, {"index": "notes"},
                                         {"query": {"match": {"text": "x"}}}],
     "opensearch.msearch", SEARCH, "notes", {"searches": 2}),
    ("opensearch", "POST", "/notes/_msearch", [{}, {"query": {"match_all": {}}}], "opensearch.msearch_index", SEARCH,
     "notes", {"searches": 1}),
    ("opensearch", "POST", "/notes/_count", None, "opensearch.count", SEARCH, "notes", {}),
    ("opensearch", "GET", "/notes/_doc/1", None, "opensearch.get", GET, "notes", {}),
    ("opensearch", "GET", "/notes/_source/1", None, "opensearch.source", GET, "notes", {}),
    ("opensearch", "POST", "/_mget", {"docs": [{"_index": "notes", "_id": "1"}]}, "opensearch.mget", GET, "notes",
     {"ids_count": 1}),
    ("opensearch", "POST", "/notes/_mget", {"ids": ["1", "2"]}, "opensearch.mget_index", GET, "notes",
     {"ids_count": 2}),
    ("opensearch", "POST", "/_plugins/_sql", {"query": "SELECT * FROM notes"}, "opensearch.sql", EXPORT, None, {}),
    ("opensearch", "POST", "/_reindex", {"source": {"index": "notes"}, "dest": {"index": "copy"}},
     "opensearch.reindex", EXPORT, "notes", {}),
    ("opensearch", "PUT", "/_snapshot/repo/snap1", {"indices": "notes"}, "opensearch.snapshot", EXPORT, None, {}),
    ("opensearch", "PUT", "/notes/_doc/4", {"mrn": "x"}, "opensearch.index_doc", WRITE, "notes", {}),
    ("opensearch", "POST", "/notes/_doc", {"mrn": "x"}, "opensearch.index_auto", WRITE, "notes", {}),
    ("opensearch", "PUT", "/notes/_create/4", {"mrn": "x"}, "opensearch.index_doc", WRITE, "notes", {}),
    ("opensearch", "POST", "/notes/_update/4", {"doc": {"mrn": "x"}}, "opensearch.update_doc", WRITE, "notes", {}),
    ("opensearch", "POST", "/notes/_update_by_query", {"query": {"term": {"a": 1}}}, "opensearch.update_by_query",
     WRITE, "notes", {"has_filter": True}),
    ("opensearch", "POST", "/_bulk", [{"index": {"_index": "notes", "_id": "1"}}, {"mrn": "x"},
                                      {"update": {"_index": "notes", "_id": "2"}}, {"doc": {"a": 1}}],
     "opensearch.bulk", WRITE, "notes", {"lines": 4, "deletes": 0}),
    # One delete action anywhere makes the whole bulk a delete.
    ("opensearch", "POST", "/_bulk", [{"index": {"_index": "notes", "_id": "1"}}, {"mrn": "x"},
                                      {"delete": {"_index": "notes", "_id": "2"}}],
     "opensearch.bulk.delete", DELETE, "notes", {"deletes": 1}),
    ("opensearch", "POST", "/notes/_bulk", [{"create": {"_id": "1"}}, {"mrn": "x"}], "opensearch.bulk_index", WRITE,
     "notes", {}),
    ("opensearch", "POST", "/notes/_bulk", [{"delete": {"_id": "1"}}], "opensearch.bulk_index.delete", DELETE,
     "notes", {}),
    ("opensearch", "DELETE", "/notes/_doc/1", None, "opensearch.delete_doc", DELETE, "notes", {}),
    ("opensearch", "POST", "/notes/_delete_by_query", {"query": {"match_all": {}}}, "opensearch.delete_by_query",
     DELETE, "notes", {"has_filter": True}),
    ("opensearch", "PUT", "/notes", {"settings": {"index.knn": True}}, "opensearch.create_index", SCHEMA, "notes",
     {}),
    ("opensearch", "PUT", "/notes/_mapping", {"properties": {}}, "opensearch.mapping_put", SCHEMA, "notes", {}),
    ("opensearch", "GET", "/notes/_mapping", None, "opensearch.mapping_get", ADMIN, "notes", {}),
    ("opensearch", "DELETE", "/notes", None, "opensearch.drop", DROP, "notes", {"wildcard": False}),
    # Index wildcards in DELETE: a drop of every match, never reported as one named collection.
    ("opensearch", "DELETE", "/notes*", None, "opensearch.drop.wildcard", DROP, None, {"wildcard": True}),
    ("opensearch", "DELETE", "/notes,patients", None, "opensearch.drop.wildcard", DROP, None, {"wildcard": True}),
    ("opensearch", "DELETE", "/_all", None, "opensearch.drop.wildcard", DROP, None, {"wildcard": True}),
    ("opensearch", "DELETE", "/*", None, "opensearch.drop.wildcard", DROP, None, {"wildcard": True}),
    # --- mem0 -----------------------------------------------------------------------------------------
    ("mem0", "POST", "/memories", {"messages": [{"role": "user", "content": "x"}], "user_id": "u1"}, "mem0.add",
     WRITE, None, {"user_scoped": True, "messages": 1}),
    ("mem0", "PUT", "/memories/m1", {"text": "new"}, "mem0.update", WRITE, None, {}),
    ("mem0", "POST", "/search", {"query": "what do you know about Maria", "user_id": "u1"}, "mem0.search", SEARCH,
     None, {"user_scoped": True}),
    ("mem0", "GET", "/memories/m1", None, "mem0.get", GET, None, {}),
    ("mem0", "GET", "/memories/m1/history", None, "mem0.history", GET, None, {}),
    ("mem0", "GET", "/memories?user_id=u1", None, "mem0.list", EXPORT, None, {"user_scoped": True}),
    ("mem0", "DELETE", "/memories/m1", None, "mem0.delete", DELETE, None, {}),
    ("mem0", "DELETE", "/memories?user_id=u1", None, "mem0.delete_all", DELETE, None, {"user_scoped": True}),
    # /reset wipes every memory: a drop. /configure carries secrets: admin, body never parsed.
    ("mem0", "POST", "/reset", None, "mem0.reset", DROP, None, {}),
    ("mem0", "POST", "/configure", {"vector_store": {"config": {"password": "p"}}}, "mem0.configure", ADMIN, None,
     {}),
    ("mem0", "POST", "/configure", b"not json at all", "mem0.configure", ADMIN, None, {}),
]


@pytest.mark.parametrize(("backend", "method", "target", "body", "route", "kind", "collection", "facts"), CASES,
                         ids=[f"{c[4]}:{c[1]} {c[2][:48]}" for c in CASES])
def test_route_classifies(backend: str, method: str, target: str, body: Any, route: str, kind: OpKind,
                          collection: str | None, facts: dict[str, Any]) -> None:
    c = run(backend, method, target, body)
    assert c.route is not None, f"{method} {target} matched no route"
    assert (c.route.id, c.route.kind) == (route, kind)
    assert (c.collection or c.collection_id) == collection
    for name, value in facts.items():
        assert c.facts.get(name) == value, f"fact {name}: got {c.facts.get(name)!r}, expected {value!r}"


def test_every_profile_route_is_in_the_table() -> None:
    """A route added to a profile without a test case fails here (the table is the spec)."""
    tested = {c[4] for c in CASES} | {c["route"] for c in CAPTURED_ROUTES}
    untested_ok = {
        # Variants of a tested route that differ only in path (same kind, same record paths).
        "qdrant.livez", "qdrant.readyz", "qdrant.telemetry", "qdrant.metrics", "qdrant.cluster", "qdrant.aliases",
        "qdrant.collection_aliases", "qdrant.update_aliases", "qdrant.collection_exists", "qdrant.update_collection",
        "qdrant.create_index", "qdrant.delete_index", "qdrant.snapshot_list", "qdrant.snapshot_delete",
        "qdrant.shard_snapshots", "qdrant.shard_snapshot_download", "qdrant.full_snapshot_download",
        "qdrant.snapshot_upload", "qdrant.shard_snapshot_recover",
        "pinecone.list_imports", "pinecone.describe_import", "pinecone.cancel_import", "pinecone.list_backups",
        "pinecone.list_namespaces", "pinecone.describe_namespace", "pinecone.create_namespace",
        "pinecone.list_indexes", "pinecone.describe_index", "pinecone.configure_index", "pinecone.create_index",
        "weaviate.live", "weaviate.oidc", "weaviate.nodes", "weaviate.schema_get", "weaviate.schema_class",
        "weaviate.schema_update", "weaviate.schema_add_property", "weaviate.tenants", "weaviate.tenants_write",
        "weaviate.tenants_delete", "weaviate.backup_status", "weaviate.backup_restore", "weaviate.object_validate",
        "weaviate.batch_references",
        "milvus.v2.partitions_read", "milvus.v2.indexes_read", "milvus.v2.indexes_write",
        "opensearch.cluster_health", "opensearch.cat_indices", "opensearch.search_all", "opensearch.clear_scroll",
        "opensearch.pit_delete", "opensearch.settings_get", "opensearch.settings_put", "opensearch.refresh",
        "opensearch.get_index",
        "mem0.docs", "mem0.openapi", "mem0.root",
    }
    missing = [r.id for b in BACKENDS for r in profile(b).routes if r.id not in tested | untested_ok]
    assert missing == []


# --- what the real clients sent --------------------------------------------------------------------

# op name in backend_clients.py -> expected kind (and, for the tricky ones, route)
OP_KINDS = {
    "search": SEARCH, "search_text": SEARCH, "msearch": SEARCH, "v2_search": SEARCH, "count": SEARCH,
    "get": GET, "mget": GET, "history": GET, "v2_query": GET,
    "export": EXPORT,
    "write": WRITE, "set_payload": WRITE, "batch_write": WRITE, "bulk_write": WRITE, "update": WRITE,
    "batch_mixed": DELETE, "bulk_mixed": DELETE,
    "delete_ids": DELETE, "delete_filter": DELETE, "v2_delete_ids": DELETE, "v2_delete_filter": DELETE,
    "delete_all": DROP, "drop": DROP, "drop_wildcard": DROP, "v2_drop": DROP,
    "create": SCHEMA, "stats": ADMIN, "configure": ADMIN,
}
OP_ROUTES = {
    ("qdrant", "search_text"): "qdrant.query.text",
    ("qdrant", "batch_mixed"): "qdrant.batch.delete",
    ("qdrant", "delete_ids"): "qdrant.delete.by_id",
    ("qdrant", "delete_filter"): "qdrant.delete.by_filter",
    ("pinecone", "get"): "pinecone.fetch",
    ("pinecone", "delete_all"): "pinecone.delete.all",
    ("pinecone", "delete_ids"): "pinecone.delete.by_id",
    ("pinecone", "delete_filter"): "pinecone.delete.by_filter",
    ("milvus", "v2_delete_ids"): "milvus.v2.delete.by_id",
    ("milvus", "v2_delete_filter"): "milvus.v2.delete.by_filter",
    ("opensearch", "bulk_mixed"): "opensearch.bulk.delete",
    ("opensearch", "drop_wildcard"): "opensearch.drop.wildcard",
    ("mem0", "drop"): "mem0.reset",
    ("mem0", "configure"): "mem0.configure",
}


def _captures() -> list[dict[str, Any]]:
    out = []
    for backend in BACKENDS:
        for cap in json.loads((FIXTURES / backend / "captures.json").read_text()):
            out.append({**cap, "backend": backend})
    return out


CAPTURES = _captures()
CAPTURED_ROUTES: list[dict[str, Any]] = []


@pytest.mark.parametrize("cap", CAPTURES, ids=[f"{c['backend']}.{c['op']}:{c['method']} {c['path'][:40]}"
                                               for c in CAPTURES])
def test_real_client_request_classifies(cap: dict[str, Any]) -> None:
    body = cap["body"].encode() if cap["body"] else None
    c = run(cap["backend"], cap["method"], cap["path"], body)
    assert c.route is not None, f"the real {cap['backend']} client's {cap['op']} matched no route"
    assert c.route.kind == OP_KINDS[cap["op"]]
    expected_route = OP_ROUTES.get((cap["backend"], cap["op"]))
    if expected_route is not None:
        assert c.route.id == expected_route


def _record_captured_routes() -> None:
    for cap in CAPTURES:
        c = run(cap["backend"], cap["method"], cap["path"], cap["body"].encode() if cap["body"] else None)
        if c.route is not None:
            CAPTURED_ROUTES.append({"route": c.route.id})


_record_captured_routes()


def test_captures_cover_each_backend_operation() -> None:
    """The real clients were driven through search, get, export, write, deletes and drop on every backend."""
    for backend in BACKENDS:
        kinds = {OP_KINDS[c["op"]] for c in CAPTURES if c["backend"] == backend}
        assert {SEARCH, GET, EXPORT, WRITE, DELETE, DROP} <= kinds, backend


# --- unknown routes are denied -------------------------------------------------------------------------

UNKNOWN = [
    ("qdrant", "POST", "/collections/notes/points/teleport", {}),
    ("qdrant", "GET", "/collections/notes/points", None),
    ("qdrant", "POST", "/collections/notes/points", {"filter": {}}),  # retrieve without ids
    ("pinecone", "GET", "/vectors/fetch?namespace=a", None),  # fetch without ids
    ("pinecone", "POST", "/vectors/delete", {"namespace": "a"}),  # delete with nothing to select
    ("pinecone", "POST", "/vectors/export", {}),
    ("weaviate", "POST", "/v1/graphql", gql("mutation { dropEverything }")),
    ("weaviate", "POST", "/v1/graphql", gql("{ Get { Note { mrn } } Aggregate { Note { meta { count } } } }")),
    ("weaviate", "POST", "/v1/graphql/batch", [gql("{ Get { Note { mrn } } }")]),
    ("weaviate", "DELETE", "/v1/batch/objects", {"match": {"where": {}}}),
    ("milvus", "POST", "/v2/vectordb/entities/truncate", {"collectionName": "notes"}),
    ("milvus", "POST", "/v1/vector/delete", {"collectionName": "notes"}),
    ("opensearch", "POST", "/_nodes/reload_secure_settings", {}),
    ("opensearch", "GET", "/_nodes", None),
    ("opensearch", "POST", "/_msearch", [{}, {"query": {"match_all": {}}}]),  # a header without an index
    ("opensearch", "POST", "/notes/_bulk", [{"index": {"_index": "other", "_id": "1"}}, {"a": 1}]),
    ("mem0", "GET", "/memories", None),  # list with no scope
    ("mem0", "DELETE", "/memories", None),
    ("mem0", "POST", "/memories/m1/restore", {}),
]


@pytest.mark.parametrize(("backend", "method", "target", "body"), UNKNOWN,
                         ids=[f"{u[0]}:{u[1]} {u[2][:40]}" for u in UNKNOWN])
def test_unknown_route_matches_nothing_and_is_denied(backend: str, method: str, target: str, body: Any) -> None:
    c = run(backend, method, target, body)
    assert c.route is None
    from addons.config.policy_rules import load_policy

    policy = load_policy(ROOT / "rules").current
    op = Operation(backend=backend, kind=OpKind.UNKNOWN, route="unknown", method=method, path=target)
    for roles in ({"clinician"}, {"agent"}, {"db-admin"}, {"approver"}, {"clinician", "db-admin", "emergency"}):
        who = Caller(subject="s", issuer="i", roles=frozenset(roles), token_id="t", expires_at=0.0)
        assert policy.decide(who, op, c.parts).action == Action.DENY


@pytest.mark.parametrize(("backend", "method", "target", "body"), [
    ("opensearch", "POST", "/_bulk", b'{"index": {"_index": "notes"}}\n{"mrn": "x", "mrn": "y"}\n'),
    ("opensearch", "POST", "/_bulk", b'{"index": {"_index": "notes"}}\nnot json\n'),
    ("opensearch", "POST", "/_bulk", [{"index": {"_index": "notes"}}, {"a": 1}, {"index": {"_index": "other"}},
                                      {"a": 2}]),
    ("weaviate", "POST", "/v1/graphql", gql("{ Get { Note { mrn } Patient { ssn } } }")),
    ("weaviate", "POST", "/v1/graphql", gql("{ Get { Note { ...A } } } fragment A on Note { ...A }")),
    ("weaviate", "POST", "/v1/graphql", gql("query A { Get { Note { mrn } } } query B { Get { Note { ssn } } }")),
    ("weaviate", "POST", "/v1/graphql", gql("{ Get { Note(limit: 1) { mrn }")),
    ("weaviate", "POST", "/v1/graphql", {"query": 42}),
    ("weaviate", "POST", "/v1/objects?class=Note", b'{"class": "Note", "class": "Patient"}'),
], ids=["bulk-dup-key", "bulk-bad-line", "bulk-two-indices", "gql-two-classes", "gql-recursive-fragment",
        "gql-two-ops", "gql-syntax", "gql-not-string", "json-dup-key"])
def test_ambiguous_bodies_are_refused(backend: str, method: str, target: str, body: Any) -> None:
    with pytest.raises(Ambiguous):
        run(backend, method, target, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_auth_accepts_native_header_and_injects_backend_credential(backend: str) -> None:
    native = {"qdrant": "api-key", "pinecone": "api-key", "weaviate": "authorization", "milvus": "authorization",
              "opensearch": "authorization", "mem0": "x-api-key"}[backend]
    auth = profile(backend).auth
    assert native in auth.token_headers
    assert auth.upstream_header is not None and "{credential}" in auth.upstream_format


def test_profile_errors_name_file_and_route(tmp_path: Path) -> None:
    bad = (ROOT / "rules" / "profiles" / "milvus.yaml").read_text().replace("kind: drop", "kind: nuke", 1)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "milvus.yaml").write_text(bad)
    with pytest.raises(ConfigError, match=r"milvus\.yaml, rule 'milvus\.v1\.drop': bad value 'nuke'"):
        load_profile(tmp_path, "milvus")
