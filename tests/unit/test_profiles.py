"""Unit tests for addons/config/profiles.py and rules/profiles/chroma.yaml, driven by real Chroma captures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonpath_ng.ext.parser import parse as jsonpath_parse

from addons.config.profile_model import Profile
from addons.config.profiles import classify, classify_request, compile_jsonpath, load_profile
from addons.config.rulefiles import ConfigError
from addons.core.context import OpKind
from addons.request.canonical_form import Ambiguous
from tests.support.masking_fixtures import CHROMA_CAPTURES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = CHROMA_CAPTURES
TD = "/api/v2/tenants/default_tenant/databases/default_database"
UUID = "f43b389c-34ca-4a94-9620-85cc91eb9677"

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="Chroma captures not on this machine")


@pytest.fixture(scope="module")
def chroma() -> Profile:
    # Compiled once for the module (the autouse fixture forgets watched files between tests).
    return load_profile(ROOT / "rules", "chroma").current


def capture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]


def capture_body(doc: dict[str, Any], key: str = "request_body") -> bytes:
    body = doc.get(key) or {}
    return orjson.dumps(body["json"]) if body.get("json") is not None else b""


# Every real capture: the route and kind it must classify to.
CAPTURES = {
    "001_GET_api_v2_auth_identity.json": ("chroma.identity", "admin"),
    "002_GET_api_v2_tenants_default_tenant.json": ("chroma.tenant.get", "admin"),
    "003_GET_api_v2_tenants_default_tenant_databases_default_database.json": ("chroma.database.get", "admin"),
    "004_GET_api_v2_heartbeat.json": ("chroma.heartbeat", "health"),
    "005_GET_api_v2_version.json": ("chroma.version", "health"),
    "006_POST_api_v2_tenants_default_tenant_databases_default_database_collections.json":
        ("chroma.collection.create", "schema-write"),
    "007_GET_api_v2_pre-flight-checks.json": ("chroma.preflight", "health"),
    f"008_POST_ult_tenant_databases_default_database_collections_{UUID}_add.json": ("chroma.add", "write"),
    f"009_GET_t_tenant_databases_default_database_collections_{UUID}_count.json": ("chroma.count", "get"),
    f"010_POST_t_tenant_databases_default_database_collections_{UUID}_query.json": ("chroma.query", "search"),
    f"011_POST_ult_tenant_databases_default_database_collections_{UUID}_get.json": ("chroma.get", "get"),
    f"012_POST_ult_tenant_databases_default_database_collections_{UUID}_get.json": ("chroma.get", "get"),
    f"013_POST_ult_tenant_databases_default_database_collections_{UUID}_get.json": ("chroma.get", "get"),
    # peek(3): neither ids nor a filter -> export (the limit fact says how many)
    f"014_POST_ult_tenant_databases_default_database_collections_{UUID}_get.json": ("chroma.get.export", "export"),
    f"015_POST__tenant_databases_default_database_collections_{UUID}_update.json": ("chroma.update", "write"),
    f"016_POST__tenant_databases_default_database_collections_{UUID}_upsert.json": ("chroma.upsert", "write"),
    f"017_PUT_default_tenant_databases_default_database_collections_{UUID}.json":
        ("chroma.collection.update", "schema-write"),
    "018_GET_api_v2_tenants_default_tenant_databases_default_database_collections_patients_notes.json":
        ("chroma.collection.get", "admin"),
    # get(limit=100, offset=0): a page of everything -> export
    f"019_POST_ult_tenant_databases_default_database_collections_{UUID}_get.json": ("chroma.get.export", "export"),
    f"020_POST__tenant_databases_default_database_collections_{UUID}_delete.json": ("chroma.delete", "delete"),
    f"021_POST__tenant_databases_default_database_collections_{UUID}_delete.json": ("chroma.delete", "delete"),
    f"022_POST__tenant_databases_default_database_collections_{UUID}_delete.json": ("chroma.delete", "delete"),
    f"023_GET_t_tenant_databases_default_database_collections_{UUID}_count.json": ("chroma.count", "get"),
    "024_GET_api_v2_tenants_default_tenant_databases_default_database_collections.json":
        ("chroma.collections.list", "admin"),
    "025_GET_api_v2_tenants_default_tenant_databases_default_database_collections_count.json":
        ("chroma.collections.count", "admin"),
    "026_DELETE_api_v2_tenants_default_tenant_databases_default_database_collections_patients_notes.json":
        ("chroma.collection.drop", "drop"),
    "027_GET_api_v2_tenants_default_tenant_databases_default_database_collections.json":
        ("chroma.collections.list", "admin"),
    "040_POST_api_v2_tenants_default_tenant_databases_default_database_collections.json":
        ("chroma.collection.create", "schema-write"),
    "043_POST__tenant_databases_default_database_collections_3d2da786-98c9-4382-831a-a5e799dc6158_search.json":
        ("chroma.search", "search"),
    "044_GET_api_v2_tenants_default_tenant_databases_default_database_collections_does_not_exist.json":
        ("chroma.collection.get", "admin"),
    "046_DELETE_api_v2_tenants_default_tenant_databases_default_database_collections_search_test.json":
        ("chroma.collection.drop", "drop"),
}

# OpenAPI operations no capture exercises: (method, path, body) -> route, kind.
SYNTHETIC = [
    ("GET", "/api/v2/healthcheck", None, "chroma.healthcheck", "health"),
    ("POST", "/api/v2/reset", None, "chroma.reset", "drop"),
    ("POST", "/api/v2/tenants", {"name": "t2"}, "chroma.tenant.create", "schema-write"),
    ("PATCH", "/api/v2/tenants/t2", {"resource_name": "x"}, "chroma.tenant.update", "schema-write"),
    ("GET", "/api/v2/tenants/t2/databases", None, "chroma.database.list", "admin"),
    ("POST", "/api/v2/tenants/t2/databases", {"name": "d2"}, "chroma.database.create", "schema-write"),
    ("DELETE", "/api/v2/tenants/t2/databases/d2", None, "chroma.database.drop", "drop"),
    ("GET", "/api/v2/collections/default_tenant:default_database:patients_notes", None,
     "chroma.collection.by_crn", "admin"),
    ("GET", f"{TD}/collections/by-id/{UUID}", None, "chroma.collection.get_by_id", "admin"),
    ("GET", f"{TD}/collections/{UUID}/fork_count", None, "chroma.fork_count", "admin"),
    ("GET", f"{TD}/collections/{UUID}/indexing_status", None, "chroma.indexing_status", "admin"),
    ("GET", f"{TD}/collections/{UUID}/functions/f1", None, "chroma.function.get", "admin"),
    ("POST", f"{TD}/collections/{UUID}/functions/attach",
     {"name": "f", "function_id": "x", "output_collection": "o"}, "chroma.function.attach", "schema-write"),
    ("POST", f"{TD}/collections/{UUID}/attached_functions/f/detach", {}, "chroma.function.detach", "schema-write"),
    ("POST", f"{TD}/collections/{UUID}/fork", {"new_name": "copy"}, "chroma.fork", "export"),
    ("POST", f"{TD}/collections/{UUID}/delete", {"ids": None, "where": None}, "chroma.delete.all", "drop"),
    ("POST", f"{TD}/collections/{UUID}/delete", {"ids": [], "where": {}}, "chroma.delete.all", "drop"),
    ("POST", f"{TD}/collections/{UUID}/get", {}, "chroma.get.export", "export"),
    ("POST", f"{TD}/collections/{UUID}/get", None, "chroma.get.export", "export"),
    ("POST", f"{TD}/collections/{UUID}/get", {"where": {}, "ids": []}, "chroma.get.export", "export"),
    ("POST", f"{TD}/collections/{UUID}/get", {"where": {"mrn": "1"}}, "chroma.get", "get"),
]


@needs_fixtures
@pytest.mark.parametrize(("name", "expected"), sorted(CAPTURES.items()))
def test_every_capture_classifies(chroma: Profile, name: str, expected: tuple[str, str]) -> None:
    doc = capture(name)
    path, _, query = doc["path"].partition("?")
    route, _facts, _collection, _cid = classify(chroma, doc["method"], path, query, capture_body(doc))
    assert route is not None
    assert (route.id, route.kind.value) == expected


@pytest.mark.parametrize(("method", "path", "body", "route_id", "kind"), SYNTHETIC)
def test_uncaptured_routes_classify(chroma: Profile, method: str, path: str, body: Any,
                                    route_id: str, kind: str) -> None:
    raw = orjson.dumps(body) if body is not None else b""
    route, _facts, _c, _cid = classify(chroma, method, path, "", raw)
    assert route is not None
    assert (route.id, route.kind.value) == (route_id, kind)


def test_every_route_is_exercised_by_a_table(chroma: Profile) -> None:
    used = {rid for rid, _ in CAPTURES.values()} | {row[3] for row in SYNTHETIC}
    assert {r.id for r in chroma.routes} - used == set()
    assert used - {r.id for r in chroma.routes} == set()


@needs_fixtures
def test_every_capture_is_in_the_table() -> None:
    on_disk = {p.name for p in FIXTURES.glob("0*.json")}
    # Repeats of the connect sequence (037-058 except the named ones) are covered by 001-007.
    named = set(CAPTURES)
    for name in on_disk - named:
        doc = capture(name)
        assert doc["path"].split("/")[-1] in ("identity", "default_tenant", "default_database", "heartbeat",
                                                "pre-flight-checks", "add"), name


@needs_fixtures
def test_every_openapi_operation_is_classified(chroma: Profile) -> None:
    spec = json.loads((FIXTURES / "openapi.json").read_text())
    count = 0
    for template, ops in spec["paths"].items():
        for method, _op in ops.items():
            path = re.sub(r"\{(collection_id)\}", UUID, template)
            path = re.sub(r"\{crn\}", "t:d:c", path)
            path = re.sub(r"\{[^}]+\}", "x", path)
            route, *_ = classify(chroma, method.upper(), path, "", b'{"ids": ["a"]}'
                                 if method in ("post", "put", "patch") else b"")
            assert route is not None, (method, template)
            count += 1
    assert count == 35


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/heartbeat"),  # the old API is not in the profile
        ("POST", "/api/v2/heartbeat"),
        ("GET", "/api/v2/heartbeat/"),
        ("POST", f"{TD}/collections/patients_notes/get"),  # a name where a UUID belongs
        ("POST", f"{TD}/collections/{UUID.upper()}/get"),
        ("GET", f"{TD}/collections/{UUID}/get/extra"),
        ("OPTIONS", "/api/v2/heartbeat"),
    ],
)
def test_unknown_routes(chroma: Profile, method: str, path: str) -> None:
    assert classify(chroma, method, path, "", b"")[0] is None


def test_facts_and_collections(chroma: Profile) -> None:
    base = f"{TD}/collections/{UUID}"
    _r, facts, collection, cid = classify(
        chroma, "POST", f"{base}/query", "",
        b'{"query_embeddings": [[1.0], [2.0]], "n_results": 50, "where_document": {"$contains": "x"}, '
        b'"include": ["embeddings"]}')
    assert (collection, cid) == (None, UUID)
    assert facts == {"has_filter": True, "has_where_document": True, "has_ids": False, "ids_count": 0,
                     "n_results": 50, "query_count": 2, "includes_embeddings": True}
    _r, facts, collection, cid = classify(chroma, "POST", f"{TD}/collections", "", b'{"name": "patients_x"}')
    assert (collection, cid) == ("patients_x", None)
    _r, _f, collection, _c = classify(chroma, "GET", "/api/v2/collections/t:d:patients_x", "", b"")
    assert collection == "patients_x"
    _r, facts, *_ = classify(chroma, "GET", f"{TD}/collections", "limit=5", b"")
    assert facts["limit"] == "5"


def test_search_is_filtered_only_if_every_search_is(chroma: Profile) -> None:
    path = f"{TD}/collections/{UUID}/search"
    one = {"filter": {"mrn": {"$eq": "1"}}, "limit": {"limit": 5}}
    two = {"rank": {}, "limit": {"limit": 500}}
    _r, facts, *_ = classify(chroma, "POST", path, "", orjson.dumps({"searches": [one]}))
    assert facts["has_filter"] is True
    _r, facts, *_ = classify(chroma, "POST", path, "", orjson.dumps({"searches": [one, two]}))
    assert (facts["has_filter"], facts["limit"], facts["search_count"]) == (False, 500, 2)
    _r, facts, *_ = classify(chroma, "POST", path, "", orjson.dumps({"searches": []}))
    assert facts["has_filter"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"ids": ["a"], "ids": null}', "duplicate key"),
        (b"ids=a", "not valid JSON"),
        (b'{"limit": 1', "not valid JSON"),
    ],
)
def test_malformed_bodies_on_json_routes(chroma: Profile, body: bytes, message: str) -> None:
    with pytest.raises(Ambiguous, match=message):
        classify(chroma, "POST", f"{TD}/collections/{UUID}/get", "", body)


def test_body_on_a_bodiless_route_is_refused(chroma: Profile) -> None:
    with pytest.raises(Ambiguous, match="takes no request body"):
        classify(chroma, "GET", "/api/v2/heartbeat", "", b'{"x": 1}')


def test_repeated_query_value_with_different_values_is_ambiguous(chroma: Profile) -> None:
    with pytest.raises(Ambiguous, match="'limit' more than once"):
        classify(chroma, "GET", f"{TD}/collections", "limit=1&limit=1000", b"")
    assert classify(chroma, "GET", f"{TD}/collections", "limit=7&limit=7", b"")[1]["limit"] == "7"


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "side", "key", "expected"),
    [
        # query responses nest one list per query vector; get responses are flat
        (f"010_POST_t_tenant_databases_default_database_collections_{UUID}_query.json", "response",
         "metadata", [{"mrn": "3456789"}, {"mrn": "1234567"}]),
        (f"011_POST_ult_tenant_databases_default_database_collections_{UUID}_get.json", "response",
         "metadata", [{"mrn": "2345678"}]),
        (f"008_POST_ult_tenant_databases_default_database_collections_{UUID}_add.json", "request",
         "metadata", [{"mrn": "1234567"}, {"mrn": "2345678"}, {"mrn": "7654321"}, {"mrn": "3456789"}]),
    ],
)
def test_record_paths_point_at_records_in_real_bodies(chroma: Profile, name: str, side: str, key: str,
                                                      expected: list[dict[str, str]]) -> None:
    doc = capture(name)
    path, _, query = doc["path"].partition("?")
    route = classify(chroma, doc["method"], path, query, capture_body(doc))[0]
    assert route is not None
    paths = getattr(getattr(route, side), key)
    body = doc[f"{side}_body"]["json"]
    found = [m.value for p in paths for m in jsonpath_parse(p).find(body)]
    assert [{"mrn": v["mrn"]} for v in found] == expected


@needs_fixtures
def test_query_documents_path_yields_strings_not_lists(chroma: Profile) -> None:
    doc = capture(f"010_POST_t_tenant_databases_default_database_collections_{UUID}_query.json")
    route = chroma.route("chroma.query")
    assert route is not None
    found = [m.value for m in jsonpath_parse(route.response.documents[0]).find(doc["response_body"]["json"])]
    assert found and all(isinstance(v, str) for v in found)


def test_auth(chroma: Profile) -> None:
    assert chroma.auth.token_headers == ("authorization", "x-chroma-token")
    assert chroma.auth.upstream_header == "x-chroma-token"
    assert chroma.auth.upstream_format.format(credential="c") == "c"


@pytest.mark.parametrize(
    "path",
    ["$.a", "$.a[*].b", "$['where']", "$.a[0]", "$.*", "$[*]", "$.a[*][*]", "$.a.b-c", "$[?(@.a == 1)].b",
     "$..mrn"],
)
def test_fast_jsonpath_agrees_with_jsonpath_ng(path: str) -> None:
    docs: list[Any] = [
        {"a": [{"b": 1}, {"b": [2, 3]}, {"c": 4}], "where": {"x": None}, "b-c": 1},
        {"a": {"b": {"b-c": 5}}},
        [{"a": 1, "b": 2}, {"a": 2, "b": 3, "mrn": "9"}],
        {"a": [[1, 2], [3]]},
    ]
    fast = compile_jsonpath("t", None, path)
    for doc in docs:
        if isinstance(doc, dict) and path in ("$[*]",):
            continue  # jsonpath-ng auto-wraps a non-list; classification never relies on that
        assert fast(doc) == [m.value for m in jsonpath_parse(path).find(doc)], doc


# --- bad profiles -------------------------------------------------------------------------------------

GOOD = """
backend: demo
auth: {token_headers: [authorization], upstream: {header: x-key}}
routes:
  - {id: r1, kind: search, method: POST, path: "/c/{name}/q", collection: name}
