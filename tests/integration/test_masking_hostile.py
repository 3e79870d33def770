"""A masked role in front of a backend that misbehaves: everything it sends reaches the caller only as
the allow-list lets it, or as the gateway's own JSON error. The backend is a raw-socket server
serving canned bytes (tests/support/hostile_upstream.py); the gateway, the OpenID provider and the
audit ledger are real."""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile_upstream import Answer, HostileUpstream
from tests.support.servers import ROOT, Gateway, Idp, free_port

pytestmark = pytest.mark.integration

T = "/api/v2/tenants/default_tenant/databases/default_database/collections"
UUID = "0f0f0f0f-1111-2222-3333-444444444444"
QUERY = f"{T}/{UUID}/query"
BY_ID = f"{T}/by-id/{UUID}"
COLLECTION = {"id": UUID, "name": "patients_hostile", "configuration_json": {}, "metadata": None,
              "dimension": 2, "tenant": "default_tenant", "database": "default_database", "log_position": 0,
              "version": 0}
# Values no detector is asked to recognise: only the allow-list keeps them from the caller.
PHI = ("Zephyrine Quarrington", "Oswin Thackeray-Brull", "MRN-8675309", "8675309", "431-55-0192",
       "zq@clinic-example.org", "1931-02-29", "17 Wrenfield Close")
# A role that may see no PHI: nothing passes in the clear; mrn becomes a token (a handle).
READER_RULES = """version: 2
roles:
  clinician: {default: clear}
  "*": {default: redact, text: redact}
subjects: [mrn]
rules:
  - id: readers-tokenize-mrn
    roles_except: [clinician]
    fields: [mrn]
    operator: tokenize
"""


