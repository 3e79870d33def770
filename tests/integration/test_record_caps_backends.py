"""Records per answer on every backend profile: the clients' own captured requests through the
gateway, answered by the recorded-response upstreams (tests/support/recorded_upstream.py).

With a cap of one record for agents (who may not export), every search and get whose recorded
answer holds more is refused as an export, and where the backend takes a limit (Qdrant `limit`,
Pinecone `topK`/`top_k`, Milvus `limit`, OpenSearch `size`, mem0 `limit`) it reaches the backend
lowered to cap + 1. Weaviate's GraphQL limit is not rewritten (its body is a GraphQL document):
there the count alone decides.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from addons.config.profiles import classify_request, compile_profile
from addons.config.record_count import count_records
from addons.config.rulefiles import parse_yaml
from tests.integration.test_backend_gateway import rules_dir
from tests.support.recorded_upstream import BACKENDS, FIXTURES, RecordedUpstream
from tests.support.servers import ROOT, Gateway, Idp, http_call

pytestmark = pytest.mark.integration

POLICY = """\
roles:
  claim: groups
  map: {agents: agent, clinicians: clinician}
max_records:
  - {id: one-per-answer, roles: [agent], max: 1}
rules:
  - {id: health-and-admin, roles: ["*"], operations: [health, admin], action: allow}
  - {id: agents-read, roles: [agent], operations: [search, get], action: allow}
"""
PLACEHOLDER = "caller-token-for-capture"


def capped_reads(backend: str, upstream: RecordedUpstream) -> list[tuple[dict[str, Any], Any, int]]:
    """(capture, route, records in its recorded answer) for each captured search or get."""
    file = ROOT / "rules" / "profiles" / f"{backend}.yaml"
    profile = compile_profile(file, parse_yaml(file, file.read_text()))
    out = []
    for cap in json.loads((FIXTURES / backend / "captures.json").read_text()):
        path, _, query = cap["path"].partition("?")
        body = cap["body"].encode() if isinstance(cap.get("body"), str) else None
        route = classify_request(profile, cap["method"], path, query, body).route
        recorded = upstream.match(cap["method"], cap["path"])
        if route is None or route.kind.value not in ("search", "get") or recorded is None:
            continue
        out.append((cap, route, count_records(route, json.loads(recorded.body))))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_answers_over_the_cap_are_refused_and_limits_lowered(backend: str, idp: Idp, tmp_path: Path,
                                                             gateway_factory: Callable[..., Gateway]) -> None:
    token = idp.token("agent-1")
    with RecordedUpstream(backend) as up:
        gw = gateway_factory(up.url, phigate_profile=backend,
                             phigate_rules=str(rules_dir(tmp_path / backend, POLICY)))
        reads = capped_reads(backend, up)
        assert any(n > 1 for _, _, n in reads), f"{backend}: no recorded answer above the cap"
        for cap, route, records in reads:
            up.clear()
            headers = {k: v.replace(PLACEHOLDER, token) for k, v in cap["headers"].items()
                       if k not in ("content-length", "host")}
            body = cap["body"].encode() if isinstance(cap.get("body"), str) else None
            status, _, answer = http_call(cap["method"], gw.url + cap["path"], body, headers)
            what = f"{backend} {cap['op']} ({route.id}, {records} records)"
            if records > 1:
                assert status == 403, f"{what}: {answer[:300]!r}"
                refusal = json.loads(answer)
                assert (refusal["error"], refusal["max_records"]) == ("too_many_records", 1), what
            else:
                assert status == 200, f"{what}: {answer[:300]!r}"
            [sent] = up.requests()
            if route.limit and route.body == "json" and sent.body:
                # The backend was asked for at most cap + 1 records, whatever the client asked.
                limits = [s for s in route.limit if s.startswith("$")]
                doc = sent.json
                for sel in limits:
                    found = _values(doc, sel)
                    assert found and all(v == 2 for v in found), f"{what}: {sel} = {found}"


def _values(doc: Any, path: str) -> list[Any]:
    from addons.config.profiles import compile_jsonpath

    return compile_jsonpath("test", None, path)(doc)
