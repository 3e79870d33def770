"""One reading of a request: canonicalise its target and reject what a backend could read otherwise.

The gateway classifies a request and the backend executes it. If the two parse the same bytes
differently (`/collections/x/..%2F..%2Freset`, a `X-HTTP-Method-Override: DELETE` on a POST, a JSON
body with a key written twice, a gzip body the gateway did not look inside) the policy judged one
request and the backend runs another. So: the target is canonicalised (unreserved percent-escapes
decoded, dot segments resolved, duplicate slashes merged) and that canonical form is what is
forwarded; whatever still has two readings is refused with 400 before classification.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from mitmproxy.http import Headers

# RFC 3986 unreserved characters: decoding them never changes what a server routes to.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")

# Headers some frameworks honour to run a different method than the one on the request line; the
# policy judged the request-line method, so a request carrying one has two readings.
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-method-override", "x-http-method")
# The query-string spelling of the same trick (Rails, Laravel, Express method-override).
METHOD_OVERRIDE_PARAMS = ("_method",)


class Ambiguous(ValueError):
    """The request could be read two ways (or not at all): answered 400, never forwarded."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class Target:
    path: str  # canonical path, percent-escapes of reserved bytes kept (upper-case hex)
    query: str | None  # the raw query string (None when the target had no "?")

    @property
    def forwarded(self) -> str:
        """Exactly what goes upstream as the request target."""
        return self.path if self.query is None else f"{self.path}?{self.query}"


_BAD_RAW = re.compile(r"[^\x21-\x7e]|#")


def _check_raw(raw: str, what: str) -> None:
    m = _BAD_RAW.search(raw)
    if m is None:
        return
    if m.group() == "#":
        raise Ambiguous(f"the {what} contains a fragment ('#'); clients never send one")
    # Raw spaces, control bytes and non-ASCII: servers differ on how (and whether) they decode
    # them, and NUL truncates paths in C-based components.
    raise Ambiguous(f"the {what} contains a raw control, space or non-ASCII byte (0x{ord(m.group()):02x})")


def _decode_segment(segment: str) -> str:
    """Decode unreserved escapes; keep the rest encoded; refuse escapes that change structure."""
    if "%" not in segment:
        return segment
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        ch = segment[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        pair = segment[i + 1 : i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            raise Ambiguous("the path has a malformed percent-escape")
        byte = int(pair, 16)
        if byte in (0x2F, 0x5C):
            # An encoded slash or backslash is a separator to some servers and data to others.
            raise Ambiguous("the path contains an encoded slash (%2F) or backslash (%5C)")
        if byte < 0x20 or byte == 0x7F:
            raise Ambiguous("the path contains an encoded control byte (NUL or similar)")
        out.append(chr(byte) if byte in _UNRESERVED else "%" + pair.upper())
        i += 3
    decoded = "".join(out)
    if decoded in (".", ".."):
        # `%2e%2e` is a plain name to servers that do not decode before resolving dot segments
        # and a parent step to those that do.
        raise Ambiguous("the path uses an encoded dot segment (%2E)")
    return decoded


def canonical_target(raw: str) -> Target:
    """Canonicalise an origin-form request target; raise Ambiguous for what has two readings."""
    if not raw.startswith("/"):
        raise Ambiguous("the request target must be an absolute path starting with '/'")
    path, sep, query = raw.partition("?")
    _check_raw(path, "path")
    if "\\" in path:
        raise Ambiguous("the path contains a backslash, a separator to some servers")
    segments: list[str] = []
    parts = path.split("/")[1:]
    trailing = False
    for index, segment in enumerate(parts):
        last = index == len(parts) - 1
        decoded = _decode_segment(segment)
        if decoded in ("", "."):
            # Empty segments (duplicate slashes) and "." vanish; a final one leaves a trailing "/".
            trailing = last and bool(segments)
            continue
        if decoded == "..":
            if not segments:
                raise Ambiguous("the path climbs above the root with '..'")
            segments.pop()
            trailing = last and bool(segments)
            continue
        segments.append(decoded)
        trailing = False
    canonical = "/" + "/".join(segments) + ("/" if trailing else "")
    if not sep:
        return Target(canonical, None)
    _check_raw(query, "query string")
    _check_query_escapes(query)
    return Target(canonical, query)


def _check_query_escapes(query: str) -> None:
    i = query.find("%")
    while i != -1:
        pair = query[i + 1 : i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            raise Ambiguous("the query string has a malformed percent-escape")
        if pair == "00":
            raise Ambiguous("the query string contains an encoded NUL byte")
        i = query.find("%", i + 3)


def parse_query(query: str | None) -> dict[str, tuple[str, ...]]:
    """Decoded query parameters, every value kept in order (`?ids=a&ids=b` is a list)."""
    if not query:
        return {}
    params: dict[str, list[str]] = {}
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        key = unquote(name.replace("+", " "))
        params.setdefault(key, []).append(unquote(value.replace("+", " ")))
    return {k: tuple(v) for k, v in params.items()}


def check_headers(headers: Mapping[str, str], query: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse method overrides and request bodies the gateway cannot read as the backend would."""
    # The usual request carries none of the headers looked at here. For mitmproxy's Headers, one
    # pass over its names (decoded and lower-cased as Headers matches them) says which are there,
    # instead of a full scan and a raised KeyError per name looked up; a name that is there is
    # then checked exactly as for any other mapping.
    names = (frozenset(name.decode("utf-8", "surrogateescape").lower() for name, _ in headers.fields)
             if isinstance(headers, Headers) else None)
    if names is None or not names.isdisjoint(METHOD_OVERRIDE_HEADERS):
        for name in METHOD_OVERRIDE_HEADERS:
            if name in headers:
                raise Ambiguous(f"method-override header {name!r} is not accepted; send the real method")
    for name in METHOD_OVERRIDE_PARAMS:
        if name in query:
            raise Ambiguous(f"method-override parameter {name!r} is not accepted; send the real method")
    if names is not None and "content-encoding" not in names:
        return
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding and encoding != "identity":
        # The gateway judges and masks the bytes it sees; a compressed body would be judged unread.
        raise Ambiguous(
            f"request Content-Encoding {encoding!r} is not accepted; send the request body uncompressed"
        )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # First-wins and last-wins parsers disagree on `{"where": A, "where": B}`.
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise Ambiguous(f"the JSON body has a duplicate key {dup[:40]!r}")
    return obj


_DUPLICATE_CHECK = json.JSONDecoder(object_pairs_hook=_unique_keys)


def decode_json(body: bytes) -> Any:
    """Parse a JSON body strictly: valid UTF-8, no NaN/Infinity, no lone surrogates, no duplicate keys.

    orjson does the strict parse (and is what the rest of the gateway reads); the standard parser
    with a pairs hook then looks for duplicate keys, which orjson silently resolves last-wins.
    Measured on the Chroma captures: ~2 us + ~7 us for a 300-900 byte body.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Ambiguous(f"the body is not valid JSON ({exc.msg})") from None
    if isinstance(doc, dict | list) and b'"' in body:
        _DUPLICATE_CHECK.decode(body.decode("utf-8"))
    return doc


def decode_ndjson(body: bytes) -> list[Any]:
    """Parse newline-delimited JSON (OpenSearch _bulk/_msearch, Pinecone records upsert)."""
    items: list[Any] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append(decode_json(line))
        except Ambiguous as exc:
            raise Ambiguous(f"NDJSON line {number}: {exc.detail}") from None
    return items
