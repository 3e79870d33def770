"""Backend profiles: compile rules/profiles/NAME.yaml into a `Profile`, and classify requests with it.

A profile is data. Each route says: method(s) + path template (+ `when` predicates on the body, the
query string or path variables where the path is not enough) -> operation kind, where the collection
is, which facts policy rules may test, and where records sit in requests and responses. Routes are
tried in order and the first match wins, so a specific variant (Chroma's export: POST .../get with
neither ids nor where) precedes the general one. What no route matches is `unknown`.

Format (see rules/profiles/chroma.yaml for a complete example):

    backend: chroma
    auth:
      token_headers: [authorization, x-chroma-token]   # where callers may put their token
      upstream: {header: x-chroma-token, format: "{credential}"}   # or null: no backend credential
    response_shape: refuse        # a masked role's response off the declared shape: refuse (502) or mask
    errors: {fields: {error: '[A-Za-z]{1,64}'}}   # error-body fields a masked role may receive
    routes:
      - id: chroma.get.export
        kind: export                       # health admin schema-write search get export write delete drop
        method: POST                       # or methods: [GET, HEAD]
        path: /api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/get
                                           # {name} matches one segment; {name:regex} constrains it
        collection: {param: collection_id, is_id: true}   # a path variable, `$.json.path` or `?query`
        body: json                         # json | ndjson | graphql | none | any
        when: {absent: [$.ids, $.where, $.where_document]}
        facts: {limit: $.limit, has_filter: {any_present: [$.where, $.where_document]}}
        request: {ids: $.ids[*], filters: [$.where, $.where_document]}
        response: {ids: $.ids[*], documents: $.documents[*], metadata: $.metadatas[*],
                   other: {include: [documents, metadatas]}}   # other top-level keys: a closed shape
        learn: {items: "$", id: id, name: name}   # responses that name collections (id -> name)
        limit: [$.limit]                   # where the backend takes a record limit: `$.key.path` (keys
                                           # and [*] only) or `?param`; the gateway lowers it to a
                                           # policy cap + 1 (addons/config/record_count.py)

Selectors (in `when`, `facts` and `collection`): `$...` is a JSONPath into the body (for NDJSON the
body is the list of lines), `?name` a query parameter, `{name}` a path variable. A value is present
unless it is missing, null, [] or {} (a null or empty filter filters nothing, so it must not count).

Tests (`when` keys, ANDed; also usable as boolean facts): present (all present), any_present,
absent (none present), equals {sel: value}, matches {sel: regex}, every {items: sel, present: sel}
(every item has it, and there is at least one item). Value facts: `$.path` or {value: sel} (one
value; different repeated values are ambiguous and refused), {count: sel}, {max: sel}.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonpath_ng.ext.parser import parse as jsonpath_parse

from addons.config.profile_model import (
    BackendAuth,
    CollectionLearning,
    CollectionLookup,
    Fact,
    Predicate,
    Profile,
    RecordPaths,
    RequestParts,
    Route,
)
from addons.config.rulefiles import ConfigError, WatchedFile, is_registered, require, watched
from addons.core.context import OpKind
from addons.request.canonical_form import Ambiguous, canonical_target, decode_json, decode_ndjson, parse_query
from addons.request.graphql import decode_graphql

KINDS = {kind.value: kind for kind in OpKind}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BODY_KINDS = ("json", "ndjson", "graphql", "none", "any")
RECORD_KEYS = ("ids", "documents", "metadata", "vectors", "filters", "other")
PROFILE_KEYS = frozenset({"backend", "auth", "routes", "description", "resolve", "response_shape", "errors"})
SHAPE_MISMATCH = ("refuse", "mask")
OTHER_KINDS = ("numbers", "null")
ROUTE_KEYS = frozenset({"id", "kind", "method", "methods", "path", "collection", "body", "when", "facts",
                        "request", "response", "learn", "note", "limit"})
TEST_KEYS = ("present", "any_present", "absent", "equals", "matches", "every")
VALUE_FACTS = ("value", "count", "max")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")
# A limit the gateway can write: plain keys and [*] steps, or a query parameter.
_LIMIT = re.compile(r"\$(\.[A-Za-z_][A-Za-z0-9_]*|\[\*\])*\.[A-Za-z_][A-Za-z0-9_]*|\?[A-Za-z_][A-Za-z0-9_.-]*")

Selector = Callable[[RequestParts], list[Any]]
Finder = Callable[[Any], list[Any]]


# --- JSONPath -------------------------------------------------------------------------------------

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[\*\]|\.\*|\[(\d+)\]|\['([^'\\]+)'\]")


def _simple_steps(text: str) -> list[tuple[str, Any]] | None:
    """Steps of a plain path ($.a[*].b['c'][0]), evaluated without jsonpath-ng on the hot path."""
    steps: list[tuple[str, Any]] = []
    pos = 1
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            return None
        if m.group(1) is not None or m.group(3) is not None:
            steps.append(("key", m.group(1) if m.group(1) is not None else m.group(3)))
        elif m.group(2) is not None:
            steps.append(("index", int(m.group(2))))
        else:
            steps.append(("all", None))
        pos = m.end()
    return steps


def _walk(steps: list[tuple[str, Any]], doc: Any) -> list[Any]:
    current = [doc]
    for kind, arg in steps:
        found: list[Any] = []
        for value in current:
            if kind == "key":
                if isinstance(value, dict) and arg in value:
                    found.append(value[arg])
            elif kind == "all":
                if isinstance(value, list):
                    found.extend(value)
                elif isinstance(value, dict):
                    found.extend(value.values())
            elif isinstance(value, list) and arg < len(value):
                found.append(value[arg])
        current = found
    return current


@functools.lru_cache(maxsize=1024)
def _parse_jsonpath(text: str) -> Any:
    # jsonpath-ng's parser costs ~1 ms a path, and profiles repeat the same paths on many routes.
    return jsonpath_parse(text)


def compile_jsonpath(file: Path | str, rule_id: str | None, text: Any) -> Finder:
    """Validate a JSONPath with jsonpath-ng; return a function doc -> values at the path."""
    require(file, rule_id, text, isinstance(text, str) and text.startswith("$"),
            "a JSONPath string starting with '$'")
    try:
        expr = _parse_jsonpath(text)
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng raises several unrelated types
        hint = " (jsonpath-ng reserves words such as `where`: write $['where'])"
        raise ConfigError(file, rule_id, text, f"a valid JSONPath ({exc}){hint}") from None
    steps = _simple_steps(text)
    if steps is not None:
        return functools.partial(_walk, steps)

    def find(doc: Any) -> list[Any]:
        return [match.value for match in expr.find(doc)]

    return find


def check_jsonpath(file: Path | str, rule_id: str | None, text: Any) -> str:
    compile_jsonpath(file, rule_id, text)
    return str(text)


# --- selectors and tests ----------------------------------------------------------------------------


def present(value: Any) -> bool:
    """Missing, null, [] and {} are absent: an empty filter filters nothing."""
    if value is None:
        return False
    if isinstance(value, list | dict):
        return bool(value)
    return True


def compile_selector(file: Path | str, rule_id: str | None, text: Any, variables: frozenset[str]) -> Selector:
    require(file, rule_id, text, isinstance(text, str) and bool(text),
            "a selector: `$.json.path`, `?query_param` or `{path_var}`")
    assert isinstance(text, str)
    if text.startswith("$"):
        finder = compile_jsonpath(file, rule_id, text)
        return lambda parts: finder(parts.body) if parts.body is not None else []
    if text.startswith("?"):
        name = text[1:]
        require(file, rule_id, text, bool(name), "a query parameter name after '?'")
        return lambda parts: list(parts.query.get(name, ()))
    m = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", text)
    require(file, rule_id, text, m is not None, "a selector: `$.json.path`, `?query_param` or `{path_var}`")
    assert m is not None
    var = m.group(1)
    require(file, rule_id, text, var in variables,
            f"a variable of the route's path template ({', '.join(sorted(variables)) or 'none'})")
    return lambda parts: [parts.vars[var]] if var in parts.vars else []


def _selectors(file: Path | str, rule_id: str, arg: Any, variables: frozenset[str]) -> list[Selector]:
    items = arg if isinstance(arg, list) else [arg]
    require(file, rule_id, arg, bool(items), "a selector or a non-empty list of selectors")
    return [compile_selector(file, rule_id, item, variables) for item in items]


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a JSON `true` is not the number 1.
    return (type(a) is type(b) and bool(a == b)) or (
        isinstance(a, int | float) and isinstance(b, int | float)
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b
    )


def compile_test(file: Path | str, rule_id: str, key: str, arg: Any,
                 variables: frozenset[str]) -> Callable[[RequestParts], bool]:
    """One boolean test from the shared vocabulary (see the module docstring)."""
    if key in ("present", "any_present", "absent"):
        sels = _selectors(file, rule_id, arg, variables)

        def has(parts: RequestParts, sel: Selector) -> bool:
            return any(present(v) for v in sel(parts))

        if key == "present":
            return lambda parts: all(has(parts, s) for s in sels)
        if key == "any_present":
            return lambda parts: any(has(parts, s) for s in sels)
        return lambda parts: not any(has(parts, s) for s in sels)
    if key in ("equals", "matches"):
        require(file, rule_id, arg, isinstance(arg, dict) and len(arg) > 0,
                f"`{key}` as a mapping of selector -> {'value' if key == 'equals' else 'regex'}")
        checks: list[tuple[Selector, Any]] = []
        for sel_text, expected in arg.items():
            sel = compile_selector(file, rule_id, sel_text, variables)
            if key == "matches":
                require(file, rule_id, expected, isinstance(expected, str), "a regular expression string")
                try:
                    expected = re.compile(expected)
                except re.error as exc:
                    raise ConfigError(file, rule_id, arg[sel_text], f"a valid regular expression ({exc})") from None
            else:
                require(file, rule_id, expected, isinstance(expected, str | int | float | bool) or expected is None,
                        "a scalar value (string, number, boolean or null)")
            checks.append((sel, expected))
        if key == "equals":
            return lambda parts: all(any(_same(v, exp) for v in sel(parts)) for sel, exp in checks)
        return lambda parts: all(
            any(isinstance(v, str) and exp.search(v) for v in sel(parts)) for sel, exp in checks
        )
    if key == "every":
        require(file, rule_id, arg, isinstance(arg, dict) and set(arg) == {"items", "present"},
                "`every: {items: <selector>, present: <JSONPath within each item>}`")
        items = compile_selector(file, rule_id, arg["items"], variables)
        inner = compile_jsonpath(file, rule_id, arg["present"])

        def every(parts: RequestParts) -> bool:
            found = items(parts)
            return bool(found) and all(any(present(v) for v in inner(item)) for item in found)

        return every
    raise ConfigError(file, rule_id, key, f"one of {', '.join(TEST_KEYS)}")


def _single_value(name: str, sel: Selector) -> Callable[[RequestParts], Any]:
    def value(parts: RequestParts) -> Any:
        found = sel(parts)
        if not found:
            return None
        first = found[0]
        if any(not _same(v, first) for v in found[1:]):
            # `?limit=1&limit=1000`: which one the backend uses is its own choice, not ours.
            raise Ambiguous(f"the request gives {name!r} more than once with different values")
        return first

    return value


def _count(sel: Selector) -> Callable[[RequestParts], int]:
    return lambda parts: len(sel(parts))


def _max(sel: Selector) -> Callable[[RequestParts], float | int | None]:
    def biggest(parts: RequestParts) -> float | int | None:
        numbers = [v for v in sel(parts) if isinstance(v, int | float) and not isinstance(v, bool)]
        return max(numbers) if numbers else None

    return biggest


def compile_fact(file: Path | str, rule_id: str, name: Any, spec: Any, variables: frozenset[str]) -> Fact:
    require(file, rule_id, name, isinstance(name, str) and re.fullmatch(r"[a-z_][a-z0-9_]*", name) is not None,
            "a fact name in lower_snake_case")
    where = f"{rule_id} fact {name}"
    if isinstance(spec, str):
        return Fact(name, _single_value(name, compile_selector(file, where, spec, variables)))
    require(file, where, spec, isinstance(spec, dict) and len(spec) == 1,
            f"a selector, or a mapping with one of {', '.join(VALUE_FACTS + TEST_KEYS)}")
    ((key, arg),) = spec.items()
    if key in VALUE_FACTS:
        sel = compile_selector(file, where, arg, variables)
        extract: Callable[[RequestParts], Any] = (
            _single_value(name, sel) if key == "value" else _count(sel) if key == "count" else _max(sel)
        )
        return Fact(name, extract)
    require(file, where, key, key in TEST_KEYS, f"one of {', '.join(VALUE_FACTS + TEST_KEYS)}")
    return Fact(name, compile_test(file, where, key, arg, variables))


# --- routes ---------------------------------------------------------------------------------------


def compile_template(file: Path | str, rule_id: str, template: Any) -> tuple[re.Pattern[str], frozenset[str]]:
    require(file, rule_id, template, isinstance(template, str) and template.startswith("/"),
            "a path template starting with '/'")
    assert isinstance(template, str)
    regex, names, pos = [], [], 0
    for m in _VAR.finditer(template):
        regex.append(re.escape(template[pos:m.start()]))
        name, pattern = m.group(1), m.group(2) or "[^/]+"
        require(file, rule_id, template, name not in names, f"each path variable once ({name!r} repeats)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(file, rule_id, pattern, f"a valid regular expression ({exc})") from None
        regex.append(f"(?P<{name}>{pattern})")
        names.append(name)
        pos = m.end()
    regex.append(re.escape(template[pos:]))
    literal = _VAR.sub("x", template)
    require(file, rule_id, template, "{" not in literal and "}" not in literal,
            "variables written {name} or {name:regex}")
    try:
        canonical = canonical_target(literal).path
    except Ambiguous as exc:
        raise ConfigError(file, rule_id, template, f"a canonical path ({exc.detail})") from None
    require(file, rule_id, template, canonical == literal,
            "a canonical path (no '//', '.', '..', or percent-escapes of unreserved characters)")
    return re.compile("".join(regex)), frozenset(names)


def _record_paths(file: Path | str, rule_id: str, spec: Any) -> RecordPaths:
    if spec is None:
        return RecordPaths()
    require(file, rule_id, spec, isinstance(spec, dict) and set(spec) <= set(RECORD_KEYS),
            f"a mapping with keys among {', '.join(RECORD_KEYS)}")
    values: dict[str, Any] = {}
    for key, paths in spec.items():
        if key == "other":
            values[key] = _other_keys(file, rule_id, paths)
            continue
        items = paths if isinstance(paths, list) else [paths]
        values[key] = tuple(check_jsonpath(file, f"{rule_id} {key}", p) for p in items)
    return RecordPaths(**values)


def _other_keys(file: Path | str, rule_id: str, spec: Any) -> dict[str, Any]:
    expected = f"other: a mapping of top-level key -> {' | '.join(OTHER_KINDS)} | [allowed strings]"
    require(file, rule_id, spec, isinstance(spec, dict), expected)
    for key, kind in spec.items():
        ok = kind in OTHER_KINDS or (isinstance(kind, list) and all(isinstance(v, str) for v in kind))
        require(file, f"{rule_id} other.{key}", kind, isinstance(key, str) and ok, expected)
    return dict(spec)


def _errors(file: Path | str, spec: Any) -> dict[str, re.Pattern[str]]:
    if spec is None:
        return {}
    expected = "errors: {fields: {FIELD: REGEX the whole value must match}}"
    require(file, "errors", spec, isinstance(spec, dict) and set(spec) == {"fields"}
            and isinstance(spec["fields"], dict), expected)
    out: dict[str, re.Pattern[str]] = {}
    for name, pattern in spec["fields"].items():
        require(file, f"errors.{name}", pattern, isinstance(name, str) and isinstance(pattern, str), expected)
        try:
            out[name] = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(file, f"errors.{name}", pattern, f"a regular expression ({exc})") from None
    return out


def _collection(file: Path | str, rule_id: str, spec: Any, variables: frozenset[str]
                ) -> tuple[str | None, bool, re.Pattern[str] | None, Selector | None]:
    if spec is None:
        return None, False, None, None
    if isinstance(spec, str):
        spec = {"param": spec}
    require(file, rule_id, spec, isinstance(spec, dict) and "param" in spec
            and set(spec) <= {"param", "is_id", "extract"},
            "`collection: NAME` or `{param: NAME, is_id: bool, extract: regex}`")
    param = spec["param"]
    is_id = spec.get("is_id", False)
    require(file, rule_id, is_id, isinstance(is_id, bool), "is_id: true or false")
    sel_text = param if isinstance(param, str) and param[:1] in ("$", "?") else f"{{{param}}}"
    source = compile_selector(file, rule_id, sel_text, variables)
    extract = None
    if "extract" in spec:
        try:
            extract = re.compile(spec["extract"])
        except (re.error, TypeError) as exc:
            raise ConfigError(file, rule_id, spec["extract"], f"a valid regular expression ({exc})") from None
        require(file, rule_id, spec["extract"], "collection" in extract.groupindex,
                "a regular expression with a named group (?P<collection>...)")
    return str(param), is_id, extract, source


def _learning(file: Path | str, rule_id: str, spec: Any, variables: frozenset[str]) -> tuple[CollectionLearning, ...]:
    if spec is None:
        return ()
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for item in items:
        require(file, rule_id, item, isinstance(item, dict) and {"id", "name"} <= set(item)
                and set(item) <= {"source", "items", "id", "name"},
                "`learn: {source: response|request, items: JSONPath, id: KEY or {var}, name: KEY}`")
        source = item.get("source", "response")
        require(file, rule_id, source, source in ("response", "request"), "source: response or request")
        ident, name = item["id"], item["name"]
        require(file, rule_id, name, isinstance(name, str) and bool(name), "the key holding the collection name")
        require(file, rule_id, ident, isinstance(ident, str) and bool(ident),
                "the key holding the collection id, or {path_var}")
        id_var = ident[1:-1] if ident.startswith("{") and ident.endswith("}") else None
        if id_var is not None:
            require(file, rule_id, ident, id_var in variables, "a variable of the route's path template")
        path = item.get("items", "$")
        out.append(CollectionLearning(source=source, items=path, id_key=None if id_var else ident,
                                      name_key=name, id_var=id_var, find=compile_jsonpath(file, rule_id, path)))
    return tuple(out)


def _selector_texts(key: str | None, arg: Any) -> list[str]:
    """The selectors a test or fact reads (to check that body-reading routes decode a body)."""
    if key is None:
        if isinstance(arg, str):
            return [arg]
        if isinstance(arg, dict) and len(arg) == 1:
            ((key, arg),) = arg.items()
        else:
            return []
    if key in ("equals", "matches") and isinstance(arg, dict):
        return [str(k) for k in arg]
    if key == "every" and isinstance(arg, dict):
        return [str(arg.get("items", ""))]
    items = arg if isinstance(arg, list) else [arg]
    return [str(i) for i in items]


def compile_route(file: Path | str, index: int, spec: Any) -> Route:
    require(file, f"routes[{index}]", spec, isinstance(spec, dict), "a route mapping")
    rid = spec.get("id")
    require(file, f"routes[{index}]", rid, isinstance(rid, str) and bool(rid), "a route id (string)")
    unknown = set(spec) - ROUTE_KEYS
    require(file, rid, sorted(unknown), not unknown, f"route keys among {', '.join(sorted(ROUTE_KEYS))}")
    kind = spec.get("kind")
    require(file, rid, kind, kind in KINDS, f"kind: one of {', '.join(KINDS)}")
    require(file, rid, spec, ("method" in spec) != ("methods" in spec), "exactly one of method / methods")
    raw_methods = spec.get("methods", [spec.get("method")])
    require(file, rid, raw_methods, isinstance(raw_methods, list) and bool(raw_methods),
            "methods: a non-empty list")
    methods = [m.upper() if isinstance(m, str) else m for m in raw_methods]
    for m in methods:
        require(file, rid, m, m in METHODS, f"an HTTP method ({', '.join(sorted(METHODS))})")
    pattern, variables = compile_template(file, rid, spec.get("path"))
    default_body = "json" if set(methods) & {"POST", "PUT", "PATCH"} else "none"
    body = spec.get("body", default_body)
    require(file, rid, body, body in BODY_KINDS, f"body: one of {', '.join(BODY_KINDS)}")
    when_spec = spec.get("when") or {}
    require(file, rid, when_spec, isinstance(when_spec, dict), f"when: a mapping of {', '.join(TEST_KEYS)}")
    when = tuple(Predicate(f"{k}: {v}", compile_test(file, rid, k, v, variables)) for k, v in when_spec.items())
    facts_spec = spec.get("facts") or {}
    require(file, rid, facts_spec, isinstance(facts_spec, dict), "facts: a mapping of name -> selector or test")
    facts = tuple(compile_fact(file, rid, k, v, variables) for k, v in facts_spec.items())
    selectors = [t for k, v in when_spec.items() for t in _selector_texts(k, v)]
    selectors += [t for v in facts_spec.values() for t in _selector_texts(None, v)]
    uses_body = any(t.startswith("$") for t in selectors)
    require(file, rid, body, not (body in ("none", "any") and uses_body),
            "body: json, ndjson or graphql on a route whose `when` or `facts` read the body")
    param, is_id, extract, source = _collection(file, rid, spec.get("collection"), variables)
    limit_spec = spec.get("limit", [])
    limits = limit_spec if isinstance(limit_spec, list) else [limit_spec]
    for sel in limits:
        require(file, rid, sel, isinstance(sel, str) and _LIMIT.fullmatch(sel) is not None,
                "limit: `$.key.path` (keys and [*] only) or `?query_param`, or a list of them")
    require(file, rid, limit_spec, not limits or body in ("json",) or all(s.startswith("?") for s in limits),
            "limit: body paths only on a route whose body is json")
    return Route(
        id=rid, kind=KINDS[kind], method=methods[0], template=spec["path"],
        collection_param=param, collection_is_id=is_id, body=body,
        request=_record_paths(file, f"{rid} request", spec.get("request")),
        response=_record_paths(file, f"{rid} response", spec.get("response")),
        methods=frozenset(methods), pattern=pattern, when=when, facts=facts,
        collection_extract=extract, collection_source=source,
        learn=_learning(file, rid, spec.get("learn"), variables), limit=tuple(limits),
    )


def _auth(file: Path | str, spec: Any) -> BackendAuth:
    require(file, "auth", spec, isinstance(spec, dict) and set(spec) <= {"token_headers", "upstream"}
            and "token_headers" in spec, "auth: {token_headers: [...], upstream: {header, format} or null}")
    headers = spec["token_headers"]
    require(file, "auth", headers, isinstance(headers, list) and bool(headers),
            "token_headers: a non-empty list of header names")
    names = []
    for h in headers:
        require(file, "auth", h, isinstance(h, str) and _HEADER.fullmatch(h.lower()) is not None,
                "a header name")
        names.append(h.lower())
    upstream = spec.get("upstream")
    if upstream is None:
        return BackendAuth(token_headers=tuple(names), upstream_header=None)
    require(file, "auth", upstream, isinstance(upstream, dict) and "header" in upstream
            and set(upstream) <= {"header", "format"}, "upstream: {header: NAME, format: '... {credential} ...'}")
    header = upstream["header"]
    require(file, "auth", header, isinstance(header, str) and _HEADER.fullmatch(header.lower()) is not None,
            "upstream.header: a header name")
    fmt = upstream.get("format", "{credential}")
    ok = isinstance(fmt, str) and "{credential}" in fmt
    if ok:
        try:
            fmt.format(credential="x")
        except (KeyError, IndexError, ValueError):
            ok = False
    require(file, "auth", fmt, ok, "upstream.format: a string with {credential} and no other {fields}")
    return BackendAuth(token_headers=tuple(names), upstream_header=header.lower(), upstream_format=fmt)


def compile_profile(file: Path, doc: Any) -> Profile:
    require(file, None, doc, isinstance(doc, dict), "a mapping with backend, auth and routes")
    unknown = set(doc) - PROFILE_KEYS
    require(file, None, sorted(unknown), not unknown, f"top-level keys among {', '.join(sorted(PROFILE_KEYS))}")
    backend = doc.get("backend")
    require(file, None, backend, isinstance(backend, str) and _NAME.fullmatch(backend) is not None,
            "backend: a lower-case name")
    routes_spec = doc.get("routes")
    require(file, None, routes_spec, isinstance(routes_spec, list) and bool(routes_spec),
            "routes: a non-empty list")
    routes = tuple(compile_route(file, i, spec) for i, spec in enumerate(routes_spec))
    by_id: dict[str, Route] = {}
    for route in routes:
        require(file, route.id, route.id, route.id not in by_id, "unique route ids")
        by_id[route.id] = route
    shape = doc.get("response_shape", "refuse")
    require(file, "response_shape", shape, shape in SHAPE_MISMATCH, f"response_shape: {' or '.join(SHAPE_MISMATCH)}")
    return Profile(name=file.stem, backend=backend, auth=_auth(file, doc.get("auth")),
                   routes=routes, by_id=by_id, resolve=_lookup(file, doc.get("resolve")),
                   shape_mismatch=shape, error_fields=_errors(file, doc.get("errors")))


def _lookup(file: Path | str, spec: Any) -> CollectionLookup | None:
    if spec is None:
        return None
    require(file, "resolve", spec, isinstance(spec, dict) and set(spec) == {"path", "id", "name"},
            "resolve: {path: GET path template with {vars}, id: KEY, name: KEY}")
    compile_template(file, "resolve", spec["path"])
    for key in ("id", "name"):
        require(file, "resolve", spec[key], isinstance(spec[key], str) and bool(spec[key]),
                f"resolve.{key}: the key holding the collection {key} in the backend's answer")
    return CollectionLookup(template=spec["path"], id_key=spec["id"], name_key=spec["name"])


def profile_path(rules_dir: str | Path, name: str) -> Path:
    if _NAME.fullmatch(name) is None:
        # The name becomes a file path: no separators, no "..".
        raise ConfigError(Path(rules_dir) / "profiles", None, name, "a profile name like 'chroma'")
    return Path(rules_dir) / "profiles" / f"{name}.yaml"


_loaded: dict[tuple[str, str], WatchedFile[Profile]] = {}


def load_profile(rules_dir: str | Path, name: str) -> WatchedFile[Profile]:
    """The process-wide, hot-reloaded profile rules/profiles/NAME.yaml (raises ConfigError).

    Cheap enough to call per request: the WatchedFile is kept per (folder, name) while it is the
    registered one (resolving the path each time would cost ~0.2 ms of stat calls).
    """
    key = (str(rules_dir), name)
    wf = _loaded.get(key)
    if wf is None or not is_registered(wf):
        wf = watched(profile_path(rules_dir, name), compile_profile)
        _loaded[key] = wf
    return wf


# --- classification -------------------------------------------------------------------------------


# GraphQL bodies (Weaviate) are parsed with graphql-core into a summary (operation, classes,
# filters, searches): a regex over the envelope would be fooled by aliases, fragments, comments and
# variables. A body that does not parse is Ambiguous and refused.
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "json": decode_json,
    "ndjson": decode_ndjson,
    "graphql": decode_graphql,
}


def decode_body(kind: str, body: bytes | None) -> Any:
    if kind == "any":
        return None
    if not body or not body.strip():
        return [] if kind == "ndjson" else None
    if kind == "none":
        raise Ambiguous("this route takes no request body")
    return _DECODERS[kind](body)


@dataclass(frozen=True, slots=True)
class Classification:
    route: Route | None
    facts: Mapping[str, Any]
    collection: str | None
    collection_id: str | None
    parts: RequestParts


def _collection_of(route: Route, parts: RequestParts) -> tuple[str | None, str | None]:
    if route.collection_source is None:
        return None, None
    values = [v for v in route.collection_source(parts) if v is not None]
    if not values:
        return None, None
    if any(v != values[0] for v in values[1:]) or not isinstance(values[0], str):
        raise Ambiguous("the request names its collection more than once, or not as a string")
    value: str | None = values[0]
    if route.collection_extract is not None and value is not None:
        m = route.collection_extract.fullmatch(value)
        value = m.group("collection") if m else None
    return (None, value) if route.collection_is_id else (value, None)


def classify_request(profile: Profile, method: str, path: str, query: str | Mapping[str, Iterable[str]] | None,
                     body: bytes | None) -> Classification:
    """Match a canonical request against the profile; raise Ambiguous for a malformed request."""
    params = parse_query(query) if query is None or isinstance(query, str) else {
        k: tuple(v) for k, v in query.items()
    }
    decoded: dict[str, Any] = {}
    for route in profile.routes:
        if method not in route.methods or route.pattern is None:
            continue
        m = route.pattern.fullmatch(path)
        if m is None:
            continue
        if route.body not in decoded:
            decoded[route.body] = decode_body(route.body, body)
        variables = {k: _unquote(v) for k, v in m.groupdict().items()}
        parts = RequestParts(method, path, params, variables, decoded[route.body])
        if all(p.test(parts) for p in route.when):
            facts = {f.name: f.extract(parts) for f in route.facts}
            collection, collection_id = _collection_of(route, parts)
            return Classification(route, facts, collection, collection_id, parts)
    return Classification(None, {}, None, None, RequestParts(method, path, params, {}, None))


def classify(profile: Profile, method: str, path: str, query: str | Mapping[str, Iterable[str]] | None,
             body: bytes | None) -> tuple[Route | None, Mapping[str, Any], str | None, str | None]:
    """(route or None, facts, collection name, collection id) for one canonical request."""
    c = classify_request(profile, method, path, query, body)
    return c.route, c.facts, c.collection, c.collection_id


@functools.lru_cache(maxsize=4096)
def _unquote(value: str) -> str:
    return unquote(value) if "%" in value else value

