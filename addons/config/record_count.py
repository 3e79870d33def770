"""Counting the records in an answer, and lowering a request's own limit, from a profile's routes.

Export is judged twice. First from the request's syntax (a get with neither ids nor a filter is an
export): cheap, but no syntax check can tell that `{"$and": []}` or `{"ward": {"$ne": "zz"}}`
matches every record. Then from the answer: a policy cap on records per response
(policy.yaml `max_records`) is checked against the records the profile locates in the response
(its `response:` paths: ids, metadata, documents, vectors), whatever the query said.

Where the backend takes a limit (the route's `limit:` selectors: Chroma `n_results` and `limit`,
Qdrant `limit`, Pinecone `topK`, Milvus `limit`, OpenSearch `size`, ...), the gateway also lowers
it to cap + 1 before forwarding, so the backend never sends a whole collection only for the gateway
to withhold it (cap + 1, not cap: one record more than allowed is what proves the cap was hit).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from addons.config.profile_model import RecordPaths, Route
from addons.config.profiles import compile_jsonpath

Finder = Callable[[Any], list[Any]]


@functools.lru_cache(maxsize=2048)
def _finder(path: str) -> Finder:
    # Profile paths were validated when the profile compiled; this only memoises the finder.
    return compile_jsonpath("profile", None, path)


def record_paths(paths: RecordPaths) -> tuple[str, ...]:
    return (*paths.ids, *paths.metadata, *paths.documents, *paths.vectors)


def countable(route: Route) -> bool:
    """True when the profile says where records sit in this route's answers."""
    return bool(record_paths(route.response))


def count_records(route: Route, doc: Any) -> int:
    """Records in one decoded answer: the most values any one record path locates.

    Each path locates at most one value per record (an id, a payload, a note, a vector), so the
    largest count is the number of records even when an answer leaves some parts out (Chroma
    without `documents` in `include`, Qdrant without payloads).
    """
    return max((len(_finder(p)(doc)) for p in record_paths(route.response)), default=0)


def requested_ids(route: Route, body: Any) -> int | None:
    """How many records a request names by id; None when it names none (its answer is unbounded)."""
    if body is None or not route.request.ids:
        return None
    named = 0
    for path in route.request.ids:
        for value in _finder(path)(body):
            if isinstance(value, list):
                named += len(value)
            elif value is not None:
                named += 1
    return named or None


# --- lowering the request's limit -------------------------------------------------------------------


def _steps(path: str) -> list[str | None]:
    """`$.a.b[*].c` -> ["a", "b", None, "c"] (None: every item). Validated at profile load."""
    out: list[str | None] = []
    for part in path[2:].replace("[*]", ".[*]").split("."):
        if part:
            out.append(None if part == "[*]" else part.strip("[]'"))
    return out


def _parents(doc: Any, steps: list[str | None]) -> list[dict[str, Any]]:
    current = [doc]
    for step in steps:
        found: list[Any] = []
        for value in current:
            if step is None and isinstance(value, list):
                found.extend(value)
            elif step is not None and isinstance(value, dict) and step in value:
                found.append(value[step])
        current = found
    return [v for v in current if isinstance(v, dict)]


def _lower(value: Any, ceiling: int) -> int | None:
    """The value to write, or None to leave it: numbers at or under the ceiling stay."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= ceiling:
        return None
    return ceiling


def lower_body_limit(path: str, doc: Any, ceiling: int, inject: bool) -> bool:
    """Lower the limit at `path` in `doc` (in place) to at most `ceiling`; True when it changed.

    A missing limit is written when `inject` is set and its parent object exists (a missing, null or
    non-numeric limit means the backend's default, which may be everything).
    """
    steps = _steps(path)
    changed = False
    for parent in _parents(doc, steps[:-1]):
        key = steps[-1]
        assert key is not None
        if key in parent:
            new = _lower(parent[key], ceiling)
        else:
            new = ceiling if inject else None
        if new is not None:
            parent[key] = new
            changed = True
    return changed


def limit_updates(route: Route, body: Any, query: Mapping[str, Iterable[str]], ceiling: int
                  ) -> tuple[bool, dict[str, str]]:
    """Apply the route's `limit` selectors: (body changed in place?, query parameters to set).

    Every selector present in the request is lowered; when none is, the first is injected.
    """
    def is_present(sel: str) -> bool:
        if sel.startswith("?"):
            return sel[1:] in query
        return any(v is not None for v in _finder(sel)(body)) if body is not None else False

    present = [s for s in route.limit if is_present(s)]
    targets = present or list(route.limit[:1])
    body_changed, params = False, {}
    for sel in targets:
        if sel.startswith("?"):
            values = list(query.get(sel[1:], ()))
            current = int(values[0]) if len(values) == 1 and values[0].isdigit() else None
            if _lower(current, ceiling) is not None:
                params[sel[1:]] = str(ceiling)
        elif body is not None:
            body_changed |= lower_body_limit(sel, body, ceiling, inject=not present)
    return body_changed, params


def restore_body_limits(route: Route, original: Any, current: Any) -> None:
    """Put the client's own limits (values, or their absence) back into `current`, in place.

    `current` is the request as forwarded (the masking addon may have turned token handles back into
    values since), `original` the client's: the same structure, so parents pair up in order.
    """
    for sel in route.limit:
        if sel.startswith("?"):
            continue
        steps = _steps(sel)
        key = steps[-1]
        assert key is not None
        for before, now in zip(_parents(original, steps[:-1]), _parents(current, steps[:-1]), strict=False):
            if key in before:
                now[key] = before[key]
            else:
                now.pop(key, None)


def query_limit_names(route: Route) -> tuple[str, ...]:
    return tuple(sel[1:] for sel in route.limit if sel.startswith("?"))