"""


def write_profile(tmp_path: Path, text: str) -> Path:
    (tmp_path / "profiles").mkdir(exist_ok=True)
    (tmp_path / "profiles" / "demo.yaml").write_text(text)
    return tmp_path


def route_yaml(route: str) -> str:
    return GOOD.replace('  - {id: r1, kind: search, method: POST, path: "/c/{name}/q", collection: name}', route)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("kind: search", "kind: read"), r"rule 'r1': bad value 'read'; expected kind: one of"),
        (GOOD.replace("method: POST", "method: FETCH"), r"rule 'r1': bad value 'FETCH'; expected an HTTP method"),
        (GOOD.replace("/c/{name}/q", "c/{name}"), r"expected a path template starting with '/'"),
        (GOOD.replace("/c/{name}/q", "/c//{name}"), r"expected a canonical path"),
        (GOOD.replace("/c/{name}/q", "/c/{name}/{name}"), r"each path variable once"),
        (GOOD.replace("/c/{name}/q", "/c/{na me}/q"), r"variables written"),
        (GOOD.replace("/c/{name}/q", "/c/{name:[}/q"), r"a valid regular expression"),
        (GOOD.replace("collection: name", "collection: nope"), r"expected a variable of the route's path"),
        (GOOD.replace("collection: name", "colection: name"), r"rule 'r1': bad value \['colection'\]"),
        (GOOD.replace("collection: name", "when: {absent: [$.where]}"), r"reserves words such as `where`"),
        (GOOD.replace("collection: name", "when: {sometimes: [$.a]}"), r"expected one of present"),
        (GOOD.replace("collection: name", "facts: {Limit: $.limit}"), r"fact name in lower_snake_case"),
        (GOOD.replace("collection: name", "facts: {n: {sum: $.a}}"), r"rule 'r1 fact n'"),
        (GOOD.replace("collection: name", "when: {matches: {$.a: '('}}"), r"a valid regular expression"),
        (GOOD.replace("collection: name", "body: xml"), r"expected body: one of json"),
        (GOOD.replace("collection: name", "body: none, when: {present: $.a}"), r"on a route whose `when`"),
        (GOOD.replace("collection: name", "response: {metadatas: $.m}"), r"keys among ids, documents"),
        (GOOD.replace("collection: name", "response: {metadata: 'm[*]'}"), r"starting with '\$'"),
        (GOOD.replace("collection: name", "learn: {id: id}"), r"learn: \{source"),
        (GOOD.replace("collection: name", "limit: $..limit"), r"expected limit: `\$.key.path`"),
        (GOOD.replace("collection: name", "limit: '$.a[0].limit'"), r"expected limit: `\$.key.path`"),
        (GOOD.replace("collection: name", "limit: limit"), r"expected limit: `\$.key.path`"),
        (GOOD.replace("collection: name", "body: any, limit: $.limit"), r"limit: body paths only"),
        (GOOD.replace("{header: x-key}", "{header: x-key, format: 'Bearer {token}'}"),
         r"rule 'auth'.*expected upstream.format"),
        (GOOD.replace("[authorization]", "[]"), r"token_headers: a non-empty list"),
        (GOOD.replace("backend: demo", "backend: Demo!"), r"backend: a lower-case name"),
        (GOOD + "  - {id: r1, kind: get, method: GET, path: /x}\n", r"rule 'r1'.*unique route ids"),
        (GOOD.replace("routes:", "extra: 1\nroutes:"), r"top-level keys among"),
        ("backend: demo\nbackend: demo\n", r"duplicate key"),
    ],
)
def test_bad_profiles_say_file_rule_value_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    rules = write_profile(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_profile(rules, "demo")
    assert "demo.yaml" in str(info.value)


def test_profile_name_cannot_leave_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a profile name"):
        load_profile(tmp_path, "../policy")


def test_constrained_variable_and_query_and_path_selectors(tmp_path: Path) -> None:
    text = route_yaml(
        "  - {id: wild, kind: drop, method: DELETE, path: '/{index}', collection: index,\n"
        "     when: {matches: {'{index}': '[*,]|^_all$'}}}\n"
        "  - {id: one, kind: drop, method: DELETE, path: '/{index:[^_][^/]*}', collection: index}\n"
        "  - {id: fetch, kind: get, method: GET, path: /vectors/fetch, body: none,\n"
        "     facts: {ids_count: {count: '?ids'}, has_ns: {present: '?namespace'}}}\n"
        "  - id: bulk-delete\n"
        "    kind: delete\n"
        "    method: POST\n"
        "    path: /_bulk\n"
        "    body: ndjson\n"
        "    when: {present: '$[*].delete'}\n"
        "  - {id: bulk, kind: write, method: POST, path: /_bulk, body: ndjson}\n"
        "  - {id: del, kind: delete, method: POST, path: /vectors/delete, when: {equals: {$.deleteAll: true}}}\n"
    )
    profile = load_profile(write_profile(tmp_path, text), "demo").current
    assert classify(profile, "DELETE", "/logs-*", "", b"")[0].id == "wild"  # type: ignore[union-attr]
    assert classify(profile, "DELETE", "/_all", "", b"")[0].id == "wild"  # type: ignore[union-attr]
    route, _f, collection, _c = classify(profile, "DELETE", "/patients", "", b"")
    assert (route.id if route else None, collection) == ("one", "patients")
    assert classify(profile, "DELETE", "/_bulk", "", b"")[0] is None
    _r, facts, *_ = classify(profile, "GET", "/vectors/fetch", "ids=a&ids=b&ids=c", b"")
    assert facts == {"ids_count": 3, "has_ns": False}
    ndjson = b'{"index": {"_id": "1"}}\n{"a": 1}\n{"delete": {"_id": "2"}}\n'
    assert classify(profile, "POST", "/_bulk", "", ndjson)[0].id == "bulk-delete"  # type: ignore[union-attr]
    assert classify(profile, "POST", "/_bulk", "", ndjson.split(b"\n{\"delete")[0])[0].id == "bulk"  # type: ignore[union-attr]
    assert classify(profile, "POST", "/vectors/delete", "", b'{"deleteAll": true}')[0] is not None
    # JSON `true` is not the number 1
    assert classify(profile, "POST", "/vectors/delete", "", b'{"deleteAll": 1}')[0] is None


def test_classify_request_returns_the_decoded_parts(chroma: Profile) -> None:
    c = classify_request(chroma, "POST", f"{TD}/collections/{UUID}/get", {"x": ["1"]}, b'{"ids": ["a"]}')
    assert c.route is not None and c.route.kind == OpKind.GET
    assert c.parts.body == {"ids": ["a"]}
    assert c.parts.vars == {"tenant": "default_tenant", "database": "default_database", "collection_id": UUID}
    assert c.parts.query == {"x": ("1",)}


def test_profile_reload_applies_good_edits_and_keeps_the_last_good(tmp_path: Path) -> None:
    from addons.config import rulefiles

    rules = write_profile(tmp_path, GOOD)
    wf = load_profile(rules, "demo")
    assert classify(wf.current, "POST", "/c/x/q", "", b"{}")[0].kind == OpKind.SEARCH  # type: ignore[union-attr]
    write_profile(tmp_path, GOOD.replace("kind: search", "kind: export"))
    assert rulefiles.reload_all() == [wf]
    assert classify(load_profile(rules, "demo").current, "POST", "/c/x/q", "", b"{}")[0].kind == OpKind.EXPORT  # type: ignore[union-attr]
    write_profile(tmp_path, GOOD.replace("kind: search", "kind: sometimes"))
    assert rulefiles.reload_all() == []
    assert classify(load_profile(rules, "demo").current, "POST", "/c/x/q", "", b"{}")[0].kind == OpKind.EXPORT  # type: ignore[union-attr]
    assert wf.last_error is not None and "'sometimes'" in wf.last_error
