"""Unit tests for addons/request/canonical_form.py: one reading of a request target, headers and body."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addons.request.canonical_form import (
    Ambiguous,
    canonical_target,
    check_headers,
    decode_json,
    decode_ndjson,
    parse_query,
)


@pytest.mark.parametrize(
    ("raw", "path", "query"),
    [
        ("/api/v2/heartbeat", "/api/v2/heartbeat", None),
        ("/", "/", None),
        ("/api//v2///heartbeat", "/api/v2/heartbeat", None),
        ("/api/v2/./heartbeat", "/api/v2/heartbeat", None),
        ("/api/v2/x/../heartbeat", "/api/v2/heartbeat", None),
        ("/api/v2/heartbeat/", "/api/v2/heartbeat/", None),
        ("/api/v2/heartbeat/.", "/api/v2/heartbeat/", None),
        ("/a/b/..", "/a/", None),  # RFC 3986 5.2.4
        ("/%61%70%69/v2/%7Eme", "/api/v2/~me", None),  # unreserved escapes decoded
        ("/api/v2/a%20b", "/api/v2/a%20b", None),  # reserved/other escapes kept
        ("/api/v2/a%3ab", "/api/v2/a%3Ab", None),  # ... with upper-case hex
        ("/api/v2/x%2e", "/api/v2/x.", None),  # a dot inside a name is just a dot
        ("/count?read_level=index_and_wal", "/count", "read_level=index_and_wal"),
        ("/a//b?x=1&x=2", "/a/b", "x=1&x=2"),
        ("/a?", "/a", ""),
    ],
)
def test_canonical_forms(raw: str, path: str, query: str | None) -> None:
    target = canonical_target(raw)
    assert (target.path, target.query) == (path, query)
    assert target.forwarded == (path if query is None else f"{path}?{query}")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("/api/v2/collections/x%2F..%2Freset", "encoded slash"),
        ("/api/v2/collections/x%2freset", "encoded slash"),
        ("/api/v2/collections/x%5Creset", "encoded slash"),
        ("/api/v2/%2e%2e/reset", "encoded dot segment"),
        ("/api/v2/%2E/reset", "encoded dot segment"),
        ("/api/v2/.%2e/reset", "encoded dot segment"),
        ("/api/v2/heart%00beat", "control byte"),
        ("/api/v2/heart%0abeat", "control byte"),
        ("/api/v2/heart\x00beat", "control"),
        ("/api/v2/heart\tbeat", "control"),
        ("/api/v2/heart beat", "space"),
        ("/api/v2/h\u00e9", "non-ASCII"),
        ("/api\\v2", "backslash"),
        ("/api/v2/x%zz", "malformed percent-escape"),
        ("/api/v2/x%4", "malformed percent-escape"),
        ("/..", "above the root"),
        ("/a/../../reset", "above the root"),
        ("/a#frag", "fragment"),
        ("api/v2", "absolute path"),
        ("*", "absolute path"),
        ("/a?x=%00", "NUL"),
        ("/a?x=%g1", "malformed"),
        ("/a?x=\x01", "control"),
    ],
)
def test_ambiguous_targets_are_refused(raw: str, message: str) -> None:
    with pytest.raises(Ambiguous, match=message):
        canonical_target(raw)


@given(st.text(alphabet="/.%2eEfF5cCab", max_size=30))
def test_canonical_is_idempotent_and_never_climbs(raw: str) -> None:
    try:
        target = canonical_target("/" + raw)
    except Ambiguous:
        return
    assert "//" not in target.path
    assert "/../" not in target.path + "/" and "/./" not in target.path + "/"
    assert canonical_target(target.path).path == target.path


def test_parse_query_keeps_repeats_and_decodes() -> None:
    assert parse_query("ids=a&ids=b%20c&n=1&flag&x=a+b") == {
        "ids": ("a", "b c"), "n": ("1",), "flag": ("",), "x": ("a b",),
    }
    assert parse_query(None) == {}
    assert parse_query("") == {}


@pytest.mark.parametrize(
    "header", ["X-HTTP-Method-Override", "x-method-override", "X-HTTP-Method"],
)
def test_method_override_headers_refused(header: str) -> None:
    from mitmproxy.http import Headers

    with pytest.raises(Ambiguous, match="method-override header"):
        check_headers(Headers(**{header.replace("-", "_"): "DELETE"}), {})


def test_method_override_query_param_refused() -> None:
    with pytest.raises(Ambiguous, match="method-override parameter"):
        check_headers({}, {"_method": ("DELETE",)})


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "gzip, identity", "x-custom"])
def test_request_content_encoding_refused(encoding: str) -> None:
    with pytest.raises(Ambiguous, match="send the request body uncompressed"):
        check_headers({"content-encoding": encoding}, {})


def test_identity_encoding_and_plain_headers_pass() -> None:
    check_headers({"content-encoding": "identity", "content-type": "application/json"}, {})
    check_headers({}, {"limit": ("10",)})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"where": {"a": 1}, "where": null}', "duplicate key 'where'"),
        (b'{"q": [{"x": 1, "y": 2, "x": 3}]}', "duplicate key 'x'"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": Infinity}', "not valid JSON"),
        (b"ids=a&ids=b", "not valid JSON"),
        (b'{"a": "\xff"}', "not valid JSON"),
        (b'{"a": "\\ud800"}', "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
    ],
)
def test_bad_json_bodies_refused(body: bytes, message: str) -> None:
    with pytest.raises(Ambiguous, match=message):
        decode_json(body)


def test_good_json_bodies_decode() -> None:
    assert decode_json(b'{"ids": ["a"], "where": {"mrn": "1"}}') == {"ids": ["a"], "where": {"mrn": "1"}}
    assert decode_json(b"[1, 2]") == [1, 2]
    assert decode_json(b"42") == 42
    # The same key in two different objects is not a duplicate.
    assert decode_json(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]


def test_ndjson_decodes_line_by_line_and_names_the_bad_line() -> None:
    body = b'{"index": {"_id": "1"}}\n{"text": "x"}\n\n{"delete": {"_id": "2"}}\n'
    assert decode_ndjson(body) == [{"index": {"_id": "1"}}, {"text": "x"}, {"delete": {"_id": "2"}}]
    with pytest.raises(Ambiguous, match="NDJSON line 2: the JSON body has a duplicate key"):
        decode_ndjson(b'{"index": {}}\n{"a": 1, "a": 2}\n')


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([(b"Content-Type", b"application/json"), (b"CONTENT-ENCODING", b"gzip")], "uncompressed"),
        ([(b"content-encoding", b"identity"), (b"content-encoding", b"br")], "uncompressed"),
        ([(b"X-Http-Method-Override", b"DELETE"), (b"content-encoding", b"gzip")], "method-override header"),
    ],
)
def test_request_headers_as_mitmproxy_holds_them(fields: list[tuple[bytes, bytes]], message: str) -> None:
    # Headers get a one-pass fast path; any case and any repetition must still be caught.
    from mitmproxy.http import Headers

    with pytest.raises(Ambiguous, match=message):
        check_headers(Headers(fields), {})
    check_headers(Headers([(b"Content-Type", b"application/json"), (b"Authorization", b"Bearer x")]),
                  {"limit": ("10",)})
    with pytest.raises(Ambiguous, match="method-override parameter"):
        check_headers(Headers([(b"Content-Type", b"application/json")]), {"_method": ("DELETE",)})