def query_answer(metadatas: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    n = len(metadatas)
    return {"ids": [[f"r{i}" for i in range(n)]], "embeddings": None, "documents": [[None] * n],
            "uris": None, "data": None, "metadatas": [metadatas], "distances": [[0.1] * n],
            "include": ["metadatas", "documents", "distances"], **extra}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    out = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", out)
    (out / "masking.yaml").write_text(READER_RULES)
    return out


@pytest.fixture
def upstream() -> Iterator[HostileUpstream]:
    with HostileUpstream({BY_ID: Answer(200, COLLECTION)}) as up:
        yield up


@pytest.fixture
def gateway(upstream: HostileUpstream, rules_dir: Path, gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(upstream.url, phigate_rules=str(rules_dir))


def call(gw: Gateway, token: str, path: str = QUERY) -> tuple[int, list[tuple[str, str]], bytes]:
    host, port = gw.url.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = orjson.dumps({"query_embeddings": [[0.1, 0.2]], "n_results": 2, "where": {"ward": "cardio"},
                         "include": ["metadatas", "documents", "distances"]})
    try:
        conn.request("POST" if path == QUERY else "GET", path, body=body if path == QUERY else None,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def leaked(status: int, headers: list[tuple[str, str]], body: bytes) -> list[str]:
    text = f"{status}\n" + "\n".join(f"{k}: {v}" for k, v in headers) + "\n" + body.decode("utf-8", "replace")
    return [p for p in PHI if p in text]


def ledger_leaks(audit_dir: Path) -> list[str]:
    found = []
    for f in audit_dir.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            found += [f"{f.name}: {p}" for p in PHI if p.encode() in data]
    return found


# -- each way PHI got through a deny-list -------------------------------------------------------------


def test_unlisted_keys_in_any_spelling_are_masked(gateway: Gateway, upstream: HostileUpstream, idp: Idp) -> None:
    upstream.answers[QUERY] = Answer(200, query_answer([
        {"MRN": "8675309", "Patient_Name": "Zephyrine Quarrington", "DOB": "1931-02-29", "patient": PHI[1],
         "home_phone": "431-55-0192", "ssn_number": "431-55-0192", "extra": {"patient": PHI[7]}}]))
    status, headers, body = call(gateway, idp.token("agent-1"))
    assert status == 200, body
    meta = orjson.loads(body)["metadatas"][0][0]
    assert meta["MRN"].startswith("tok_mrn_")  # the mrn rule, whatever the spelling
    assert meta["Patient_Name"] == "[REDACTED:FIELD]" and meta["extra"] == "[REDACTED:FIELD]"
    assert leaked(status, headers, body) == []
    # A role that sees records as stored still does (the allow-list is per role).
    status, _, body = call(gateway, idp.token("clin-1"))
    assert status == 200 and orjson.loads(body)["metadatas"][0][0]["Patient_Name"] == PHI[0]


@pytest.mark.parametrize("answer", [
    pytest.param(Answer(200, {"ids": ["r0"], "metadatas": [{"mrn": "8675309", "note": PHI[0]}], "documents": [PHI[1]],
                              "include": ["metadatas"]}), id="get-shape-on-query"),
    pytest.param(Answer(200, orjson.dumps(orjson.dumps(query_answer([{"name": PHI[0]}])).decode())),
                 id="double-encoded"),
    pytest.param(Answer(200, query_answer([{"mrn": "8675309"}], debug={"patient": PHI[0]})),
                 id="unknown-top-level-key"),
    pytest.param(Answer(200, query_answer([orjson.dumps({"name": PHI[0]}).decode()])), id="string-for-object"),
])
def test_a_response_off_its_declared_shape_is_refused(gateway: Gateway, upstream: HostileUpstream, idp: Idp,
                                                      answer: Answer) -> None:
    upstream.answers[QUERY] = Answer(answer.status, answer.body, {"Content-Type": "application/json"})
    status, headers, body = call(gateway, idp.token("agent-1"))
    assert status == 502 and orjson.loads(body)["error"] == "unexpected_shape"
    assert leaked(status, headers, body) == []


def test_headers_error_bodies_and_bodiless_answers(gateway: Gateway, upstream: HostileUpstream, idp: Idp,
                                                   tmp_path: Path) -> None:
    token = idp.token("agent-1")
    upstream.answers[QUERY] = Answer(200, query_answer([{"mrn": "8675309"}]), {
        "X-Debug-Record": PHI[0], "Warning": f'199 - "MRN-8675309 {PHI[1]}"', "Cache-Control": "max-age=60",
        "Content-Type": "application/json; name=Zephyrine Quarrington"})
    status, headers, body = call(gateway, token)
    names = {k.lower() for k, _ in headers}
    assert status == 200 and "x-debug-record" not in names and "warning" not in names
    assert leaked(status, headers, body) == []
    # Error bodies: the gateway's error, with only Chroma's error class passing.
    upstream.answers[QUERY] = Answer(400, {"error": "InvalidArgumentError",
                                           "message": 'bad where: {"mrn": "8675309"} for Zephyrine Quarrington'})
    status, headers, body = call(gateway, token)
    out = orjson.loads(body)
    assert status == 400 and out["error"] == "InvalidArgumentError" and out["status"] == 400 and out["request_id"]
    upstream.answers[QUERY] = Answer(500, f"patient {PHI[0]} not found".encode(), {"Content-Type": "text/plain"})
    status, headers, body = call(gateway, token)
    assert status == 500 and orjson.loads(body)["error"] == "upstream_error" and leaked(status, headers, body) == []
    # An upstream 101 would make a tunnel nothing masks.
    upstream.answers[QUERY] = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                               + PHI[0].encode())
    status, headers, body = call(gateway, token)
    assert status == 502 and orjson.loads(body)["error"] == "upgrade_refused" and leaked(status, headers, body) == []
    # A 204 carries no body on HTTP/1 (the bytes after its head are not read as one).
    upstream.answers[QUERY] = Answer(204, PHI[0].encode(), length=False)
    status, headers, body = call(gateway, token)
    assert status in (204, 502) and leaked(status, headers, body) == []


@pytest.mark.parametrize(("raw", "reason"), [
    (f"HTTP/1.1 2OO OK\r\nX: {PHI[0]}\r\n\r\n".encode(), "upstream_protocol_error"),
    (f"<html>{PHI[0]} MRN-8675309</html>\r\n\r\n".encode(), "upstream_protocol_error"),
    (Answer(200, query_answer([{"mrn": "8675309"}]), trailers={"X-Patient": PHI[0]}).raw(), "upstream_trailers"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"name\": \"" + PHI[0].encode(),
     "upstream_reset"),
])
def test_a_failed_exchange_is_the_gateways_json_error_and_a_classified_audit_reason(
        gateway: Gateway, upstream: HostileUpstream, idp: Idp, tmp_path: Path, raw: bytes, reason: str) -> None:
    upstream.answers[QUERY] = raw
    status, headers, body = call(gateway, idp.token("agent-1"))
    out = orjson.loads(body)
    assert status == 502 and out["error"] == reason and len(out["request_id"]) == 32, body
    assert not any(k.lower() == "server" and "mitmproxy" in v for k, v in headers)
    assert leaked(status, headers, body) == []
    gateway.stop()
    assert ledger_leaks(tmp_path / "audit") == []
    assert reason.encode() in b"".join(f.read_bytes() for f in (tmp_path / "audit").rglob("wal-*.ndjson"))


def test_a_dead_backend_is_a_json_502_with_the_request_id(gateway_factory: Callable[..., Gateway], idp: Idp,
                                                          rules_dir: Path, tmp_path: Path) -> None:
    gw = gateway_factory(f"http://127.0.0.1:{free_port()}", phigate_rules=str(rules_dir))
    status, headers, body = call(gw, idp.token("agent-1"), "/api/v2/heartbeat")
    out = orjson.loads(body)
    assert status == 502 and out["error"] == "upstream_unavailable" and out["request_id"]
    assert not any(k.lower() == "server" for k, _ in headers)
    gw.stop()
    events = [orjson.loads(line) for f in (tmp_path / "audit").rglob("wal-*.ndjson")
              for line in f.read_bytes().splitlines() if b'"upstream_unavailable' in line]
    assert events and b"Connect call failed" not in b"".join(
        f.read_bytes() for f in (tmp_path / "audit").rglob("*") if f.is_file())


# -- the property ------------------------------------------------------------------------------------

phi = st.sampled_from(PHI)
keys = st.one_of(st.sampled_from(["mrn", "MRN", "Patient_Name", "patient-name", "patientName", "ward", "dob",
                                  "note", "debug", "error", "message", "id", "ids", "metadatas", "documents"]),
                 st.text("abcdefghijklmnopqrstuvwxyz_-ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12))
scalars = st.one_of(phi, st.integers(-2**53, 2**53), st.none(), st.booleans(), st.floats(allow_nan=False))
json_values = st.recursive(scalars,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                           max_leaves=8)
records = st.dictionaries(keys, json_values, max_size=4)
bodies = st.one_of(
    records.map(lambda m: query_answer([m])),  # the declared shape, any keys
    st.builds(lambda m, k, v: query_answer([m], **{k: v}), records, keys, json_values),  # plus a key
    json_values,  # any JSON at all
    json_values.map(lambda v: orjson.dumps(v).decode()),  # JSON inside a JSON string
)
answers = st.builds(
    lambda status, body, hdrs, trailers: Answer(status, body, {"Content-Type": "application/json", **hdrs},
                                                trailers),
    st.sampled_from([200, 200, 400, 404, 500, 503]), bodies,
    st.dictionaries(st.sampled_from(["X-Debug-Record", "Warning", "Vary", "Cache-Control", "Content-Language",
                                     "Chroma-Trace-Id", "Retry-After"]), phi, max_size=3),
    st.one_of(st.just({}), st.dictionaries(st.just("X-Patient"), phi, max_size=1)),
)
raws = st.one_of(answers.map(Answer.raw), phi.map(lambda p: f"{p}\r\n\r\n".encode()))


def test_a_reader_never_receives_a_seeded_phi_string(gateway: Gateway, upstream: HostileUpstream, idp: Idp,
                                                     tmp_path: Path) -> None:
    token = idp.token("agent-1")

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw=raws)
    def check(raw: bytes) -> None:
        upstream.answers[QUERY] = raw
        status, headers, body = call(gateway, token)
        assert leaked(status, headers, body) == [], (raw, status, headers, body)

    check()
    gateway.stop()
    assert ledger_leaks(tmp_path / "audit") == []
