"""The same gateway behaviour on both runners: stock `mitmdump -s addons/chain.py` and the lean engine.

The rest of the suite runs on one runner (PHIGATE_TEST_RUNNER, default mitmdump); this module always
runs a representative subset on both and compares what a client and the backend see: the gateway's
own endpoints, identity refusals, policy decisions, the credential swap, a real chromadb session,
and the built-ins the lean engine keeps for a reverse proxy (h2c upgrade stripped, Alt-Svc
rewritten to the gateway's port).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import BACKEND_CREDENTIAL
from tests.support.servers import RUNNERS, Chroma, Gateway, Idp, RecordingUpstream, chroma_steps, http_call

pytestmark = pytest.mark.integration


def without_request_id(body: bytes) -> Any:
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict):
        doc.pop("request_id", None)
    return doc


def observe(gw: Gateway, upstream: RecordingUpstream, idp: Idp) -> list[Any]:
    """What clients and the backend see for a fixed set of requests (request ids removed)."""
    admin = {"Authorization": f"Bearer {idp.token('admin-1')}"}
    agent = {"Authorization": f"Bearer {idp.token('agent-1')}"}
    base = "/api/v2/tenants/default_tenant/databases/default_database/collections"
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", "/-/healthz", {}, None),
        ("GET", "/-/nothing-here", {}, None),
        ("GET", "/api/v2/heartbeat", {}, None),  # no token
        ("GET", "/api/v2/heartbeat", {"Authorization": "Bearer not-a-jwt"}, None),
        ("GET", "/api/v2/heartbeat", admin, None),
        ("GET", "/api/v2/heartbeat", {**admin, "Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings",
                                      "HTTP2-Settings": "AAMAAABkAAQAAP__"}, None),
        ("DELETE", f"{base}/keep_me", admin, None),  # no-drop
        ("DELETE", f"{base}/keep_me", agent, None),
        ("GET", "/api/v2/no/such/route", admin, None),  # unknown: default deny
    ]
    seen: list[Any] = []
    for method, path, headers, body in calls:
        before = len(upstream.requests)
        status, resp_headers, resp_body = http_call(method, f"{gw.url}{path}", body, headers)
        forwarded = upstream.requests[before:]
        seen.append({
            "call": f"{method} {path} {sorted(headers)}",
            "status": status,
            "www-authenticate": "www-authenticate" in resp_headers,
            "body": without_request_id(resp_body),
            "forwarded": [{"path": r["path"], "authorization": r["headers"].get("authorization"),
                           "x-chroma-token": r["headers"].get("x-chroma-token"),
                           "upgrade": r["headers"].get("upgrade"),
                           "http2-settings": r["headers"].get("http2-settings")} for r in forwarded],
        })
    return seen


def test_both_runners_answer_alike(idp: Idp, gateway_factory: Callable[..., Gateway]) -> None:
    results: dict[str, list[Any]] = {}
    for runner in RUNNERS:
        with RecordingUpstream() as upstream:
            gw = gateway_factory(upstream.url, runner=runner)
            results[runner] = observe(gw, upstream, idp)
            gw.stop()
    lean, stock = results["lean"], results["mitmdump"]
    assert lean == stock
    by_call = {r["call"].split(" [")[0] + f" #{i}": r for i, r in enumerate(lean)}
    statuses = [r["status"] for r in lean]
    assert statuses[:4] == [200, 404, 401, 401], by_call
    assert lean[2]["www-authenticate"] and lean[3]["www-authenticate"]
    # an allowed request reaches the backend with the backend's credential, never the caller's
    assert statuses[4] == 200
    assert [(f["authorization"], f["x-chroma-token"]) for f in lean[4]["forwarded"]] == [(None, BACKEND_CREDENTIAL)]
    # h2c upgrade attempts are stripped (disable_h2c): the backend never switches protocols
    assert statuses[5] == 200 and lean[5]["forwarded"][0]["upgrade"] is None
    assert lean[5]["forwarded"][0]["http2-settings"] is None
    # refusals never reach the backend
    assert statuses[6:] == [403, 403, 403]
    assert lean[6]["body"]["rule_id"] == "no-drop"
    assert all(r["forwarded"] == [] for r in lean[:4] + lean[6:])


def test_alt_svc_points_at_the_gateway_on_both_runners(idp: Idp, gateway_factory: Callable[..., Gateway]) -> None:
    # update_alt_svc: a backend advertising HTTP/3 on its own port must not lead clients around
    # the gateway.
    with RecordingUpstream() as upstream:
        upstream.headers["alt-svc"] = f'h3=":{upstream.port}"; ma=86400'
        for runner in RUNNERS:
            gw = gateway_factory(upstream.url, runner=runner)
            status, headers, _ = http_call("GET", f"{gw.url}/api/v2/heartbeat",
                                           headers={"Authorization": f"Bearer {idp.token('admin-1')}"})
            assert status == 200, runner
            assert headers["alt-svc"] == f'h3=":{gw.port}"; ma=86400', runner
            gw.stop()


def test_chromadb_session_on_the_lean_engine(chroma: Chroma, idp: Idp,
                                            gateway_factory: Callable[..., Gateway]) -> None:
    from tests.integration.test_chroma_session import comparable, session

    gw = gateway_factory(chroma.url, runner="lean")
    direct = chroma_steps(chroma.url, None, session("lean_direct"))
    via = chroma_steps(gw.url, idp.token("admin-1"), session("lean_gateway"))
    assert all(r["ok"] for r in direct), direct
    assert comparable(via[:-1], "lean_gateway") == comparable(direct[:-1], "lean_direct")
    assert via[-1]["ok"] is False  # the drop: denied by policy, as on stock mitmdump
