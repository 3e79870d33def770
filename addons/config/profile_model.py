"""The compiled form of a backend profile (rules/profiles/NAME.yaml).

A profile is data, not code: it says, for one backend, which routes exist, what kind of operation
each is, where the collection sits, and where records (ids, documents, metadata/payload, vectors)
sit in that route's requests and responses. `addons/config/profiles.py` compiles YAML into these frozen
objects once at load; the classify, masking and forward addons only read them.

The shape is designed against every supported backend (rules/profiles/), not Chroma alone:
- a route may match on method + path template, and further on body predicates (Chroma's export is
  POST /get with neither ids nor where; Milvus's delete decides by-id vs by-filter on its filter);
- a route may declare its body NDJSON (OpenSearch _bulk/_msearch) or GraphQL (Weaviate), judged
  item by item;
- record locations are JSONPath strings, so Qdrant's `$.result.points[*].payload` and Chroma's
  `$.metadatas[*][*]` are the same kind of thing: a masking rule on field `mrn` becomes
  `<metadata path>.mrn` on every route of every backend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from addons.core.context import OpKind


@dataclass(frozen=True, slots=True)
class BackendAuth:
    """Where callers put their token and how the backend's own credential is sent upstream."""

    # Request headers that may carry the caller's token (lower case), e.g. authorization,
    # x-chroma-token, api-key. All are stripped before forwarding.
    token_headers: tuple[str, ...]
    # Header that carries the backend's own credential upstream, and its format ("Bearer {credential}").
    upstream_header: str | None
    upstream_format: str = "{credential}"


@dataclass(frozen=True, slots=True)
class RecordPaths:
    """Where records sit in one body. Each entry is a JSONPath string (compiled by the user)."""

    ids: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()  # free text: scanned by `detect` rules
    metadata: tuple[str, ...] = ()  # each points at a metadata/payload object; field f is `path.f`
    vectors: tuple[str, ...] = ()  # never masked
    filters: tuple[str, ...] = ()  # where/filter objects (requests): tokens here are detokenized
    # Responses: the other top-level keys of the body and what they hold ("numbers", "null", or a
    # list of the strings allowed). A route that declares them has a closed shape: any other
    # top-level key is a shape mismatch (see Profile.shape_mismatch).
    other: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestParts:
    """What classification reads from one canonical request (built by the classify addon)."""

    method: str
    path: str  # canonical path, without the query
    query: Mapping[str, tuple[str, ...]]  # decoded query parameters, every value kept in order
    vars: Mapping[str, str]  # path-template variables, percent-decoded
    body: Any  # the decoded body document (JSON value, NDJSON list of values, GraphQL summary) or None


@dataclass(frozen=True, slots=True)
class Predicate:
    """One `when` test of a route (compiled by profiles.py); `text` is as written, for messages."""

    text: str
    test: Callable[[RequestParts], bool] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact a route extracts for policy rules (has_filter, limit, ids_count, ...)."""

    name: str
    extract: Callable[[RequestParts], Any] = field(compare=False)


@dataclass(frozen=True, slots=True)
class CollectionLearning:
    """Where a route's exchange names collections, so ids met later can be resolved to names.

    Applied only after the backend answered 2xx: the backend, not a caller, vouches for the pairing.
    `source` is the body read (response, or the request for a rename the backend accepted); `find`
    yields the collection objects at `items`; in each, `id_key`/`name_key` name the fields, or the
    id comes from a path variable (`id_var`).
    """

    source: str  # response | request
    items: str  # JSONPath, as written
    id_key: str | None
    name_key: str
    id_var: str | None = None
    find: Callable[[Any], list[Any]] = field(default=lambda doc: [], compare=False)


@dataclass(frozen=True, slots=True)
class Route:
    id: str  # e.g. "chroma.query"
    kind: OpKind
    method: str
    template: str  # e.g. "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query"
    # Path variable (or JSON field) naming the collection, and whether it is an id to resolve to a name.
    collection_param: str | None = None
    collection_is_id: bool = False
    body: str = "json"  # json | ndjson | graphql | none | any
    request: RecordPaths = field(default_factory=RecordPaths)
    response: RecordPaths = field(default_factory=RecordPaths)
    # Extra settings a route may carry (predicates, facts to extract); compiled by profiles.py.
    options: Mapping[str, Any] = field(default_factory=dict)
    # Compiled matching (profiles.py fills these; added after the first version of this model).
    methods: frozenset[str] = frozenset()  # every method the route takes; `method` is the first
    pattern: re.Pattern[str] | None = None  # the template as an anchored regex with named groups
    when: tuple[Predicate, ...] = ()  # all must hold (body/query/path predicates)
    facts: tuple[Fact, ...] = ()
    # A regex with a `collection` group applied to the collection value (e.g. a "tenant:db:name" CRN).
    collection_extract: re.Pattern[str] | None = None
    # Reads the collection value (path variable, body JSONPath or query parameter) from a request.
    collection_source: Callable[[RequestParts], list[Any]] | None = field(default=None, compare=False)
    learn: tuple[CollectionLearning, ...] = ()
    # Where the backend takes a record limit (`$.path` or `?param`): lowered to a policy cap + 1.
    limit: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CollectionLookup:
    """How the gateway asks the backend itself for the name of a collection id it has not learned.

    Needed when the id was learned by another gateway process (several workers) or before a
    restart. `template` is a GET path whose {vars} come from the request's path variables; the
    answer is trusted only if its `id_key` equals the id asked about.
    """

    template: str
    id_key: str
    name_key: str


@dataclass(frozen=True, slots=True)
class Profile:
    name: str  # e.g. "chroma"
    backend: str  # e.g. "chroma"
    auth: BackendAuth
    routes: tuple[Route, ...]
    # The same routes keyed by id (filled by the compiler): hooks look routes up per response.
    by_id: Mapping[str, Route] = field(default_factory=dict)
    # Optional: resolve an unknown collection id by asking the backend (added after the first version).
    resolve: CollectionLookup | None = None
    # A masked role's response whose shape is not the route's declared one: "refuse" (502
    # unexpected_shape, the default) or "mask" (masked as a whole with the role's default).
    shape_mismatch: str = "refuse"
    # Error-body fields that may reach a masked role (after masking), each with the pattern its value
    # must match (e.g. Chroma's `error` class name); any other error body is replaced by the gateway's.
    error_fields: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    def route(self, route_id: str) -> Route | None:
        return self.by_id.get(route_id)
