"""JSONPaths compiled once into walkers that find (container, key) locations in a parsed body.

Record paths (`$.metadatas[*][*]`, `$.result.points[*].payload`) are plain steps (names, `[*]`, `.*`,
indexes) and are compiled into a small step list walked without jsonpath-ng: its generic machinery
costs more than the masking itself on a 1 MB body. Paths with filters (`[?(@.kind == "note")]`) or
slices go to jsonpath-ng's extended parser, compiled once. Recursive descent (`$..mrn`) is refused:
it visits every float of every vector (~20 ms on a 1 MB Chroma response) for a field whose place the
profile already knows.

A location is only ever yielded where a key or index already exists: masking never creates a key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonpath_ng.ext
from jsonpath_ng import jsonpath as jp

Location = tuple[Any, Any]  # (dict or list, key or index)


class PathError(ValueError):
    """A JSONPath that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Key:
    name: str


@dataclass(frozen=True, slots=True)
class Wild:
    pass


@dataclass(frozen=True, slots=True)
class Index:
    index: int


Step = Key | Wild | Index


def _flatten(node: Any, text: str) -> list[Step] | None:
    """Steps of a plain path, or None when it needs jsonpath-ng (filters, slices, unions)."""
    if isinstance(node, jp.Root):
        return []
    if isinstance(node, jp.Descendants):
        raise PathError(
            f"{text!r}: recursive descent ('..') is not allowed; it walks every vector float. "
            "Name the path (e.g. $.metadatas[*][*].mrn) or use a `fields:` target"
        )
    if isinstance(node, jp.Child):
        left = _flatten(node.left, text)
        right = _flatten(node.right, text)
        return None if left is None or right is None else left + right
    if isinstance(node, jp.Fields):
        if len(node.fields) != 1:
            return None
        name = node.fields[0]
        return [Wild()] if name == "*" else [Key(name)]
    if isinstance(node, jp.Wildcard):
        return [Wild()]
    if isinstance(node, jp.Index):
        return [Index(node.indices[0])] if len(node.indices) == 1 else None
    if isinstance(node, jp.Slice) and node.start is None and node.end is None and node.step is None:
        return [Wild()]
    return None


class Walker:
    """One compiled path. `locations(doc)` yields (container, key) where the path's values sit."""

    __slots__ = ("_expr", "steps", "text")

    def __init__(self, text: str, steps: tuple[Step, ...] | None, expr: Any) -> None:
        self.text = text
        self.steps = steps
        self._expr = expr

    @property
    def fast(self) -> bool:
        return self.steps is not None

    def first_key(self) -> str | None:
        """The top-level key this path starts under, or None when it may start anywhere."""
        if self.steps and isinstance(self.steps[0], Key):
            return self.steps[0].name
        if self.steps is None and self._expr is not None:
            return _first_field(self._expr)
        return None

    def child(self, name: str) -> Walker:
        """This path followed by `.name` (a metadata field under a record-object path)."""
        if self.steps is not None:
            return Walker(f"{self.text}.{name}", (*self.steps, Key(name)), None)
        return Walker(f"{self.text}.{name}", None, jp.Child(self._expr, jp.Fields(name)))

    def nodes(self, doc: Any) -> list[Any]:
        """The values at the path (for reading, and for record objects to mask in place)."""
        if self.steps == ():
            return [doc]  # `$`: the body itself is the record (a get of one document)
        return [c[k] for c, k in self.locations(doc)]

    def locations(self, doc: Any) -> Iterator[Location]:
        if self.steps is None:
            yield from _slow_locations(self._expr, doc)
            return
        steps = self.steps
        if not steps:
            return  # the root itself has no container: rules never replace a whole body
        current: list[Any] = [doc]
        for step in steps[:-1]:
            nxt: list[Any] = []
            if type(step) is Key:
                name = step.name
                for node in current:
                    if type(node) is dict and name in node:
                        nxt.append(node[name])
            elif type(step) is Wild:
                for node in current:
                    if type(node) is list:
                        nxt.extend(node)
                    elif type(node) is dict:
                        nxt.extend(node.values())
            else:
                i = step.index  # type: ignore[union-attr]
                for node in current:
                    if type(node) is list and -len(node) <= i < len(node):
                        nxt.append(node[i])
            current = nxt
            if not current:
                return
        last = steps[-1]
        if type(last) is Key:
            name = last.name
            for node in current:
                if type(node) is dict and name in node:
                    yield node, name
        elif type(last) is Wild:
            for node in current:
                if type(node) is list:
                    yield from ((node, i) for i in range(len(node)))
                elif type(node) is dict:
                    yield from ((node, k) for k in list(node))
        else:
            i = last.index  # type: ignore[union-attr]
            for node in current:
                if type(node) is list and -len(node) <= i < len(node):
                    yield node, i % len(node)


