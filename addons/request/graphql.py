"""Weaviate's GraphQL bodies, parsed with a real GraphQL parser into what a profile can match on.

Weaviate puts the class, the search operator, the filter and the requested properties inside one
GraphQL string (`{ Get { Note(nearVector: {...}, where: {...}) { mrn _additional { id } } } }`), so a
regex over the body would be fooled by aliases, fragments, comments or variables. graphql-core parses
the document; this module reduces the one operation that will run to a small summary:

    {"operation": "query", "root": "Get", "classes": ["Note"], "searches": ["nearVector"],
     "filters": [{...}], "has_filter": true, "limit": 3, "properties": ["mrn"],
     "additional": ["id"], "texts": ["raw text of nearText/hybrid/bm25/ask"]}

`root` is None unless exactly one root field is selected, so a document mixing `Get` and `Aggregate`
matches no route and is denied. Everything a fragment or variable contributes is resolved, because a
filter hidden in a variable is still a filter. Malformed documents raise `Ambiguous` (refused).
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, parse
from graphql.language import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.utilities import value_from_ast_untyped

from addons.request.canonical_form import Ambiguous, decode_json

# Arguments of a Weaviate class field that make it a similarity search (and those carrying raw text).
SEARCH_ARGS = ("nearVector", "nearText", "nearObject", "nearImage", "nearMedia", "hybrid", "bm25", "ask",
               "groupBy")
TEXT_ARGS = {"nearText": ("concepts",), "hybrid": ("query",), "bm25": ("query",), "ask": ("question",)}
ROOTS_WITH_CLASSES = ("Get", "Aggregate")
# Parsing cost is bounded before any work: a deeply nested or huge document is refused, not parsed.
MAX_TOKENS = 20_000
MAX_DEPTH = 32


def _fields(selection: SelectionSetNode | None, fragments: dict[str, FragmentDefinitionNode],
            depth: int = 0, seen: frozenset[str] = frozenset()) -> list[FieldNode]:
    """The fields a selection set selects, with fragment spreads and inline fragments flattened."""
    if selection is None:
        return []
    if depth > MAX_DEPTH:
        raise Ambiguous("the GraphQL document nests too deeply")
    out: list[FieldNode] = []
    for node in selection.selections:
        if isinstance(node, FieldNode):
            out.append(node)
        elif isinstance(node, InlineFragmentNode):
            out.extend(_fields(node.selection_set, fragments, depth + 1, seen))
        elif isinstance(node, FragmentSpreadNode):
            name = node.name.value
            if name in seen or name not in fragments:
                raise Ambiguous(f"GraphQL fragment {name[:40]!r} is undefined or recursive")
            out.extend(_fields(fragments[name].selection_set, fragments, depth + 1, seen | {name}))
    return out


def _value(arg: ArgumentNode, variables: dict[str, Any]) -> Any:
    return value_from_ast_untyped(arg.value, variables)


def _pick_operation(doc: DocumentNode, name: str | None) -> OperationDefinitionNode:
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if name is not None:
        ops = [op for op in ops if op.name is not None and op.name.value == name]
    if len(ops) != 1:
        # Which operation runs would depend on operationName handling: refuse rather than guess.
        raise Ambiguous("the GraphQL document must hold exactly one operation (or name it in operationName)")
    return ops[0]


def _summarize_class(field: FieldNode, variables: dict[str, Any], fragments: dict[str, FragmentDefinitionNode],
                     summary: dict[str, Any]) -> None:
    summary["classes"].append(field.name.value)
    for arg in field.arguments or ():
        name = arg.name.value
        value = _value(arg, variables)
        if name in SEARCH_ARGS:
            summary["searches"].append(name)
            for key in TEXT_ARGS.get(name, ()):
                text = value.get(key) if isinstance(value, dict) else None
                texts = text if isinstance(text, list) else [text]
                summary["texts"].extend(t for t in texts if isinstance(t, str))
        elif name == "where":
            if value is not None:
                summary["filters"].append(value)
        elif name in ("limit", "offset", "after", "autocut"):
            summary[name] = value
    for sub in _fields(field.selection_set, fragments):
        prop = sub.name.value
        if prop == "_additional":
            summary["additional"].extend(f.name.value for f in _fields(sub.selection_set, fragments))
        elif not prop.startswith("__"):
            summary["properties"].append(prop)


def summarize(query: str, variables: dict[str, Any] | None = None, operation_name: str | None = None
              ) -> dict[str, Any]:
    try:
        doc = parse(query, no_location=True, max_tokens=MAX_TOKENS)
    except GraphQLError as exc:
        raise Ambiguous(f"the GraphQL document does not parse ({exc.message[:80]})") from None
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
    op = _pick_operation(doc, operation_name)
    variables = variables or {}
    roots = _fields(op.selection_set, fragments)
    root_names = sorted({f.name.value for f in roots})
    summary: dict[str, Any] = {
        "operation": op.operation.value,
        "root": root_names[0] if len(root_names) == 1 else None,
        "roots": root_names,
        "classes": [], "searches": [], "filters": [], "properties": [], "additional": [], "texts": [],
        "limit": None, "offset": None, "after": None, "autocut": None,
    }
    for root in roots:
        if root.name.value in ROOTS_WITH_CLASSES:
            for cls in _fields(root.selection_set, fragments):
                _summarize_class(cls, variables, fragments, summary)
        elif root.name.value == "Explore":
            # Explore searches every class at once: there is no class to name.
            summary["searches"].extend(a.name.value for a in root.arguments or () if a.name.value in SEARCH_ARGS)
            for arg in root.arguments or ():
                for key in TEXT_ARGS.get(arg.name.value, ()):
                    value = _value(arg, variables)
                    text = value.get(key) if isinstance(value, dict) else None
                    summary["texts"].extend(t for t in (text if isinstance(text, list) else [text])
                                            if isinstance(t, str))
    summary["has_filter"] = bool(summary["filters"])
    summary["properties"] = sorted(set(summary["properties"]))
    summary["additional"] = sorted(set(summary["additional"]))
    summary["searches"] = sorted(set(summary["searches"]))
    return summary


def decode_graphql(body: bytes) -> dict[str, Any]:
    """Body decoder for `body: graphql` routes: the JSON envelope, parsed and summarized."""
    envelope = decode_json(body)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("query"), str):
        raise Ambiguous('a GraphQL request must be a JSON object {"query": "..."}')
    variables = envelope.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise Ambiguous("GraphQL variables must be a JSON object")
    name = envelope.get("operationName")
    if name is not None and not isinstance(name, str):
        raise Ambiguous("GraphQL operationName must be a string")
    return summarize(envelope["query"], variables, name)

