"""One masking rule file, every backend: no masked value survives a search or an export response.

rules/masking.yaml names fields (`mrn`, `patient_name`, `ssn`, `dob`, ...), never backend paths; each
backend profile says where records sit in each route's response (Qdrant's payload, Pinecone's
metadata, OpenSearch's _source, Milvus's output fields, Weaviate's properties, mem0's metadata).
The property: put any generated patients into a backend's recorded response (built from its
published API documents), mask it for a non-clinical caller, and none of the values of a masked field
is left anywhere in the body, on every search and export route of every backend.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.config.jsonpath import compile_path
from addons.config.masking_rules import MaskingRules, compile_masking, compile_route_paths
from addons.config.profile_model import Route
from addons.config.profiles import load_profile
from addons.config.rulefiles import parse_yaml
from addons.phi.masker import MaskRun, apply_plan
from addons.phi.tokens import KeyRing, install
from tests.support.recorded_upstream import recorded_json

ROOT = Path(__file__).resolve().parents[2]
AGENT = frozenset({"agent"})  # a non-clinical phigate role (rules/policy.yaml maps IdP groups to roles)

# (backend, profile route, recorded fixture route): every search and export route with records,
# plus the gets that return the same records.
ROUTES = [
    ("qdrant", "qdrant.query", "qdrant.query"),
    ("qdrant", "qdrant.query.text", "qdrant.query"),
    ("qdrant", "qdrant.query_batch", "qdrant.query_batch"),
    ("qdrant", "qdrant.query_groups", "qdrant.query_groups"),
    ("qdrant", "qdrant.search", "qdrant.search"),
    ("qdrant", "qdrant.search_batch", "qdrant.search_batch"),
    ("qdrant", "qdrant.scroll", "qdrant.scroll"),
    ("qdrant", "qdrant.retrieve", "qdrant.retrieve"),
    ("qdrant", "qdrant.get_point", "qdrant.get_point"),
    ("pinecone", "pinecone.query", "pinecone.query"),
    ("pinecone", "pinecone.records_search", "pinecone.records_search"),
    ("pinecone", "pinecone.fetch", "pinecone.fetch"),
    ("pinecone", "pinecone.fetch_by_metadata", "pinecone.fetch_by_metadata"),
    ("weaviate", "weaviate.graphql.search", "weaviate.graphql"),
    ("weaviate", "weaviate.graphql.export", "weaviate.graphql"),
    ("weaviate", "weaviate.objects_list", "weaviate.objects_list"),
    ("weaviate", "weaviate.object_get", "weaviate.object_get"),
    ("milvus", "milvus.v1.search", "milvus.v1.search"),
    ("milvus", "milvus.v1.query.export", "milvus.v1.query"),
    ("milvus", "milvus.v1.get", "milvus.v1.get"),
    ("milvus", "milvus.v2.search", "milvus.v2.search"),
    ("milvus", "milvus.v2.query.export", "milvus.v2.query"),
    ("milvus", "milvus.v2.query.no_filter", "milvus.v2.query"),
    ("milvus", "milvus.v1.query.unfiltered", "milvus.v1.query"),
    ("opensearch", "opensearch.search", "opensearch.search"),
    ("opensearch", "opensearch.search.scroll", "opensearch.search_scroll"),
    ("opensearch", "opensearch.scroll", "opensearch.scroll"),
    ("opensearch", "opensearch.msearch", "opensearch.msearch"),
    ("opensearch", "opensearch.mget_index", "opensearch.mget_index"),
    ("opensearch", "opensearch.get", "opensearch.get"),
    ("opensearch", "opensearch.source", "opensearch.source"),
    ("mem0", "mem0.search", "mem0.search"),
    ("mem0", "mem0.list", "mem0.list"),
    ("mem0", "mem0.get", "mem0.get"),
]
# Each backend's search and export, by operation kind: the acceptance pair.
SEARCH_AND_EXPORT = {
    "qdrant": ("qdrant.query", "qdrant.scroll"),
    "pinecone": ("pinecone.query", "pinecone.fetch"),  # Pinecone exports by list (ids) + fetch
    "weaviate": ("weaviate.graphql.search", "weaviate.objects_list"),
    "milvus": ("milvus.v1.search", "milvus.v1.query.export"),
    "opensearch": ("opensearch.search", "opensearch.search.scroll"),
    "mem0": ("mem0.search", "mem0.list"),
}


@functools.cache
def rules() -> MaskingRules:
    path = ROOT / "rules" / "masking.yaml"
    return compile_masking(path, parse_yaml(path, path.read_text()))


def route_of(backend: str, route_id: str) -> Route:
    route = load_profile(ROOT / "rules", backend).current.route(route_id)
    assert route is not None, route_id
    return route


@pytest.fixture(scope="module", autouse=True)
def _keyring() -> Any:
    ring = KeyRing.parse("*k1=" + base64.b64encode(bytes(range(32))).decode())
    install(ring)
    yield ring
    install(None)


def mask(backend: str, route: Route, doc: Any, ring: KeyRing) -> tuple[str, MaskRun, set[str]]:
    r = rules()
    plan = r.plan(AGENT, backend, route)
    run = MaskRun(ring, r.detector)
    apply_plan(doc, plan, run)
    masked_fields = {s.field for s in plan.steps if s.field is not None}
    return orjson.dumps(doc).decode(), run, masked_fields


def fill(route: Route, doc: Any, patients: list[dict[str, str]]) -> int:
    """Put the patients into every record of a recorded response; returns how many records."""
    n = 0
    for path in route.response.metadata:
        # `$` (OpenSearch _source/{id}: the body is the record) has no container to point into.
        for record in [doc] if path == "$" else compile_path(path).nodes(doc):
            if isinstance(record, dict):
                record.update(patients[n % len(patients)])
                n += 1
    for path in route.response.documents:
        for i, (container, key) in enumerate(list(compile_path(path).locations(doc))):
            p = patients[i % len(patients)]
            container[key] = f"Follow-up: MRN {p['mrn']}; SSN {p['ssn']}; reach at {p['email']}."
    return n


letters = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=5, max_size=10)
patient = st.fixed_dictionaries({
    "mrn": st.integers(1_000_000, 9_999_999).map(lambda n: f"MRN-{n}"),
    "patient_name": st.tuples(letters, letters).map(lambda t: f"{t[0].title()} {t[1].title()}"),
    "ssn": st.tuples(st.integers(100, 665), st.integers(10, 99), st.integers(1000, 9999))
             .map(lambda t: f"{t[0]}-{t[1]}-{t[2]}"),
    "dob": st.dates().map(lambda d: d.isoformat()),
    "email": st.tuples(letters, letters).map(lambda t: f"{t[0]}.{t[1]}@example.org"),
})


@pytest.mark.parametrize(("backend", "route_id", "fixture_id"), ROUTES, ids=[r[1] for r in ROUTES])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patients=st.lists(patient, min_size=1, max_size=4))
def test_no_masked_value_survives(backend: str, route_id: str, fixture_id: str, patients: list[dict[str, str]],
                                  _keyring: KeyRing) -> None:
    route = route_of(backend, route_id)
    doc = copy.deepcopy(recorded_json(backend, fixture_id))
    records = fill(route, doc, patients)
    assert records > 0, "the recorded response has records at the profile's metadata paths"
    body, run, masked_fields = mask(backend, route, doc, _keyring)
    assert {"mrn", "patient_name", "ssn", "dob", "email"} <= masked_fields
    assert run.by_rule, "masking did something"
    for p in patients:
        for name in masked_fields & set(p):
            assert p[name] not in body, f"{backend} {route_id}: {name} value survived masking"


@pytest.mark.parametrize(("backend", "route_id", "fixture_id"), ROUTES, ids=[r[1] for r in ROUTES])
def test_recorded_phi_is_masked(backend: str, route_id: str, fixture_id: str, _keyring: KeyRing) -> None:
    """The fixtures' own patients (the same three on every backend) do not survive either."""
    fixtures = json.loads((ROOT / "tests" / "fixtures" / "backends" / backend / "responses.json").read_text())
    assert any(r["id"] == fixture_id for r in fixtures["routes"])
    route = route_of(backend, route_id)
    doc = copy.deepcopy(recorded_json(backend, fixture_id))
    body, _, _ = mask(backend, route, doc, _keyring)
    for value in ("MRN-4839201", "MRN-5520187", "MRN-6017342", "Maria Gonzalez", "James O'Neil", "Aiko Tanaka",
                  "512-44-9081", "078-05-1120", "219-09-9999", "1958-03-14", "1971-11-02"):
        assert value not in body, f"{backend} {route_id}: {value!r} survived"


