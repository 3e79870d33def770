"""The allow-list parts of the Masking addon, in process (taddons/tflow): unlisted keys, shapes,
headers, error bodies, bodiless statuses, trailers and failed exchanges, for a masked role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addons.audit import build_event
from addons.config.masking_rules import compile_masking, field_key
from addons.config.rulefiles import ConfigError, parse_yaml
from addons.core import upstream_errors
from addons.core.context import Caller, Operation, OpKind, context
from addons.gateway import Gateway
from addons.masking import Masking
from addons.phi import headers
from tests.support.masking_fixtures import OLD_KEY, TEST_KEY, chroma_profile

PATH = "/api/v2/tenants/t/databases/d/collections/c0ffee00-0000-0000-0000-000000000000/query"
AGENT = frozenset({"agent"})
CLINICIAN = frozenset({"clinician"})
PHI = ("Zephyrine Quarrington", "MRN-8675309", "431-55-0192", "zq@clinic-example.org")
RULES = """version: 2
roles:
  clinician: {default: clear}
  "*": {default: redact, text: redact}
rules:
  - {id: clear-ward, roles_except: [clinician], fields: [ward, Care-Team], operator: clear}
  - {id: tokenize-mrn, roles_except: [clinician], fields: [mrn], operator: tokenize}
"""


@pytest.fixture
def masking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Masking]:
    monkeypatch.setenv("PHIGATE_TOKEN_KEYS", f"*k1={TEST_KEY} k0={OLD_KEY}")
    (tmp_path / "masking.yaml").write_text(RULES)
    m = Masking(chroma_profile())
    with taddons.context(Gateway(), m) as tctx:
        tctx.configure(m, phigate_rules=str(tmp_path), phigate_profile="chroma")
        yield m


def query(metadatas: list[Any], **extra: Any) -> dict[str, Any]:
    n = len(metadatas)
    return {"ids": [[f"r{i}" for i in range(n)]], "documents": [[None] * n], "metadatas": [metadatas],
            "distances": [[0.5] * n], "include": ["metadatas"], **extra}


def flow(body: bytes | Any, roles: frozenset[str] | None = AGENT, status: int = 200,
         hdrs: dict[str, str] | None = None, route: str = "chroma.query", method: str = "POST") -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request.method, f.request.path = method, PATH
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    f.response = http.Response.make(status, b"")
    f.response.raw_content = raw
    f.response.headers = http.Headers(content_type="application/json", content_length=str(len(raw)))
    for k, v in (hdrs or {}).items():
        f.response.headers[k] = v
    c = context(f)
    if roles is not None:
        c.identity = Caller("sub", "iss", roles, "jti", 0)
    c.operation = Operation("chroma", OpKind.SEARCH, route, method, PATH)
    return f


def respond(m: Masking, f: http.HTTPFlow) -> http.HTTPFlow:
    m.responseheaders(f)
    m.response(f)
    return f


def text_of(f: http.HTTPFlow) -> str:
    assert f.response is not None
    return "\n".join(f"{k}: {v}" for k, v in f.response.headers.items(multi=True)) + (
        (f.response.content or b"").decode("utf-8", "replace"))


def error_of(f: http.HTTPFlow) -> str:
    assert f.response is not None and f.response.status_code == 502
    return str(orjson.loads(f.response.content or b"{}")["error"])


# -- allow-list -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["Patient_Name", "patient-name", "patientName", "PATIENT NAME", "patient_name"])
def test_field_names_match_case_and_separator_insensitively(spelling: str) -> None:
    assert field_key(spelling) == field_key("patient_name")


def test_unlisted_keys_at_any_depth_are_masked_and_listed_ones_pass(masking: Masking) -> None:
    meta = {"MRN": "8675309", "Ward": "cardio", "care_team": {"lead": PHI[0], "ward": "icu"},
            "home_phone": PHI[2], "extra": {"patient": PHI[0]}, "n": 7, "tags": [PHI[3]]}
    out = orjson.loads(respond(masking, flow(query([meta]))).response.content)  # type: ignore[union-attr]
    got = out["metadatas"][0][0]
    assert got["MRN"].startswith("tok_mrn_") and got["Ward"] == "cardio"
    # A listed field that holds an object is judged again inside: `lead` is not listed, `ward` is.
    assert got["care_team"] == {"lead": "[REDACTED:FIELD]", "ward": "icu"}
    assert got["extra"] == got["home_phone"] == got["n"] == got["tags"] == "[REDACTED:FIELD]"
    assert out["ids"] == [["[REDACTED:ID]"]]  # ids pass only when a rule lets them
    clinician = orjson.loads(respond(masking, flow(query([meta]), CLINICIAN)).response.content)  # type: ignore[union-attr]
    assert clinician["metadatas"][0][0] == meta


def test_a_caller_without_identity_gets_the_everyone_defaults(masking: Masking) -> None:
    f = respond(masking, flow(query([{"who": PHI[0]}]), roles=None))
    assert PHI[0] not in text_of(f)


# -- shape ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    pytest.param({"ids": ["r0"], "metadatas": [{"who": PHI[0]}]}, id="get-shape-on-query"),
    pytest.param(orjson.dumps(orjson.dumps(query([{"who": PHI[0]}])).decode()), id="double-encoded"),
    pytest.param(query([{"mrn": "1"}], debug={"who": PHI[0]}), id="unknown-top-level-key"),
    pytest.param(query([orjson.dumps({"who": PHI[0]}).decode()]), id="string-for-object"),
    pytest.param(query([{}], include=[PHI[0]]), id="undeclared-value"),
    pytest.param(query([{}], distances=[[PHI[0]]]), id="text-in-numbers"),
    pytest.param([query([{"who": PHI[0]}])], id="array-body"),
])
def test_a_body_off_its_declared_shape_is_refused(masking: Masking, body: Any) -> None:
    f = respond(masking, flow(body))
    assert error_of(f) == "unexpected_shape" and PHI[0] not in text_of(f)


def test_with_shape_mismatch_mask_the_body_is_masked_as_a_whole(masking: Masking) -> None:
    import dataclasses

    prof = dataclasses.replace(chroma_profile(), shape_mismatch="mask")
    masking._profile_source = prof
    f = respond(masking, flow(query([{"mrn": "1"}], debug={"who": PHI[0], "n": 8675309})))
    out = orjson.loads(f.response.content)  # type: ignore[union-attr]
    assert f.response.status_code == 200 and out["debug"] == {"who": "[REDACTED:VALUE]", "n": "[REDACTED:VALUE]"}
    assert out["distances"] == [[0.5]]  # numbers-only lists (vectors, distances) are kept


def test_a_route_the_profile_does_not_map_is_masked_as_a_whole_for_a_masked_role(masking: Masking) -> None:
    f = respond(masking, flow({"data": [{"note": PHI[0]}]}, route="chroma.v3.export"))
    assert f.response is not None and f.response.status_code == 200 and PHI[0] not in text_of(f)


# -- headers --------------------------------------------------------------------------------------------


def test_only_allowed_headers_with_standard_values_reach_a_masked_role(masking: Masking) -> None:
    hdrs = {"X-Debug-Record": PHI[0], "Warning": f'199 - "{PHI[1]}"', "Vary": "Accept-Encoding",
            "Date": "Mon, 07 Dec 2026 10:00:00 GMT", "Retry-After": "8675309", "ETag": '"8675309"',
            "Cache-Control": "max-age=8675309", "Server": "chroma"}
    f = respond(masking, flow(query([{"ward": "x"}]), hdrs=hdrs))
    assert f.response is not None
    names = {k.lower() for k in f.response.headers}
    assert names == {"content-type", "content-length", "vary", "date", "cache-control"}
    assert f.response.headers["cache-control"] == "no-store" and "8675309" not in text_of(f)
    summary = context(f).masking
    assert summary is not None and summary.headers_dropped == 6
    assert build_event(f, context(f), "s")["masking"]["headers_dropped"] == 6
    clinician = respond(masking, flow(query([{"ward": "x"}]), CLINICIAN, hdrs=hdrs))
    assert clinician.response is not None and "x-debug-record" in clinician.response.headers


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("content-type", "application/json; charset=utf-8", True),
    ("content-type", "application/json; name=John", False),
    ("content-encoding", "gzip", True), ("content-encoding", "John", False),
    ("date", "Mon, 07 Dec 2026 10:00:00 GMT", True), ("date", "John Smith", False),
    ("retry-after", "120", True), ("retry-after", "1234567", False),
    ("vary", "Accept-Encoding, Origin", True), ("vary", "X-Patient", False),
])
def test_header_values_must_have_their_standard_form(name: str, value: str, ok: bool) -> None:
    kept, dropped = headers.allowed_fields(((name.encode(), value.encode()),))
    assert (dropped == 0) is ok and ((name.encode(), value.encode()) in kept) is ok


# -- error bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body", "error"), [
    (400, {"error": "InvalidArgumentError", "message": f'bad where: {{"mrn": "{PHI[1]}"}}'}, "InvalidArgumentError"),
    (500, {"error": f"{PHI[0]} not found"}, "upstream_error"),  # not a class name: withheld
    (500, f"patient {PHI[0]}".encode(), "upstream_error"),
    (404, b"", "upstream_error"),
])
def test_error_bodies_become_the_gateways_error_for_a_masked_role(masking: Masking, status: int, body: Any,
                                                                  error: str) -> None:
    f = respond(masking, flow(body, status=status, hdrs={"X-Trace": PHI[0]}))
    assert f.response is not None and f.response.status_code == status
    out = orjson.loads(f.response.content or b"")
    assert out["error"] == error and out["status"] == status and out["request_id"] == context(f).request_id
    assert not any(p in text_of(f) for p in PHI)


# -- bodiless statuses, upgrades, trailers --------------------------------------------------------------


@pytest.mark.parametrize(("status", "method"), [(204, "POST"), (304, "GET"), (200, "HEAD")])
def test_a_bodiless_answer_with_a_body_is_refused(masking: Masking, status: int, method: str) -> None:
    assert error_of(respond(masking, flow(PHI[0].encode(), status=status, method=method))) == "unexpected_body"
    empty = respond(masking, flow(b"", status=status, method=method))
    assert empty.response is not None and empty.response.status_code == status


def test_an_upstream_101_is_refused_for_a_masked_role(masking: Masking) -> None:
    assert error_of(respond(masking, flow(b"", status=101))) == "unexpected_upgrade"


def test_trailers_are_refused(masking: Masking) -> None:
    f = flow(query([{}]), CLINICIAN)
    assert f.response is not None
    f.response.trailers = http.Headers(x_patient=PHI[0])
    assert error_of(respond(masking, f)) == "upstream_trailers"


# -- failed exchanges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "reason"), [
    ("[Errno 111] Connect call failed ('127.0.0.1', 9)", "upstream_unavailable"),
    (f"HTTP/1 protocol error: unexpected server response: b'{PHI[0]}'", "upstream_protocol_error"),
    (f"HTTP/1 protocol error: {upstream_errors.TRAILERS_REFUSED}", "upstream_trailers"),
    ("Server disconnected.", "upstream_reset"),
    ("Response body exceeds mitmproxy's body_size_limit.", "upstream_too_large"),
    (f"something new: {PHI[0]}", "upstream_error"),
])
def test_a_failed_exchange_is_answered_and_audited_by_its_class_only(masking: Masking, message: str,
                                                                     reason: str) -> None:
    from mitmproxy import flow as mflow

    f = tflow.tflow()
    context(f).operation = Operation("chroma", OpKind.SEARCH, "chroma.query", "POST", PATH)
    f.error = mflow.Error(message)
    masking.error(f)
    assert f.response is not None and orjson.loads(f.response.content or b"")["error"] == reason
    assert "server" not in f.response.headers and PHI[0] not in text_of(f)
    event = build_event(f, context(f), "s")
    assert event["error"].startswith(reason) and PHI[0] not in orjson.dumps(event).decode()


def test_roles_section_is_required_and_checked() -> None:
    def load(text: str) -> Any:
        return compile_masking(Path("m.yaml"), parse_yaml(Path("m.yaml"), text))

    rule = "rules:\n  - {id: r, roles: [a], fields: [x], operator: redact}\n"
    with pytest.raises(ConfigError, match="version: 2"):
        load(rule)
    with pytest.raises(ConfigError, match="'\\*' entry"):
        load("version: 2\nroles: {a: {default: redact}}\n" + rule)
    with pytest.raises(ConfigError, match="default: one of redact, tokenize, drop, clear"):
        load("version: 2\nroles: {'*': {default: partial}}\n" + rule)
    with pytest.raises(ConfigError, match="no `text:` on an unmasked role"):
        load("version: 2\nroles: {'*': {default: clear, text: detect}}\n" + rule)


# -- the property, in process ---------------------------------------------------------------------------

keys = st.one_of(st.sampled_from(["mrn", "MRN", "Patient_Name", "ward", "Ward", "care_team", "debug", "ids"]),
                 st.text(min_size=1, max_size=10))
leaves = st.one_of(st.sampled_from(PHI), st.integers(-2**53, 2**53), st.none(), st.booleans())
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=10)
bodies = st.one_of(st.dictionaries(keys, values, max_size=4).map(lambda m: query([m])),
                   st.builds(lambda m, k, v: query([m], **{k: v}), st.dictionaries(keys, values, max_size=3), keys,
                             values),
                   values, values.map(lambda v: orjson.dumps(v)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, status=st.sampled_from([200, 200, 204, 400, 500]),
       hdrs=st.dictionaries(st.sampled_from(["X-Debug", "Warning", "Vary", "Retry-After"]), st.sampled_from(PHI),
                            max_size=2))
def test_a_masked_role_never_receives_a_phi_value_not_allowed(masking: Masking, body: Any, status: int,
                                                              hdrs: dict[str, str]) -> None:
    # `ward` and `care_team` are allowed in the clear: a value under them passes by rule.
    def allowed(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: allowed(v, k) for k, v in node.items() if field_key(k) not in ("ward", "careteam")}
        return [allowed(v) for v in node] if isinstance(node, list) else node

    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    f = respond(masking, flow(raw, status=status, hdrs=hdrs))
    cleared = orjson.dumps(allowed(orjson.loads(raw))) if raw.strip() else b""
    shown = text_of(f)
    for p in PHI:
        if p in shown:
            # Only through an allowed field of a well-shaped 2xx body.
            assert f.response is not None and f.response.status_code == 200 and p.encode() not in cleared, p


def test_record_parts_with_their_own_paths_are_left_to_them() -> None:
    """Qdrant's payload.text is a document (scanned, not redacted whole); Weaviate's _additional.vector
    a vector (untouched); a key beside them, or the same name under another record object, is not."""
    from addons.config.profiles import load_profile
    from addons.phi.masker import MaskRun, mask_records
    from addons.phi.tokens import KeyRing

    root = Path(__file__).resolve().parents[2] / "rules"
    rules = compile_masking(Path("m.yaml"), parse_yaml(Path("m.yaml"), RULES.replace(
        "text: redact", "text: {operator: detect}")))
    run = MaskRun(KeyRing.parse(f"*k1={TEST_KEY}"), rules.detector)

    def masked(backend: str, route: str, doc: Any) -> Any:
        r = load_profile(root, backend).current.route(route)
        assert r is not None
        mask_records(doc, rules.plan(AGENT, backend, r), run, None, None)
        return doc

    q = masked("qdrant", "qdrant.query", {"result": {"points": [
        {"id": 1, "payload": {"text": "Seen on 2024-03-05 for chest pain.", "who": PHI[0]}, "vector": [0.1]}]}})
    payload = q["result"]["points"][0]["payload"]
    assert payload["who"] == "[REDACTED:FIELD]" and payload["text"].startswith("Seen on [DATE]")
    w = masked("weaviate", "weaviate.graphql.search", {"data": {"Get": {"Note": [
        {"who": PHI[0], "_additional": {"id": "u1", "vector": [0.5, 0.25], "extra": PHI[0]}}]}}})
    note = w["data"]["Get"]["Note"][0]
    assert note["_additional"]["vector"] == [0.5, 0.25] and note["who"] == "[REDACTED:FIELD]"
    assert note["_additional"]["extra"] == "[REDACTED:FIELD]"
    o = masked("opensearch", "opensearch.search", {"hits": {"hits": [
        {"_id": "a", "_source": {"text": "plain note"}, "fields": {"text": [PHI[0]]}}]}})
    hit = o["hits"]["hits"][0]
    assert hit["_source"]["text"] == "plain note" and hit["fields"]["text"] == "[REDACTED:FIELD]"
