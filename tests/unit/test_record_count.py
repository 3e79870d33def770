"""Counting records in answers and lowering request limits (addons/config/record_count.py), on every
backend profile with its recorded answers (tests/fixtures/backends, tests/fixtures/chroma-1.5.9)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from addons.config.profile_model import Profile
from addons.config.profiles import compile_jsonpath, compile_profile
from addons.config.record_count import (
    count_records,
    countable,
    limit_updates,
    lower_body_limit,
    requested_ids,
    restore_body_limits,
)
from addons.config.rulefiles import parse_yaml
from tests.support.recorded_upstream import BACKENDS, load_fixture

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("chroma", *BACKENDS)

# Routes that read data but answer no records (counts, matrices of ids, explore beacons): nothing to
# count. A new search or get route must either say where its records sit or be added here.
NO_RECORDS = {"chroma.count", "qdrant.count", "qdrant.search_matrix", "opensearch.count",
              "weaviate.graphql.explore"}


def profile(name: str) -> Profile:
    file = ROOT / "rules" / "profiles" / f"{name}.yaml"
    return compile_profile(file, parse_yaml(file, file.read_text()))


@pytest.mark.parametrize("name", PROFILES)
def test_every_read_route_is_countable(name: str) -> None:
    for route in profile(name).routes:
        if route.kind.value in ("search", "get") and route.id not in NO_RECORDS:
            assert countable(route), f"{route.id}: no response record paths to count"


@pytest.mark.parametrize("name", BACKENDS)
def test_recorded_answers_count_as_many_records_as_they_hold(name: str) -> None:
    prof = profile(name)
    counted = 0
    for recorded in load_fixture(name):
        route = prof.route(recorded.id)
        if route is None or not countable(route) or not recorded.content_type.startswith("application/json"):
            continue
        doc = json.loads(recorded.body)
        n = count_records(route, doc)
        # Independent check: the number of distinct ids the answer carries, where ids are mapped.
        if route.response.ids:
            ids = [v for p in route.response.ids for v in compile_jsonpath("t", None, p)(doc)]
            assert n == len(ids), f"{name} {route.id}: counted {n}, ids {ids}"
        counted += 1
    assert counted >= 3, f"{name}: too few recorded answers counted"


CHROMA_QUERY = {"ids": [["a", "b"], ["c"]], "documents": None, "metadatas": [[{"m": 1}, {"m": 2}], [{"m": 3}]],
                "embeddings": None, "distances": [[0.1, 0.2], [0.3]]}


def test_counts_survive_left_out_parts() -> None:
    query = profile("chroma").route("chroma.query")
    assert query is not None
    assert count_records(query, CHROMA_QUERY) == 3  # two query vectors: records of both answers count
    assert count_records(query, {**CHROMA_QUERY, "metadatas": None}) == 3
    assert count_records(query, {"ids": [[]]}) == 0


@pytest.mark.parametrize(("name", "route_id", "body", "query", "expected_body", "expected_query"), [
    ("chroma", "chroma.get", {"where": {"$and": []}}, {}, {"where": {"$and": []}, "limit": 11}, {}),
    ("chroma", "chroma.get", {"limit": 3}, {}, {"limit": 3}, {}),
    ("chroma", "chroma.query", {"n_results": 5000}, {}, {"n_results": 11}, {}),
    ("chroma", "chroma.search", {"searches": [{"limit": {"limit": 500}}, {"filter": {}}]}, {},
     {"searches": [{"limit": {"limit": 11}}, {"filter": {}}]}, {}),
    ("qdrant", "qdrant.search_batch", {"searches": [{"limit": 50}, {"limit": 2}, {}]}, {},
     {"searches": [{"limit": 11}, {"limit": 2}, {}]}, {}),
    ("pinecone", "pinecone.query", {"topK": 10000}, {}, {"topK": 11}, {}),
    ("pinecone", "pinecone.records_search", {"query": {"top_k": 99}}, {}, {"query": {"top_k": 11}}, {}),
    ("pinecone", "pinecone.list", None, {"limit": ("100",)}, None, {"limit": "11"}),
    ("pinecone", "pinecone.list", None, {}, None, {"limit": "11"}),
    ("opensearch", "opensearch.search", {"query": {}}, {"size": ("10000",)}, {"query": {}}, {"size": "11"}),
    ("opensearch", "opensearch.search", {"query": {}}, {}, {"query": {}, "size": 11}, {}),
    ("milvus", "milvus.v2.query", {"filter": "id > 0", "limit": True}, {}, {"filter": "id > 0", "limit": 11}, {}),
    ("mem0", "mem0.search", {"query": "x"}, {}, {"query": "x", "limit": 11}, {}),
    ("weaviate", "weaviate.objects_list", None, {"limit": ("25",), "after": ("x",)}, None, {"limit": "11"}),
])
def test_limits_are_lowered_or_injected(name: str, route_id: str, body: Any, query: dict[str, tuple[str, ...]],
                                        expected_body: Any, expected_query: dict[str, str]) -> None:
    route = profile(name).route(route_id)
    assert route is not None and route.limit, route_id
    before = copy.deepcopy(body)
    changed, params = limit_updates(route, body, query, 11)
    assert body == expected_body
    assert params == expected_query
    assert changed == (before != expected_body)


def test_a_missing_parent_is_not_created() -> None:
    doc: dict[str, Any] = {"searches": [{"filter": {}}]}
    assert lower_body_limit("$.searches[*].limit.limit", doc, 11, inject=True) is False
    assert doc == {"searches": [{"filter": {}}]}


def test_restoring_puts_back_the_clients_own_limits() -> None:
    route = profile("qdrant").route("qdrant.search_batch")
    assert route is not None
    original = {"searches": [{"limit": 50, "filter": {"must": ["tok_mrn_k1_x"]}}, {"filter": {}}]}
    forwarded = copy.deepcopy(original)
    limit_updates(route, forwarded, {}, 11)
    forwarded["searches"][0]["filter"] = {"must": ["MRN-1"]}  # detokenized on the way out
    restore_body_limits(route, original, forwarded)
    assert forwarded == {"searches": [{"limit": 50, "filter": {"must": ["MRN-1"]}}, {"filter": {}}]}


def test_a_read_by_ids_names_its_own_bound() -> None:
    chroma = profile("chroma")
    route = chroma.route("chroma.get")
    assert route is not None and route.request.ids
    assert requested_ids(route, {"ids": ["a", "b", "c"], "where": {"ward": "x"}}) == 3
    # No ids, empty ids, or no body: the answer has no bound but the limit.
    for body in ({"where": {"ward": "x"}}, {"ids": []}, {"ids": None}, None):
        assert requested_ids(route, body) is None