@pytest.mark.parametrize("backend", sorted(SEARCH_AND_EXPORT))
def test_one_mrn_rule_covers_search_and_export_on_each_backend(backend: str) -> None:
    """The field rule `mrn` becomes a concrete path on both routes (payload, metadata, _source, ...)."""
    r = rules()
    for route_id in SEARCH_AND_EXPORT[backend]:
        route = route_of(backend, route_id)
        plan = r.plan(AGENT, backend, route)
        mrn_paths = [s.walker for s in plan.steps if s.field == "mrn"]
        assert mrn_paths, f"{route_id}: no path for field mrn"


@pytest.mark.parametrize("backend", sorted(SEARCH_AND_EXPORT))
def test_every_route_compiles_for_masking(backend: str) -> None:
    """A record path masking cannot walk would turn every answer on that route into a 502."""
    for route in load_profile(ROOT / "rules", backend).current.routes:
        paths = compile_route_paths(route)
        assert paths is not None


def test_weaviate_aggregate_top_occurrences_are_scanned(_keyring: KeyRing) -> None:
    route = route_of("weaviate", "weaviate.graphql.aggregate")
    doc = {"data": {"Aggregate": {"Note": [{"mrn": {"topOccurrences": [
        {"value": "Seen today: MRN 4839201, SSN 512-44-9081", "occurs": 1}]}}]}}}
    body, _, _ = mask("weaviate", route, doc, _keyring)
    assert "4839201" not in body and "512-44-9081" not in body


def test_clinicians_see_names_but_never_ssn(_keyring: KeyRing) -> None:
    """Role matters: the same rule file releases names to clinicians and still redacts SSNs."""
    r = rules()
    route = route_of("qdrant", "qdrant.scroll")
    plan = r.plan(frozenset({"clinician"}), "qdrant", route)
    doc = copy.deepcopy(recorded_json("qdrant", "qdrant.scroll"))
    apply_plan(doc, plan, MaskRun(_keyring, r.detector))
    body = orjson.dumps(doc).decode()
    assert "Maria Gonzalez" in body and "MRN-4839201" in body
    assert "512-44-9081" not in body
