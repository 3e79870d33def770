"""rules/masking.yaml compiled once into frozen rules, and per-route masking plans.

    subjects: [mrn, patient_name]      # fields naming a data subject (keyed refs for 164.528)
    detect: {mrn: {pattern: '\\d{7}'}}   # free-text recogniser settings (addons/phi/detect/detector.py)
    rules:
      - id: agents-tokenize-ids
        roles_except: [clinicians]     # or roles: [agents]
        backends: [chroma]             # optional; default every backend
        operations: [search, get, export]   # optional; operation kinds or route ids
        fields: [mrn, patient_name]    # resolved through the backend profile's metadata paths
        documents: true                # the profile's document paths (free text)
        paths: ['$.x[?(@.k == "v")].y'] # raw JSONPath for anything else
        operator: tokenize
        params: {}

A field is masked by the first rule (in file order) that targets it for the caller; raw paths apply
after field rules, in file order. A caller without an identity gets every rule (fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from addons.config.jsonpath import PathError, Walker, compile_path
from addons.config.profile_model import Route
from addons.config.rulefiles import ConfigError, require
from addons.core.context import OpKind
from addons.phi.detect.detector import Detector, compile_config
from addons.phi.operators import Operator, OperatorError, build

RULE_KEYS = frozenset(
    {"id", "roles", "roles_except", "backends", "operations", "fields", "documents", "ids", "paths",
     "operator", "params", "description"}
)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_FIELD_RE = re.compile(r"^[^\s.\[\]'\"$*]{1,128}$")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    roles: frozenset[str] | None  # None: every role not in roles_except
    roles_except: frozenset[str]
    backends: frozenset[str] | None
    operations: frozenset[str] | None  # operation kinds and/or route ids
    fields: tuple[str, ...]
    documents: bool
    ids: bool
    paths: tuple[Walker, ...]
    operator: Operator

    def applies(self, roles: frozenset[str] | None, backend: str, kind: str, route_id: str) -> bool:
        if self.operations is not None and kind not in self.operations and route_id not in self.operations:
            return False
        return self.covers(roles, backend)

    def covers(self, roles: frozenset[str] | None, backend: str) -> bool:
        """The rule is for this caller on this backend (whatever the operation)."""
        if self.backends is not None and backend not in self.backends:
            return False
        if roles is None:
            return True  # no verified identity: every rule applies (fail closed)
        if roles & self.roles_except:
            return False
        return self.roles is None or bool(roles & self.roles)


@dataclass(frozen=True, slots=True)
class Step:
    """One masking action of a plan: the operator at every location of the walker."""

    walker: Walker
    operator: Operator
    rule_id: str
    label: str  # identifier type for placeholders, tokens and counts (MRN, PATIENT_NAME, DOCUMENT)
    field: str | None  # the metadata field, for fields_disclosed


@dataclass(frozen=True, slots=True)
class RoutePaths:
    """A route's response record paths, compiled."""

    metadata: tuple[Walker, ...]
    documents: tuple[Walker, ...]
    ids: tuple[Walker, ...]
    vectors: tuple[Walker, ...]
    # Top-level keys holding only vectors: spliced past the parser (see masking_engine).
    splice_keys: tuple[str, ...]

    @property
    def has_records(self) -> bool:
        return bool(self.metadata or self.documents or self.ids)


@dataclass(frozen=True, slots=True)
class FieldOp:
    operator: Operator
    rule_id: str
    label: str


@dataclass(frozen=True, slots=True)
class Plan:
    # Every action, one step per (target, location path): what the plan does, for reading and tests.
    steps: tuple[Step, ...]
    rule_ids: tuple[str, ...]
    paths: RoutePaths
    # The same, as executed: field rules keyed by field, applied in one walk over the records (a
    # walk per field would visit every record twenty times); then the other steps.
    fields: Mapping[str, FieldOp] = field(default_factory=dict)
    other_steps: tuple[Step, ...] = ()
    subjects: tuple[str, ...] = ()

    @property
    def masks(self) -> bool:
        return bool(self.steps)


