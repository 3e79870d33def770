"""Unit tests for the Classify addon (addons/classify.py) with mitmproxy's taddons and tflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from addons import classify as classify_mod
from addons.classify import Classify, CollectionNames
from addons.core import readiness
from addons.core.context import OpKind, Stage, context
from addons.gateway import Gateway
from tests.support.masking_fixtures import CHROMA_CAPTURES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = CHROMA_CAPTURES
TD = "/api/v2/tenants/default_tenant/databases/default_database"
UUID = "f43b389c-34ca-4a94-9620-85cc91eb9677"
OTHER = "3d2da786-98c9-4382-831a-a5e799dc6158"


class FakeLookup:
    """Stands in for the backend lookup (tflow's upstream is not a server): records the questions."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[tuple[str, dict[str, str], dict[str, str]]] = []

    async def name_of(self, spec: Any, collection_id: str, variables: Any, upstream: Any,
                      headers: Any) -> str | None:
        self.asked.append((collection_id, dict(variables), dict(headers)))
        return self.answers.get(collection_id)


@pytest.fixture
def addon() -> Iterator[Classify]:
    gateway, classify = Gateway(), Classify()
    classify.lookup = FakeLookup()  # type: ignore[assignment]
    with taddons.context(gateway, classify) as tctx:
        tctx.configure(classify, phigate_rules=str(ROOT / "rules"), phigate_profile="chroma")
        yield classify


def make_flow(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> http.HTTPFlow:
    f = tflow.tflow()
    f.request.method = method
    f.request.path = path
    f.request.headers = http.Headers(**{k.replace("-", "_"): v for k, v in (headers or {}).items()})
    f.request.raw_content = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
    return f


def answer(f: http.HTTPFlow, status: int, body: Any) -> None:
    f.response = http.Response.make(status, orjson.dumps(body), {"content-type": "application/json"})


async def test_query_is_search_with_facts(addon: Classify) -> None:
    f = make_flow("POST", f"{TD}/collections/{UUID}/query",
                  {"query_embeddings": [[0.1]], "n_results": 2, "where": {"ward": "cardio"}})
    await addon.request(f)
    op = context(f).operation
    assert f.response is None
    assert op is not None and op.kind == OpKind.SEARCH and op.route == "chroma.query"
    assert op.backend == "chroma" and op.collection_id == UUID
    assert op.collection is None  # not learned yet: no name, so no collection glob can match
    assert op.facts["has_filter"] is True and op.facts["n_results"] == 2
    parts = context(f).request_parts
    assert parts is not None and parts.body["where"] == {"ward": "cardio"}


async def test_collection_names_are_learned_from_backend_answers(addon: Classify) -> None:
    create = make_flow("POST", f"{TD}/collections", {"name": "patients_notes", "get_or_create": False})
    await addon.request(create)
    assert context(create).operation.collection == "patients_notes"  # type: ignore[union-attr]
    answer(create, 200, {"id": UUID, "name": "patients_notes", "metadata": None})
    addon.response(create)

    listing = make_flow("GET", f"{TD}/collections")
    await addon.request(listing)
    answer(listing, 200, [{"id": OTHER, "name": "search_test"}])
    addon.response(listing)

    for cid, name in ((UUID, "patients_notes"), (OTHER, "search_test")):
        get = make_flow("POST", f"{TD}/collections/{cid}/get", {"ids": ["p1"]})
        await addon.request(get)
        op = context(get).operation
        assert op is not None and (op.collection, op.collection_id, op.kind) == (name, cid, OpKind.GET)


@pytest.mark.parametrize("status", [400, 404, 409, 500])
async def test_nothing_is_learned_from_failed_answers(addon: Classify, status: int) -> None:
    create = make_flow("POST", f"{TD}/collections", {"name": "patients_x"})
    await addon.request(create)
    answer(create, status, {"id": UUID, "name": "patients_x"})
    addon.response(create)
    assert addon.names.name_of(UUID) is None


async def test_a_caller_cannot_teach_names(addon: Classify) -> None:
    # The rename is only learned once the backend accepted it (2xx); a refused rename teaches nothing,
    # and a request answered by the gateway itself (a refusal) never reaches the learning step.
    addon.names.learn(UUID, "scratch")
    rename = make_flow("PUT", f"{TD}/collections/{UUID}", {"new_name": "patients_vip"})
    await addon.request(rename)
    answer(rename, 409, {"error": "exists"})
    addon.response(rename)
    assert addon.names.name_of(UUID) == "scratch"

    refused = make_flow("PUT", f"{TD}/collections/{UUID}", {"new_name": "patients_vip"})
    await addon.request(refused)
    answer(refused, 200, {})
    context(refused).answered_by_gateway = True
    addon.response(refused)
    assert addon.names.name_of(UUID) == "scratch"

    accepted = make_flow("PUT", f"{TD}/collections/{UUID}", {"new_name": "renamed"})
    await addon.request(accepted)
    answer(accepted, 200, {})
    addon.response(accepted)
    assert addon.names.name_of(UUID) == "renamed"


async def test_learning_from_a_real_capture_sequence(addon: Classify) -> None:
    if not FIXTURES.is_dir():
        pytest.skip("Chroma captures not on this machine")
    seen: dict[int, Any] = {}
    for line in (FIXTURES / "index.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if not (FIXTURES / entry["file"]).exists():
            continue  # the index lists a few exchanges whose files were not kept
        doc = json.loads((FIXTURES / entry["file"]).read_text())
        req = doc.get("request_body") or {}
        f = make_flow(doc["method"], doc["path"], req.get("json"))
        await addon.request(f)
        resp = (doc.get("response_body") or {}).get("json")
        answer(f, doc["status"], resp)
        addon.response(f)
        seen[doc["seq"]] = context(f).operation
    assert seen[10].collection == "patients_notes"  # query, after create (006) taught the name
    assert seen[14].kind == OpKind.EXPORT and seen[14].facts["limit"] == 3
    assert seen[43].collection == "search_test" and seen[43].kind == OpKind.SEARCH


async def test_unknown_route_is_classified_not_refused(addon: Classify) -> None:
    f = make_flow("GET", "/api/v1/collections")
    await addon.request(f)
    op = context(f).operation
    assert f.response is None
    assert op is not None and op.kind == OpKind.UNKNOWN and op.route == "unknown"


async def test_canonical_target_is_what_is_forwarded(addon: Classify) -> None:
    f = make_flow("GET", "/api//v2/./x/../heartbeat?probe=1")
    await addon.request(f)
    assert f.request.path == "/api/v2/heartbeat?probe=1"
    assert context(f).operation.route == "chroma.heartbeat"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "detail"),
    [
        ("POST", f"{TD}/collections/{UUID}%2F..%2F..%2F..%2Freset", None, {}, "encoded slash"),
        ("POST", "/api/v2/%2e%2e/v2/reset", None, {}, "encoded dot segment"),
        ("GET", "/api/v2/heart%00beat", None, {}, "control byte"),
        ("POST", f"{TD}/collections/{UUID}/get", {"ids": ["a"]}, {"X-HTTP-Method-Override": "DELETE"},
         "method-override header"),
        ("POST", f"{TD}/collections/{UUID}/get?_method=DELETE", {"ids": ["a"]}, {}, "method-override parameter"),
        ("POST", f"{TD}/collections/{UUID}/get", {"ids": ["a"]}, {"content-encoding": "gzip"},
         "Content-Encoding 'gzip' is not accepted"),
        ("POST", f"{TD}/collections/{UUID}/get", b'{"where": {"a": 1}, "where": null}', {}, "duplicate key"),
        ("POST", f"{TD}/collections/{UUID}/get", b"ids=p1", {"content-type": "application/x-www-form-urlencoded"},
         "not valid JSON"),
    ],
)
async def test_ambiguous_requests_get_400(addon: Classify, method: str, path: str, body: Any,
                                    headers: dict[str, str], detail: str) -> None:
    f = make_flow(method, path, None if isinstance(body, bytes) else body, headers,
                  raw=body if isinstance(body, bytes) else None)
    await addon.request(f)
    assert f.response is not None and f.response.status_code == 400
    payload = f.response.json()
    assert payload["error"] == "ambiguous_request" and detail in payload["detail"]
    refusal = context(f).refusal
    assert refusal is not None and refusal.stage == Stage.CLASSIFY
    assert context(f).operation is None


async def test_settled_flows_are_left_alone(addon: Classify) -> None:
    f = make_flow("GET", "/api/v2/heart%00beat")
    f.response = http.Response.make(401, b"{}")
    await addon.request(f)
    assert f.response.status_code == 401 and context(f).operation is None


async def test_streamed_body_is_refused(addon: Classify) -> None:
    f = make_flow("POST", f"{TD}/collections/{UUID}/get")
    f.request.raw_content = None
    await addon.request(f)
    assert f.response is not None and f.response.status_code == 413


async def test_hook_exception_is_a_refusal(addon: Classify, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("patient John Smith")

    monkeypatch.setattr(classify_mod, "classify_request", boom)
    f = make_flow("POST", f"{TD}/collections/{UUID}/get", {"ids": ["a"]})
    await addon.request(f)
    assert f.response is not None and f.response.status_code == 500
    assert context(f).refusal.stage == Stage.CLASSIFY  # type: ignore[union-attr]
    assert "John Smith" not in f.response.text


async def test_a_failure_to_learn_never_breaks_the_response(addon: Classify) -> None:
    create = make_flow("POST", f"{TD}/collections", {"name": "p"})
    await addon.request(create)
    create.response = http.Response.make(200, b"not json")
    addon.response(create)
    assert create.response.content == b"not json" and len(addon.names) == 0


def test_bad_profile_stops_configuration(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "chroma.yaml").write_text("backend: chroma\nroutes: []\n")
    gateway, classify = Gateway(), Classify()
    with taddons.context(gateway, classify) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"Cannot load the backend profile.*routes"):
            tctx.configure(classify, phigate_rules=str(tmp_path), phigate_profile="chroma")


def test_collection_names_are_bounded() -> None:
    names = CollectionNames(limit=2)
    names.learn("a", "1")
    names.learn("b", "2")
    names.learn("c", "3")
    assert (names.name_of("a"), names.name_of("c"), len(names)) == (None, "3", 2)


def test_readiness_check_says_what_is_not_loaded() -> None:
    def broken() -> None:
        raise FileNotFoundError("rules/profiles/chroma.yaml")

    assert readiness.loaded_check("backend profile", broken)() == "backend profile not loaded (FileNotFoundError)"
    assert readiness.loaded_check("backend profile", lambda: None)() is None


async def test_unknown_ids_are_looked_up_from_the_backend_once(addon: Classify) -> None:
    lookup = FakeLookup({UUID: "patients_notes"})
    addon.lookup = lookup  # type: ignore[assignment]
    for _ in range(2):
        f = make_flow("POST", f"{TD}/collections/{UUID}/get", {"ids": ["p1"]})
        await addon.request(f)
        assert context(f).operation.collection == "patients_notes"  # type: ignore[union-attr]
    assert len(lookup.asked) == 1  # learned after the first answer
    cid, variables, headers = lookup.asked[0]
    assert cid == UUID and variables["database"] == "default_database"
    assert "authorization" not in headers  # never the caller's credential
    # an id the backend does not know stays unnamed (default deny downstream)
    f = make_flow("POST", f"{TD}/collections/{OTHER}/get", {"ids": ["p1"]})
    await addon.request(f)
    assert context(f).operation.collection is None and context(f).operation.collection_id == OTHER  # type: ignore[union-attr]


class _Backend:
    """A loopback HTTP server answering the by-id lookup, recording what it was sent."""

    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        import http.server
        import threading

        self.seen: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, body = answers.get(self.path, (404, {"error": "NotFound"}))
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def test_name_lookup_against_a_server() -> None:
    from addons.config.profile_model import CollectionLookup
    from addons.request.name_lookup import NameLookup
    from addons.request.upstream_call import Upstream

    spec = CollectionLookup("/t/{tenant}/d/{database}/by-id/{collection_id}", "id", "name")
    by_id = f"/t/default_tenant/d/my%20db/by-id/{UUID}"
    backend = _Backend({
        by_id: (200, {"id": UUID, "name": "patients_notes"}),
        f"/t/default_tenant/d/my%20db/by-id/{OTHER}": (200, {"id": UUID, "name": "patients_notes"}),
    })
    try:
        lookup, up = NameLookup(timeout_s=5), Upstream("http", "127.0.0.1", backend.port)
        variables = {"tenant": "default_tenant", "database": "my db"}
        name = await lookup.name_of(spec, UUID, {**variables, "collection_id": UUID}, up, {"x-chroma-token": "svc"})
        assert name == "patients_notes"
        assert backend.seen[0][0] == by_id and backend.seen[0][1]["x-chroma-token"] == "svc"
        # an answer about another id is not trusted
        assert await lookup.name_of(spec, OTHER, {**variables, "collection_id": OTHER}, up, {}) is None
        # a miss is remembered for a while: no second request for the same unknown id
        missing = {**variables, "collection_id": "0" * 8}
        assert await lookup.name_of(spec, "0" * 8, missing, up, {}) is None
        count = len(backend.seen)
        assert await lookup.name_of(spec, "0" * 8, missing, up, {}) is None
        assert len(backend.seen) == count
        # nothing listening: no name, promptly
        dead = Upstream("http", "127.0.0.1", 9)
        assert await lookup.name_of(spec, UUID, {**variables, "collection_id": "x"}, dead, {}) is None
    finally:
        backend.server.shutdown()
        backend.server.server_close()
