"""Whether a parsed response has the shape its route declares, and masking a body as a whole.

The profile says where records sit in each route's response (record paths) and, for a closed shape,
which other top-level keys exist and what they hold. Threat: masking follows those paths; a body
that puts records elsewhere (a /get answered in /query shape, a JSON document encoded as a string,
PHI under a `debug` key) would otherwise go out with those records untouched. Messages name no key
or value: they reach the client and the audit, and an upstream chooses its keys.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from addons.config.jsonpath import Index, Key, Step, Wild
from addons.config.masking_rules import RoutePaths
from addons.phi.operators import DROP, Operator, Run

_NUMBER = (int, float)


def _numbers(v: Any) -> bool:
    """Numbers, nulls and lists (or named groups) of them: what vectors and distances hold."""
    t = type(v)
    if t is float or t is int or v is None:
        return True
    if t is list:
        return all(_numbers(x) for x in v)
    if t is dict:
        return all(_numbers(x) for x in v.values())
    return False


def _record(v: Any) -> bool:
    return type(v) is dict


def _scalar(v: Any) -> bool:
    return type(v) in (str, int, float, bool)


def _ident(v: Any) -> bool:
    return type(v) in (str, int)


def _holds(value: Any, kind: Any) -> bool:
    if kind == "numbers":
        return _numbers(value)
    if kind == "null":
        return value is None
    allowed = frozenset(kind)

    def ok(v: Any) -> bool:
        if type(v) is list:
            return all(ok(x) for x in v)
        return v is None or (type(v) is str and v in allowed)

    return ok(value)


def _follows(steps: tuple[Step, ...], doc: Any, leaf: Callable[[Any], bool]) -> bool:
    """Every container along the path is the kind the path steps into, and every value at its end
    passes `leaf` (null is allowed anywhere: backends write null for an absent include)."""
    current = [doc]
    for step in steps:
        nxt: list[Any] = []
        for node in current:
            if node is None:
                continue
            t = type(node)
            if type(step) is Key:
                if t is not dict:
                    return False
                if step.name in node:
                    nxt.append(node[step.name])
            elif type(step) is Wild:
                if t is list:
                    nxt.extend(node)
                elif t is dict:
                    nxt.extend(node.values())
                else:
                    return False
            else:
                assert type(step) is Index
                if t is not list:
                    return False
                if -len(node) <= step.index < len(node):
                    nxt.append(node[step.index])
        current = nxt
    return all(v is None or leaf(v) for v in current)


def problem(doc: Any, paths: RoutePaths, spliced: Collection[str] = ()) -> str | None:
    """Why `doc` is not the route's declared shape, or None. `spliced`: top-level vector keys cut
    out before parsing (checked as numbers-only bytes there)."""
    if paths.keys is not None:
        if type(doc) is not dict:
            return "the body is not the JSON object this route answers with"
        if not doc.keys() <= paths.keys:
            return "the body has top-level keys the backend profile does not declare for this route"
        for key, kind in paths.other.items():
            if key in doc and not _holds(doc[key], kind):
                return "a top-level value is not what the backend profile declares for this route"
    checks = ((paths.metadata, _record), (paths.documents, _scalar), (paths.ids, _ident), (paths.vectors, _numbers))
    for walkers, leaf in checks:
        for w in walkers:
            if w.steps is None:
                continue  # a filter path: it selects records, it does not say where they must be
            if w.steps and type(w.steps[0]) is Key and w.steps[0].name in spliced:
                continue
            if not _follows(w.steps, doc, leaf):
                return "records are not where, or not what, the backend profile declares for this route"
    return None


def mask_whole(node: Any, op: Operator, run: Run, label: str = "VALUE") -> Any:
    """Every string and number of `node` through `op`, in place where it can be; lists of numbers
    only (vectors, distances) are kept. Returns the new node (or DROP)."""
    t = type(node)
    if t is dict:
        for k in list(node):
            new = mask_whole(node[k], op, run, label)
            if new is DROP:
                del node[k]
            else:
                node[k] = new
        return node
    if t is list:
        if node and all(type(x) in _NUMBER or x is None for x in node):
            return node
        for i, v in enumerate(node):
            new = mask_whole(v, op, run, label)
            node[i] = None if new is DROP else new
        return node
    if t is str or t is int or t is float:
        return op.apply(node, label, run)
    return node  # true, false, null
