"""Classification and policy in stock mitmdump: what reaches the backend is exactly what was judged.

A recording upstream stands in for Chroma so each test can show what was forwarded (the canonical
path, the original body) and that refused requests never arrived at all.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import BACKEND_CREDENTIAL
from tests.support.servers import Gateway, Idp, RecordingUpstream, http_call

pytestmark = pytest.mark.integration

TD = "/api/v2/tenants/default_tenant/databases/default_database"
UUID = "0b6c2a44-8c43-4b35-9c1e-5c7a7a3c2f10"


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream({f"POST {TD}/collections": (200, {"id": UUID, "name": "patients_int"})}) as up:
        yield up


@pytest.fixture
def gw(upstream: RecordingUpstream, gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(upstream.url)


def call(gw: Gateway, idp: Idp, method: str, path: str, body: Any = None, client: str = "admin-1",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    status, _, raw = http_call(method, gw.url + path, body,
                               headers={"Authorization": f"Bearer {idp.token(client)}", **(headers or {})})
    return status, json.loads(raw) if raw else {}


def test_the_canonical_path_is_what_is_forwarded(gw: Gateway, idp: Idp, upstream: RecordingUpstream) -> None:
    status, _ = call(gw, idp, "GET", "/api//v2/./x/../heartbeat?probe=1")
    assert status == 200
    assert [r["path"] for r in upstream.requests] == ["/api/v2/heartbeat?probe=1"]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "detail"),
    [
        ("POST", f"{TD}/collections/{UUID}%2F..%2F..%2F..%2F..%2F..%2Freset", {}, {}, "encoded slash"),
        ("POST", "/api/v2/%2e%2e/v2/reset", {}, {}, "encoded dot segment"),
        ("GET", "/api/v2/heart%00beat", None, {}, "control byte"),
        ("POST", f"{TD}/collections/{UUID}/get", {"ids": ["a"]}, {"X-HTTP-Method-Override": "DELETE"},
         "method-override header"),
        ("POST", f"{TD}/collections/{UUID}/get", b'{"ids": ["a"], "ids": null}', {}, "duplicate key"),
        ("POST", f"{TD}/collections/{UUID}/get", gzip.compress(b'{"ids": ["a"]}'),
         {"Content-Encoding": "gzip"}, "send the request body uncompressed"),
        ("POST", f"{TD}/collections/{UUID}/get", b"ids=a", {"Content-Type": "application/x-www-form-urlencoded"},
         "not valid JSON"),
    ],
)
def test_requests_with_two_readings_are_400_and_never_forwarded(
        gw: Gateway, idp: Idp, upstream: RecordingUpstream, method: str, path: str, body: Any,
        headers: dict[str, str], detail: str) -> None:
    status, doc = call(gw, idp, method, path, body, headers=headers)
    assert status == 400 and doc["error"] == "ambiguous_request" and detail in doc["detail"], doc
    assert upstream.requests == []


def test_unknown_route_is_denied(gw: Gateway, idp: Idp, upstream: RecordingUpstream) -> None:
    status, doc = call(gw, idp, "GET", "/api/v1/collections")
    assert status == 403 and doc["rule_id"] is None and "unknown operation" in doc["reason"]
    assert upstream.requests == []


def test_collection_ids_resolve_only_after_the_backend_named_them(
        gw: Gateway, idp: Idp, upstream: RecordingUpstream) -> None:
    get = {"ids": ["p1"], "where": None}
    status, doc = call(gw, idp, "POST", f"{TD}/collections/{UUID}/get", get)
    assert status == 403 and "not known to the gateway" in doc["reason"]
    # The gateway asked the backend (with its own credential) and got no name: nothing else arrived.
    assert [(r["method"], r["path"]) for r in upstream.requests] == [
        ("GET", f"{TD}/collections/by-id/{UUID}")]
    lookup_headers = upstream.requests[0]["headers"]
    assert lookup_headers["x-chroma-token"] == BACKEND_CREDENTIAL and "authorization" not in lookup_headers
    status, _ = call(gw, idp, "POST", f"{TD}/collections", {"name": "patients_int", "get_or_create": True})
    assert status == 200
    status, _ = call(gw, idp, "POST", f"{TD}/collections/{UUID}/get", get)
    assert status == 200
    forwarded = upstream.requests[-1]
    assert forwarded["path"] == f"{TD}/collections/{UUID}/get" and json.loads(forwarded["body"]) == get


def test_an_id_learned_elsewhere_is_looked_up_from_the_backend(
        idp: Idp, gateway_factory: Callable[..., Gateway]) -> None:
    # Another worker (or this one before a restart) saw the create; this process asks the backend.
    answers = {f"GET {TD}/collections/by-id/{UUID}": (200, {"id": UUID, "name": "patients_int"})}
    with RecordingUpstream(answers) as up:
        gw = gateway_factory(up.url)
        for _ in range(2):
            status, _ = call(gw, idp, "POST", f"{TD}/collections/{UUID}/get", {"ids": ["p1"]}, client="clin-1")
            assert status == 200
        assert [r["method"] for r in up.requests] == ["GET", "POST", "POST"]  # one lookup, then learned


def test_policy_outcomes_reach_the_client(gw: Gateway, idp: Idp, upstream: RecordingUpstream) -> None:
    call(gw, idp, "POST", f"{TD}/collections", {"name": "patients_int"})
    # an agent may search with a filter, may not read by id
    status, _ = call(gw, idp, "POST", f"{TD}/collections/{UUID}/query",
                     {"query_embeddings": [[0.1, 0.2]], "n_results": 1, "where": {"ward": "x"}}, client="agent-1")
    assert status == 200
    status, doc = call(gw, idp, "POST", f"{TD}/collections/{UUID}/get", {"ids": ["p1"]}, client="agent-1")
    assert status == 403 and doc["rule_id"] is None
    # a drop is denied by rule, with its reason
    before = len(upstream.requests)
    status, doc = call(gw, idp, "POST", f"{TD}/collections/{UUID}/delete", {"ids": None, "where": None})
    assert status == 403 and doc["rule_id"] == "no-drop" and "disabled" in doc["reason"]
    assert len(upstream.requests) == before


FAULT_SCRIPT = '''
"""Test-only: make one enforcing step raise, as a bug would (loaded after addons/chain.py)."""
import os

# Not `import addons.x`: a module-level name `addons` is what mitmproxy's script loader iterates.
from addons import classify as _classify
from addons import policy as _policy


def boom(*args, **kwargs):
    raise RuntimeError("injected fault")


if os.environ["PHIGATE_FAULT"] == "classify":
    _classify.classify_request = boom
else:
    _policy.PolicySet.decide = boom
'''


@pytest.mark.parametrize(("fault", "stage"), [("classify", "classify"), ("policy", "policy")])
def test_a_raising_hook_in_stock_mitmdump_refuses_and_nothing_reaches_the_backend(
        idp: Idp, upstream: RecordingUpstream, tmp_path: Any, fault: str, stage: str) -> None:
    import os

    from tests.conftest import gateway_options

    script = tmp_path / "fault.py"
    script.write_text(FAULT_SCRIPT)
    gw = Gateway(upstream.url, gateway_options(idp, tmp_path), runner="mitmdump", args=["-s", str(script)],
                 env={**os.environ, "PHIGATE_FAULT": fault, "PHIGATE_TEST_BACKEND_CREDENTIAL": BACKEND_CREDENTIAL,
                      "PHIGATE_TOKEN_KEYS": "k1=a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="})
    with gw.start():
        status, doc = call(gw, idp, "POST", f"{TD}/collections", {"name": "patients_int"})
        assert status == 500 and doc["error"] == "gateway_error" and stage in doc["detail"], doc
        status, _ = call(gw, idp, "GET", "/api/v2/heartbeat")
        assert status == 500
    assert upstream.requests == []
    assert "injected fault" not in gw.proc.log()  # only the exception type is logged