@dataclass(frozen=True)
class MaskingRules:
    file: str
    rules: tuple[Rule, ...]
    subjects: tuple[str, ...]
    detector: Detector
    needs_key: bool
    _plans: dict[tuple[Any, ...], Plan] = field(default_factory=dict, compare=False, repr=False)
    _routes: dict[tuple[str, int], tuple[Route, RoutePaths]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def applicable(self, roles: frozenset[str] | None, backend: str, route: Route) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.applies(roles, backend, str(route.kind), route.id))

    def applicable_any_operation(self, roles: frozenset[str] | None, backend: str) -> tuple[Rule, ...]:
        """Rules for the caller on this backend whatever the operation (for unmapped routes)."""
        return tuple(r for r in self.rules if r.covers(roles, backend))

    def route_paths(self, route: Route) -> RoutePaths:
        key = (route.id, id(route))
        hit = self._routes.get(key)
        if hit is not None:
            return hit[1]
        paths = compile_route_paths(route)
        self._routes[key] = (route, paths)  # keep the route alive so its id() is not reused
        return paths

    def plan(self, roles: frozenset[str] | None, backend: str, route: Route) -> Plan:
        # Keyed by the caller's roles too: choosing the applicable rules is most of the cost of a
        # small response's masking, and callers come in few role sets. `route` is kept alive by
        # `_routes` (route_paths below), so its id() is not reused while the entry lives.
        key = (roles, backend, route.id, id(route))
        hit = self._plans.get(key)
        if hit is None:
            hit = self._compile_plan(self.applicable(roles, backend, route), route)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = hit
        return hit

    def _compile_plan(self, rules: tuple[Rule, ...], route: Route) -> Plan:
        paths = self.route_paths(route)
        steps: list[Step] = []
        fields: dict[str, FieldOp] = {}
        claimed: set[str] = set()  # first rule wins a field
        docs_claimed = ids_claimed = False
        for rule in rules:
            for f in rule.fields:
                if f in claimed:
                    continue
                claimed.add(f)
                fields[f] = FieldOp(rule.operator, rule.id, f.upper())
                steps.extend(Step(w.child(f), rule.operator, rule.id, f.upper(), f) for w in paths.metadata)
            if rule.documents and not docs_claimed:
                docs_claimed = True
                steps.extend(Step(w, rule.operator, rule.id, "DOCUMENT", None) for w in paths.documents)
            if rule.ids and not ids_claimed:
                ids_claimed = True
                steps.extend(Step(w, rule.operator, rule.id, "ID", None) for w in paths.ids)
        for rule in rules:
            steps.extend(Step(w, rule.operator, rule.id, "VALUE", None) for w in rule.paths)
        other = tuple(s for s in steps if s.field is None)
        return Plan(tuple(steps), tuple(r.id for r in rules), paths, fields, other, self.subjects)


def compile_route_paths(route: Route) -> RoutePaths:
    def walkers(texts: tuple[str, ...]) -> tuple[Walker, ...]:
        out = []
        for t in texts:
            try:
                out.append(compile_path(t))
            except PathError as exc:
                raise ConfigError(f"profile route {route.id}", route.id, t, f"a usable JSONPath ({exc})") from exc
        return tuple(out)

    resp = route.response
    vectors = walkers(resp.vectors)
    others = walkers(resp.metadata) + walkers(resp.documents) + walkers(resp.ids)
    # Splice a top-level key only when no record path starts under it.
    record_roots = {w.first_key() for w in others}
    splice = tuple(
        k for k in dict.fromkeys(w.first_key() for w in vectors) if k is not None and k not in record_roots
    )
    return RoutePaths(walkers(resp.metadata), walkers(resp.documents), walkers(resp.ids), vectors, splice)


def _str_set(file: Path, rule_id: str | None, raw: Any, key: str, empty_ok: bool = False) -> frozenset[str] | None:
    value = raw.get(key)
    if value is None:
        return None
    require(file, rule_id, value, isinstance(value, list) and all(isinstance(v, str) and v for v in value)
            and (empty_ok or len(value) > 0), f"{key}: a {'' if empty_ok else 'non-empty '}list of names")
    return frozenset(value)