def _first_field(expr: Any) -> str | None:
    node = expr
    while isinstance(node, jp.Child):
        if isinstance(node.left, jp.Root) and isinstance(node.right, jp.Fields) and len(node.right.fields) == 1:
            name = node.right.fields[0]
            return None if name == "*" else str(name)
        node = node.left
    return None


def _slow_locations(expr: Any, doc: Any) -> Iterator[Location]:
    for match in expr.find(doc):
        parent = match.context.value if match.context is not None else None
        path = match.path
        if isinstance(path, jp.Fields) and len(path.fields) == 1 and type(parent) is dict:
            if path.fields[0] in parent:
                yield parent, path.fields[0]
        elif isinstance(path, jp.Index) and type(parent) is list:
            idx = path.indices[0]
            if -len(parent) <= idx < len(parent):
                yield parent, idx % len(parent)


_SIMPLE_STEP = re.compile(
    r"\.(?P<name>[A-Za-z_$#][\w$#\-]*)|\.\*|\[\*\]|\[(?P<index>-?\d+)\]"
    r"|\[(?P<q>['\"])(?P<quoted>(?:(?!(?P=q)).)*)(?P=q)\]"
)


def _simple_steps(text: str) -> tuple[Step, ...] | None:
    """Steps of a plain path parsed here, so names jsonpath-ng reserves (`where`, `and`) work."""
    if not text.startswith("$"):
        return None
    pos = 1
    steps: list[Step] = []
    while pos < len(text):
        m = _SIMPLE_STEP.match(text, pos)
        if m is None:
            return None
        if m.group("name") is not None:
            steps.append(Key(m.group("name")))
        elif m.group("index") is not None:
            steps.append(Index(int(m.group("index"))))
        elif m.group("quoted") is not None:
            steps.append(Key(m.group("quoted")))
        else:
            steps.append(Wild())
        pos = m.end()
    return tuple(steps)


def compile_path(text: str) -> Walker:
    """Compile a JSONPath once; raises PathError with the parser's position on a bad path."""
    if not isinstance(text, str) or not text.strip():
        raise PathError(f"{text!r}: expected a JSONPath string such as $.metadatas[*][*].mrn")
    if ".." in text.replace("'..'", "").replace('".."', ""):
        raise PathError(
            f"{text!r}: recursive descent ('..') is not allowed; it walks every vector float. "
            "Name the path (e.g. $.metadatas[*][*].mrn) or use a `fields:` target"
        )
    simple = _simple_steps(text.strip())
    if simple is not None:
        return Walker(text, simple, None)
    try:
        expr = jsonpath_ng.ext.parse(text)  # type: ignore[attr-defined]
    except Exception as exc:  # jsonpath-ng's lexer raises plain Exceptions too
        raise PathError(f"{text!r}: {exc}") from exc
    steps = _flatten(expr, text)
    if steps is not None and not text.lstrip().startswith("$"):
        # jsonpath-ng accepts "metadatas[*]"; rules must say where they start.
        raise PathError(f"{text!r}: a path must start at the document root '$'")
    if steps is not None:
        return Walker(text, tuple(steps), None)
    return Walker(text, None, expr)
