"""The Masking addon on real captured Chroma responses (tests/fixtures/chroma-1.5.9)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import orjson
import pytest
import zstandard
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from addons.config.masking_rules import compile_masking
from addons.config.rulefiles import ConfigError, parse_yaml
from addons.core.context import Caller, Operation, OpKind, context
from addons.gateway import Gateway
from addons.masking import Masking
from addons.phi import masker as masking_engine
from addons.phi.tokens import KeyRing
from tests.support.masking_fixtures import OLD_KEY, TEST_KEY, chroma_profile, fixture

ROOT = Path(__file__).resolve().parents[2]
AGENT = frozenset({"agent"})
CLINICIAN = frozenset({"clinician"})


@pytest.fixture
def masking(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Masking, Any]]:
    monkeypatch.setenv("PHIGATE_TOKEN_KEYS", f"*k1={TEST_KEY} k0={OLD_KEY}")
    m = Masking(chroma_profile())
    with taddons.context(Gateway(), m) as tctx:
        tctx.configure(m, phigate_rules=str(ROOT / "rules"), phigate_profile="chroma")
        yield m, tctx


def make_flow(seq: int, roles: frozenset[str] | None, route: str = "chroma.query", body: bytes | None = None,
              headers: dict[str, str] | None = None, status: int | None = None) -> http.HTTPFlow:
    fx = fixture(seq)
    f = tflow.tflow(resp=True)
    f.request.method, f.request.path = fx["method"], fx["path"]
    f.request.headers["content-type"] = "application/json"
    req = fx["request_body"]["json"]
    f.request.content = orjson.dumps(req) if req is not None else b""
    raw = body if body is not None else orjson.dumps(fx["response_body"]["json"])
    f.response = http.Response.make(status or fx["status"], b"")
    f.response.raw_content = raw  # exactly as the upstream sent it (already encoded)
    f.response.headers = http.Headers(content_length=str(len(raw)))
    for k, v in (headers if headers is not None else {"content-type": "application/json"}).items():
        f.response.headers[k] = v
    c = context(f)
    if roles is not None:
        c.identity = Caller("sub", "iss", roles, "jti", 0)
    kind = {"chroma.query": OpKind.SEARCH, "chroma.get": OpKind.GET}.get(route, OpKind.GET)
    c.operation = Operation("chroma", kind, route, fx["method"], fx["path"])
    return f


def respond(m: Masking, f: http.HTTPFlow) -> http.HTTPFlow:
    m.responseheaders(f)
    m.response(f)
    return f


def body(f: http.HTTPFlow) -> Any:
    assert f.response is not None
    return orjson.loads(f.response.content or b"null")


def ring() -> KeyRing:
    return KeyRing.parse(f"*k1={TEST_KEY} k0={OLD_KEY}")


# -- roles ----------------------------------------------------------------------------------------------


def test_clinician_gets_clear_values_agent_gets_tokens(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    clinician_flow = respond(m, make_flow(10, CLINICIAN))
    clear = body(clinician_flow)
    masked = body(respond(m, make_flow(10, AGENT)))
    original = fixture(10)["response_body"]["json"]
    assert clear == original
    # Nothing to mask for this caller: the upstream's bytes go out untouched.
    assert clinician_flow.response is not None
    assert clinician_flow.response.raw_content == orjson.dumps(original)
    meta = masked["metadatas"][0]
    assert meta[0]["mrn"] == ring().tokenize("3456789", "mrn")
    assert meta[0]["patient_name"] == ring().tokenize("Alice Green", "name")
    assert meta[0]["dob"] == "1975" and meta[0]["ward"] == "cardio"
    for doc in masked["documents"][0]:
        for secret in ("Alice Green", "1975-07-30", "555-0100", "John Smith", "1234567"):
            assert secret not in doc
    # The same MRN gives the same token in metadata and in the note text: records and notes join.
    assert meta[1]["mrn"] in masked["documents"][0][1]
    assert masked["embeddings"] == original["embeddings"] and masked["distances"] == original["distances"]


def test_summary_records_counts_disclosures_and_subject_refs(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    agent = respond(m, make_flow(10, AGENT))
    s = context(agent).masking
    assert s is not None and s.applied
    assert s.counts_by_rule["non-clinical-tokenize-mrn"] == 2
    assert s.counts_by_type["MRN"] >= 2 and s.counts_by_type["NAME"] >= 2
    assert s.fields_disclosed == ["ward"]
    # One reference per patient (its primary identifier, the MRN), not one per identifier field.
    refs = {ring().subject_ref(v) for v in ("3456789", "1234567")}
    assert set(s.subject_refs) == refs
    clin = context(respond(m, make_flow(10, CLINICIAN))).masking
    assert clin is not None and set(clin.fields_disclosed) == {"dob", "mrn", "patient_name", "ward", "#document"}
    assert set(clin.subject_refs) == refs


@pytest.mark.parametrize("roles", [AGENT, CLINICIAN])
def test_a_record_without_the_primary_identifier_is_referenced_by_the_next(
        masking: tuple[Masking, Any], roles: frozenset[str]) -> None:
    m, _ = masking
    doc = {"ids": [["a", "b"]], "metadatas": [[{"patient_name": "Ann Lee", "ward": "x"},
                                               {"mrn": "7654321", "patient_name": "Bo Ray"}]],
           "documents": [[None, None]], "distances": [[0.1, 0.2]]}
    s = context(respond(m, make_flow(10, roles, body=orjson.dumps(doc)))).masking
    assert s is not None
    assert sorted(s.subject_refs) == sorted([ring().subject_ref("Ann Lee"), ring().subject_ref("7654321")])


def test_no_identity_gets_every_rule(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    masked = body(respond(m, make_flow(10, None)))
    assert masked["metadatas"][0][0]["mrn"].startswith("tok_mrn_")


def test_flat_get_response_is_masked(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    out = body(respond(m, make_flow(12, AGENT, route="chroma.get")))
    assert out["metadatas"][0]["mrn"].startswith("tok_mrn_")
    assert "123-45-6789" not in out["documents"][0] and "Robert Brown" not in out["documents"][0]
    assert out["embeddings"] == fixture(12)["response_body"]["json"]["embeddings"]


def test_vectors_are_byte_identical_in_a_large_response(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    vec = b"[" + b",".join(b"0.%07d" % i for i in range(400)) + b"]"
    raw = (b'{"ids":[["a","b"]],"embeddings":[[' + vec + b"," + vec + b']],"documents":[["MRN 1234567","x"]],'
           b'"metadatas":[[{"mrn":"1"},{"mrn":"2"}]],"distances":[[0.1,0.2]],'
           b'"include":["embeddings","documents"]}')
    f = respond(m, make_flow(10, AGENT, body=raw))
    assert f.response is not None and vec + b"," + vec in (f.response.content or b"")
    assert b"1234567" not in (f.response.content or b"")


# -- requests: tokens as handles ------------------------------------------------------------------------


def test_token_in_where_is_detokenized_before_forwarding(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    f = make_flow(11, AGENT, route="chroma.get")
    f.response = None
    tok = ring().tokenize("2345678", "mrn")
    old_tok = KeyRing.parse(f"k0={OLD_KEY}").tokenize("Jane Doe", "name")
    f.request.content = orjson.dumps({"ids": None, "where": {"$and": [{"mrn": tok}, {"patient_name": old_tok}]},
                                      "where_document": {"$contains": tok}, "include": ["documents"]})
    m.request(f)
    sent = orjson.loads(f.request.content or b"")
    assert sent["where"] == {"$and": [{"mrn": "2345678"}, {"patient_name": "Jane Doe"}]}
    assert sent["where_document"] == {"$contains": "2345678"}
    c = context(f)
    assert c.masking is not None and c.masking.detokenized == 3
    summary = orjson.dumps(c.request_summary)
    assert b"2345678" not in summary and b"tok_" not in summary and b"Jane" not in summary
    assert c.request_summary is not None and c.request_summary["keys"] == ["ids", "include", "where", "where_document"]


@pytest.mark.parametrize("token_kid", ["k7", None])
def test_token_the_gateway_cannot_open_is_400(masking: tuple[Masking, Any], token_kid: str | None) -> None:
    m, _ = masking
    f = make_flow(11, AGENT, route="chroma.get")
    f.response = None
    if token_kid:
        tok = KeyRing.parse(f"{token_kid}={TEST_KEY}").tokenize("2345678", "mrn")
    else:
        tok = ring().tokenize("2345678", "mrn")[:-2] + "aa"
    f.request.content = orjson.dumps({"ids": [tok], "where": None})
    m.request(f)
    assert f.response is not None and f.response.status_code == 400
    assert b"2345678" not in (f.response.content or b"") and tok.encode() not in (f.response.content or b"")
    c = context(f)
    assert c.refusal is not None and c.refusal.error == "bad_token"


def test_range_header_is_removed_on_record_routes(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    f = make_flow(11, AGENT, route="chroma.get")
    f.response = None
    f.request.headers["range"] = "bytes=0-99"
    m.request(f)
    assert "range" not in f.request.headers


def test_notes_written_through_the_gateway_are_scanned_then_and_not_again_on_read(
        masking: tuple[Masking, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    m, _ = masking
    note = "Patient Maria Lopez (MRN 7654321) called from 555-867-5309 about her refill."
    write = make_flow(8, AGENT, route="chroma.add", body=b"{}", status=201)
    write.response = None
    write.request.content = orjson.dumps({"ids": ["n1"], "documents": [note], "metadatas": [{"ward": "x"}]})
    m.request(write)
    write.response = http.Response.make(201, b"{}", {"content-type": "application/json"})
    respond(m, write)
    assert write.response.status_code == 201

    def no_scan(*args: Any) -> Any:
        raise AssertionError("the note was scanned again on read")

    monkeypatch.setattr(m.current_rules().detector, "_find", no_scan)
    raw = orjson.dumps({"ids": [["n1"]], "documents": [[note]], "metadatas": [[{"ward": "x"}]],
                        "distances": [[0.1]], "embeddings": None, "uris": None, "include": []})
    out = body(respond(m, make_flow(10, AGENT, body=raw)))
    masked = out["documents"][0][0]
    assert "Maria Lopez" not in masked and "7654321" not in masked and "867-5309" not in masked


# -- fail closed ----------------------------------------------------------------------------------------

GOOD = orjson.dumps(fixture(10)["response_body"]["json"])


def _encoded(name: str) -> bytes:
    return {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress,
            "zstd": zstandard.ZstdCompressor().compress}[name](GOOD)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_responses_are_decoded_and_masked(masking: tuple[Masking, Any], encoding: str) -> None:
    m, _ = masking
    f = make_flow(10, AGENT, body=_encoded(encoding),
                  headers={"content-type": "application/json", "content-encoding": encoding})
    respond(m, f)
    assert f.response is not None and f.response.status_code == 200
    out = body(f)
    assert out["metadatas"][0][0]["mrn"].startswith("tok_mrn_")
    assert "content-encoding" not in f.response.headers


@pytest.mark.parametrize(
    ("headers", "raw", "status", "error"),
    [
        ({"content-type": "application/json"}, b"{not json", 200, "invalid_json"),
        ({}, GOOD, 200, "unsupported_content_type"),
        ({"content-type": "text/html"}, GOOD, 200, "unsupported_content_type"),
        ({"content-type": "application/json; charset=latin-1"}, GOOD, 200, "unsupported_content_type"),
        ({"content-type": "text/event-stream"}, b"data: {}\n\n", 200, "event_stream"),
        ({"content-type": "application/json", "content-encoding": "gzip, br"}, GOOD, 200, "unsupported_encoding"),
        ({"content-type": "application/json", "content-encoding": "compress"}, GOOD, 200, "unsupported_encoding"),
        ({"content-type": "application/json", "content-encoding": "gzip"}, b"not gzip", 200, "undecodable_body"),
        ({"content-type": "application/json", "content-range": "bytes 0-9/100"}, GOOD[:10], 206, "partial_content"),
    ],
)
def test_unmaskable_responses_become_502(masking: tuple[Masking, Any], headers: dict[str, str], raw: bytes,
                                          status: int, error: str) -> None:
    m, _ = masking
    f = respond(m, make_flow(10, AGENT, body=raw, headers=headers, status=status))
    assert f.response is not None and f.response.status_code == 502
    out = body(f)
    assert out["error"] == error and b"3456789" not in (f.response.content or b"")
    c = context(f)
    assert c.refusal is not None and c.refusal.stage == "masking" and c.refusal.error == error


def test_body_over_the_size_limit_is_502(masking: tuple[Masking, Any]) -> None:
    m, tctx = masking
    tctx.options.phigate_mask_max_bytes = 100
    f = respond(m, make_flow(10, AGENT))
    assert f.response is not None and f.response.status_code == 502 and body(f)["error"] == "body_too_large"


def test_streaming_is_forced_off_and_a_streamed_body_is_refused(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    f = make_flow(10, AGENT)
    assert f.response is not None
    f.response.stream = True
    m.responseheaders(f)
    assert f.response.stream is False
    f.response.stream = True  # something enabled it after us: the body bypassed masking
    m.response(f)
    assert f.response.status_code == 502 and body(f)["error"] == "streamed_body"


@pytest.mark.parametrize("case", ["head", "204", "304"])
def test_bodyless_answers_pass(masking: tuple[Masking, Any], case: str) -> None:
    m, _ = masking
    f = make_flow(10, AGENT, body=b"", status={"head": 200, "204": 204, "304": 304}[case])
    if case == "head":
        f.request.method = "HEAD"
    respond(m, f)
    assert f.response is not None and f.response.status_code == {"head": 200, "204": 204, "304": 304}[case]
    assert context(f).refusal is None


def test_an_exception_while_masking_is_502_never_the_original(masking: tuple[Masking, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    m, _ = masking

    def boom(*args: Any) -> Any:
        raise RuntimeError("masker failed 3456789")

    monkeypatch.setattr("addons.masking.mask_records", boom)
    f = respond(m, make_flow(10, AGENT))
    assert f.response is not None and f.response.status_code == 502
    assert b"3456789" not in (f.response.content or b"") and b"Alice" not in (f.response.content or b"")
    assert context(f).refusal is not None


def test_gateway_answers_are_not_touched(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    f = make_flow(10, AGENT)
    context(f).answered_by_gateway = True
    respond(m, f)
    assert body(f) == fixture(10)["response_body"]["json"]


def test_error_bodies_are_masked(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    err = {"error": "InvalidArgument", "message": "no record with MRN 3456789 for patient Alice Green",
           "mrn": "3456789"}
    f = respond(m, make_flow(10, AGENT, body=orjson.dumps(err), status=400))
    out = body(f)
    # A masked role gets the gateway's error: only the profile's safe field (the error class) passes.
    assert set(out) == {"error", "status", "request_id", "message"}
    assert out["error"] == "InvalidArgument" and out["status"] == 400
    assert out["request_id"] == context(f).request_id
    assert "3456789" not in orjson.dumps(out).decode() and "Alice" not in orjson.dumps(out).decode()
    clinician = respond(m, make_flow(10, CLINICIAN, body=orjson.dumps(err), status=400))
    assert body(clinician)["mrn"] == "3456789"


def test_masked_responses_are_not_cacheable(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    f = respond(m, make_flow(10, AGENT, headers={"content-type": "application/json", "etag": '"abc"'}))
    assert f.response is not None and "etag" not in f.response.headers
    assert f.response.headers["cache-control"] == "no-store"


# -- configuration --------------------------------------------------------------------------------------


def test_missing_key_with_tokenize_rules_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHIGATE_TOKEN_KEYS", raising=False)
    m = Masking(chroma_profile())
    with taddons.context(Gateway(), m) as tctx, pytest.raises(exceptions.OptionsError, match="token key"):
        tctx.configure(m, phigate_rules=str(ROOT / "rules"), phigate_profile="chroma")


# Every role unmasked unless a test says otherwise: these tests are about the rules themselves.
HEAD = "version: 2\nroles: {'*': {default: clear}}\n"


def _compile(text: str) -> Any:
    path = Path("masking.yaml")
    return compile_masking(path, parse_yaml(path, text if "\nversion:" in "\n" + text else HEAD + text))


RULE = "rules:\n  - id: r1\n    roles: [agent]\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (RULE + "    paths: ['$.a[[']\n    operator: redact\n", r"rule 'r1'.*1:4"),
        (RULE + "    paths: ['$..mrn']\n    operator: redact\n", r"recursive descent"),
        (RULE + "    fields: [mrn]\n    operator: scramble\n", r"operator: one of"),
        (RULE + "    fields: [mrn]\n    operator: partial\n    params: {keep: 99}\n", r"keep: an integer"),
        (RULE + "    fields: [mrn]\n    operator: generalize\n    params: {kind: decade}\n", r"kind: one of"),
        (RULE + "    fields: [mrn]\n    operator: redact\n    params: {colour: red}\n", r"unknown params"),
        (RULE + "    operator: redact\n", r"at least one target"),
        ("rules:\n  - id: r1\n    fields: [mrn]\n    operator: redact\n", r"whom it covers"),
        (RULE + "    fields: [a.b]\n    operator: redact\n", r"no dots"),
        ("rules: []\n", r"non-empty"),
        (RULE + "    fields: [mrn]\n    operator: redact\n    operations: [peek]\n", r"operation kind"),
        ("detect: {mrn: {pattern: '('}}\n" + RULE + "    fields: [mrn]\n    operator: redact\n", r"valid regular"),
    ],
)
def test_bad_rules_fail_the_load_with_rule_and_reason(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _compile(text)


def test_repo_rules_compile() -> None:
    rules = _compile((ROOT / "rules" / "masking.yaml").read_text())
    assert rules.needs_key and rules.subjects == ("mrn", "patient_name")


def test_first_rule_wins_a_field_and_drop_never_creates_keys() -> None:
    rules = _compile(RULE + "    fields: [mrn]\n    operator: drop\n"
                     "  - id: r2\n    roles: [agent]\n    fields: [mrn, ward]\n    operator: redact\n")
    prof = chroma_profile()
    plan = rules.plan(AGENT, "chroma", prof.by_id["chroma.get"])
    doc: dict[str, Any] = {"metadatas": [{"mrn": 0, "ward": ""}, {"x": 1}, {"mrn": False}]}
    run = masking_engine.MaskRun(None, rules.detector)
    masking_engine.apply_plan(doc, plan, run)
    assert doc == {"metadatas": [{"ward": "[REDACTED:WARD]"}, {"x": 1}, {}]}
    assert dict(run.by_rule) == {"r1": 2, "r2": 1}


def test_raw_jsonpath_with_a_filter_masks_only_matching_records() -> None:
    rules = _compile(RULE + "    paths: ['$.metadatas[?(@.ward == \"cardio\")].mrn']\n    operator: redact\n")
    plan = rules.plan(AGENT, "chroma", chroma_profile().by_id["chroma.get"])
    doc: dict[str, Any] = {"metadatas": [{"ward": "cardio", "mrn": "1"}, {"ward": "endo", "mrn": "2"},
                                         {"ward": "cardio"}]}
    masking_engine.apply_plan(doc, plan, masking_engine.MaskRun(None, rules.detector))
    assert doc["metadatas"] == [{"ward": "cardio", "mrn": "[REDACTED:VALUE]"}, {"ward": "endo", "mrn": "2"},
                                {"ward": "cardio"}]


def test_organisation_patterns_from_the_rules_are_detected() -> None:
    rules = _compile("detect:\n  mrn: {pattern: 'H\\d{6}', standalone: true}\n  patterns:\n"
                     "    - {type: EMPLOYEE_ID, pattern: 'EMP-\\d{5}', context: [badge]}\n"
                     + RULE + "    documents: true\n    operator: detect\n")
    text = "Badge EMP-12345 scanned; chart H123456 reviewed; EMP-99999 without its cue word."
    found = {(s.type, text[s.start:s.end]) for s in rules.detector.find(text)}
    assert ("EMPLOYEE_ID", "EMP-12345") in found and ("MRN", "H123456") in found
    assert not any(v == "EMP-99999" for _, v in found)


def test_a_route_the_profile_does_not_know_is_masked_as_a_whole(masking: tuple[Masking, Any]) -> None:
    m, _ = masking
    leak = {"data": [{"mrn": "3456789", "note": "Patient Alice Green, SSN 123-45-6789"}]}
    f = make_flow(10, AGENT, route="chroma.v3.export", body=orjson.dumps(leak))
    out = orjson.dumps(body(respond(m, f))).decode()
    assert "3456789" not in out and "Alice Green" not in out and "123-45-6789" not in out
    clinician = body(respond(m, make_flow(10, CLINICIAN, route="chroma.v3.export", body=orjson.dumps(leak))))
    # Only the SSN rule covers clinicians: their MRN field stays, but with no record layout to go by,
    # every string is scanned (fail closed), so identifiers in free text are still replaced.
    assert clinician["data"][0]["mrn"] == "3456789"
    assert "123-45-6789" not in clinician["data"][0]["note"]