_KINDS = frozenset(k.value for k in OpKind)


def compile_rule(file: Path, raw: Any, seen: set[str]) -> Rule:
    require(file, None, raw, isinstance(raw, Mapping), "a rule mapping with id, targets and operator")
    rid = raw.get("id")
    require(file, None, rid, isinstance(rid, str) and bool(_ID_RE.match(rid)), "an id: letters, digits, _.-")
    require(file, rid, rid, rid not in seen, "a rule id not used by an earlier rule")
    seen.add(rid)
    unknown = set(raw) - RULE_KEYS
    require(file, rid, sorted(unknown), not unknown, f"only the keys {', '.join(sorted(RULE_KEYS))}")
    roles = _str_set(file, rid, raw, "roles")
    roles_except = _str_set(file, rid, raw, "roles_except", empty_ok=True) or frozenset()
    require(file, rid, raw.get("roles"), roles is not None or "roles_except" in raw,
            "roles: [..] or roles_except: [..] (a rule must say whom it covers)")
    require(file, rid, raw.get("roles"), not (roles is not None and "roles_except" in raw),
            "either roles or roles_except, not both")
    backends = _str_set(file, rid, raw, "backends")
    operations = _str_set(file, rid, raw, "operations")
    if operations is not None:
        for op in operations:
            require(file, rid, op, op in _KINDS or "." in op,
                    f"an operation kind ({', '.join(sorted(_KINDS))}) or a route id such as chroma.query")
    fields = raw.get("fields") or []
    require(file, rid, fields, isinstance(fields, list) and all(isinstance(f, str) and _FIELD_RE.match(f)
                                                                   for f in fields),
            "fields: a list of payload field names (no dots or brackets; use paths: for JSONPath)")
    documents = raw.get("documents", False)
    ids = raw.get("ids", False)
    require(file, rid, documents, isinstance(documents, bool), "documents: true or false")
    require(file, rid, ids, isinstance(ids, bool), "ids: true or false")
    raw_paths = raw.get("paths") or []
    require(file, rid, raw_paths, isinstance(raw_paths, list), "paths: a list of JSONPath strings")
    walkers = []
    for text in raw_paths:
        try:
            walkers.append(compile_path(text))
        except PathError as exc:
            raise ConfigError(file, rid, text, f"a JSONPath that parses ({exc})") from exc
    require(file, rid, raw.get("fields"), bool(fields or documents or ids or walkers),
            "at least one target: fields, documents, ids or paths")
    try:
        operator = build(raw.get("operator"), raw.get("params"))
    except OperatorError as exc:
        raise ConfigError(file, rid, {"operator": raw.get("operator"), "params": raw.get("params")}, str(exc)) from exc
    return Rule(rid, roles, roles_except, backends, operations, tuple(fields), documents, ids, tuple(walkers),
                operator)


def compile_masking(file: Path, doc: Any) -> MaskingRules:
    """The compile function given to `rulefiles.watched` for masking.yaml."""
    require(file, None, doc, isinstance(doc, Mapping), "a mapping with rules:, subjects:, detect:")
    unknown = set(doc) - {"version", "rules", "subjects", "detect"}
    require(file, None, sorted(unknown), not unknown, "only the keys version, rules, subjects, detect")
    raw_rules = doc.get("rules")
    # An empty rule list would mask nothing: say so rather than release everything silently.
    require(file, None, raw_rules, isinstance(raw_rules, list) and len(raw_rules) > 0, "rules: a non-empty list")
    seen: set[str] = set()
    rules = tuple(compile_rule(file, r, seen) for r in raw_rules)
    subjects = doc.get("subjects") or []
    require(file, None, subjects, isinstance(subjects, list) and all(isinstance(s, str) and _FIELD_RE.match(s)
                                                                      for s in subjects),
            "subjects: a list of payload field names identifying a data subject")
    config = compile_config(doc.get("detect"), lambda value, expected: ConfigError(file, "detect", value, expected))
    needs_key = bool(subjects) or any(r.operator.needs_key for r in rules)
    return MaskingRules(str(file), rules, tuple(subjects), Detector(config), needs_key)
