"""rules/masking.yaml compiled once into frozen rules, and per-route masking plans.

Masking is an allow-list. `roles:` says, per role, what happens to everything no rule names; the
rules name the fields (and documents, ids, paths) that pass, and with which operator (`clear` lets a
value through as stored). For a masked role (any default but `clear`) a record key no rule names, in
any case, at any depth, is masked by the role's default; free text (the profile's document paths)
by its `text` operator. Field names match case- and separator-insensitively: `Patient_Name`,
`patient-name` and `patientName` are the field `patient_name`.

    version: 2
    roles:                             # first entry naming one of the caller's roles applies
      clinician: {default: clear}      # unmasked: records as stored (rules still apply, e.g. ssn)
      "*": {default: redact, text: detect}   # everyone else; required
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
after field rules, in file order. A caller without an identity gets every rule and the `*` defaults
(fail closed). `default:` and `text:` take an operator name or {operator: NAME, params: {...}}.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from addons.config.jsonpath import Key, PathError, Walker, compile_path
from addons.config.profile_model import Route
from addons.config.rulefiles import ConfigError, require
from addons.core.context import OpKind
from addons.phi.detect.detector import Detector, compile_config
from addons.phi.operators import Operator, OperatorError, build

DEFAULT_OPERATORS = ("redact", "tokenize", "drop", "clear")
TEXT_OPERATORS = ("detect", "redact", "tokenize", "drop")
EVERYONE = "*"
RULE_KEYS = frozenset(
    {"id", "roles", "roles_except", "backends", "operations", "fields", "documents", "ids", "paths",
     "operator", "params", "description"}
)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_FIELD_RE = re.compile(r"^[^\s.\[\]'\"$*]{1,128}$")


@functools.lru_cache(maxsize=8192)
def field_key(name: str) -> str:
    """The form field names are matched in: case-folded, letters and digits only.

    Threat: a writer who stores `MRN`, `Patient_Name` or `patient-name` instead of the name a rule
    lists must not get the value past that rule (the rule names the field, not its spelling)."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


@dataclass(frozen=True, slots=True)
class RoleDefaults:
    """What a role receives of everything no rule names."""

    role: str  # the `roles:` entry that applied ("*": everyone not listed)
    default: Operator | None  # None: unmasked (`clear`), records pass as stored
    text: Operator | None  # free text no rule claims (None: `default`)

    @property
    def masked(self) -> bool:
        return self.default is not None

    @property
    def rule_id(self) -> str:
        return f"default:{self.role}"


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
    # A closed shape (the route declares its `other` keys): every top-level key allowed. None: open.
    keys: frozenset[str] | None = None
    other: Mapping[str, Any] = field(default_factory=dict)  # top-level key -> what it holds
    # Keys inside a record object that other record paths treat (Qdrant's payload.text is a document,
    # Weaviate's _additional.vector a vector): key -> None (treated there) or the same for the object
    # under it; one tree per metadata walker. The allow-list's defaults leave these to their own paths.
    parts: tuple[Mapping[str, Any], ...] = ()

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
    # Keyed by `field_key(name)`: every spelling of a listed field finds its rule.
    fields: Mapping[str, FieldOp] = field(default_factory=dict)
    other_steps: tuple[Step, ...] = ()
    subjects: tuple[str, ...] = ()
    # Unlisted keys of a masked role's records (None: unmasked role, unlisted keys pass).
    unlisted: FieldOp | None = None
    defaults: RoleDefaults | None = None
    subject_keys: frozenset[str] = frozenset()  # `subjects`, as field_key()s

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
    roles: tuple[RoleDefaults, ...] = ()  # in file order; the last is "*"
    _plans: dict[tuple[Any, ...], Plan] = field(default_factory=dict, compare=False, repr=False)
    _routes: dict[tuple[str, int], tuple[Route, RoutePaths]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def defaults_for(self, roles: frozenset[str] | None) -> RoleDefaults:
        """The first `roles:` entry naming one of the caller's roles, else `*` (also for no identity)."""
        if roles:
            for entry in self.roles:
                if entry.role in roles:
                    return entry
        return self.roles[-1]

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
            hit = self._compile_plan(self.applicable(roles, backend, route), route, self.defaults_for(roles))
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = hit
        return hit

    def _compile_plan(self, rules: tuple[Rule, ...], route: Route, defaults: RoleDefaults) -> Plan:
        paths = self.route_paths(route)
        steps: list[Step] = []
        fields: dict[str, FieldOp] = {}
        claimed: set[str] = set()  # first rule wins a field
        docs_claimed = ids_claimed = False
        for rule in rules:
            for f in rule.fields:
                key = field_key(f)
                if key in claimed:
                    continue
                claimed.add(key)
                fields[key] = FieldOp(rule.operator, rule.id, f.upper())
                steps.extend(Step(w.child(f), rule.operator, rule.id, f.upper(), f) for w in paths.metadata)
            if rule.documents and not docs_claimed:
                docs_claimed = True
                steps.extend(Step(w, rule.operator, rule.id, "DOCUMENT", None) for w in paths.documents)
            if rule.ids and not ids_claimed:
                ids_claimed = True
                steps.extend(Step(w, rule.operator, rule.id, "ID", None) for w in paths.ids)
        unlisted = None
        if defaults.default is not None:
            # Allow-list: what no rule claimed is masked by the role's defaults, never passed.
            unlisted = FieldOp(defaults.default, defaults.rule_id, "FIELD")
            if not docs_claimed:
                op = defaults.text or defaults.default
                steps.extend(Step(w, op, defaults.rule_id, "DOCUMENT", None) for w in paths.documents)
            if not ids_claimed:
                steps.extend(Step(w, defaults.default, defaults.rule_id, "ID", None) for w in paths.ids)
        for rule in rules:
            steps.extend(Step(w, rule.operator, rule.id, "VALUE", None) for w in rule.paths)
        other = tuple(s for s in steps if s.field is None)
        return Plan(tuple(steps), tuple(r.id for r in rules), paths, fields, other,
                    self.subjects, unlisted, defaults, frozenset(field_key(f) for f in self.subjects))


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
    roots = {w.first_key() for w in (*others, *vectors)}
    keys = None
    if resp.other and None not in roots:
        keys = frozenset({*(k for k in roots if k is not None), *resp.other})
    metadata = walkers(resp.metadata)
    return RoutePaths(metadata, walkers(resp.documents), walkers(resp.ids), vectors, splice,
                      keys, dict(resp.other),
                      tuple(_record_parts(m, (*walkers(resp.documents), *walkers(resp.ids), *vectors))
                            for m in metadata))


def _record_parts(rec: Walker, others: tuple[Walker, ...]) -> dict[str, Any]:
    """The tree of keys under a record object that another record path reaches (see RoutePaths.parts)."""
    tree: dict[str, Any] = {}
    if rec.steps is not None:
        for w in others:
            if w.steps is None or len(w.steps) <= len(rec.steps) or w.steps[:len(rec.steps)] != rec.steps:
                continue
            rest = w.steps[len(rec.steps):]
            if not all(type(s) is Key for s in rest):
                continue
            node = tree
            for i, step in enumerate(rest):
                name = step.name  # type: ignore[union-attr]
                if i == len(rest) - 1:
                    node[name] = None
                else:
                    child = node.get(name, {})
                    if child is None:
                        break  # a whole subtree is already treated elsewhere
                    node = node.setdefault(name, child)
    return tree


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


def _role_operator(file: Path, role: str, raw: Any, key: str, allowed: tuple[str, ...]) -> Operator | None:
    spec = raw.get(key)
    if spec is None:
        return None
    name, params = (spec, None) if isinstance(spec, str) else (
        (spec.get("operator"), spec.get("params")) if isinstance(spec, Mapping) else (None, None))
    shaped = isinstance(spec, str) or set(spec) <= {"operator", "params"}
    require(file, f"roles.{role}", spec, name in allowed and shaped,
            f"{key}: one of {', '.join(allowed)}, or {{operator: NAME, params: {{...}}}}")
    if name == "clear":
        return None
    try:
        return build(name, params)
    except OperatorError as exc:
        raise ConfigError(file, f"roles.{role}", spec, str(exc)) from exc


def compile_roles(file: Path, raw: Any) -> tuple[RoleDefaults, ...]:
    require(file, "roles", raw, isinstance(raw, Mapping) and EVERYONE in raw,
            "roles: a mapping of role -> {default: OPERATOR, text: OPERATOR}, with a '*' entry for every "
            "other role (masking is an allow-list: it must say what unlisted fields become)")
    out = []
    for role, spec in raw.items():
        require(file, "roles", role, isinstance(role, str) and bool(role), "a role name")
        require(file, f"roles.{role}", spec, isinstance(spec, Mapping) and "default" in spec
                and set(spec) <= {"default", "text", "description"},
                "{default: OPERATOR, text: OPERATOR (optional), description: ...}")
        default = _role_operator(file, role, spec, "default", DEFAULT_OPERATORS)
        text = _role_operator(file, role, spec, "text", TEXT_OPERATORS)
        require(file, f"roles.{role}", spec, default is not None or text is None,
                "no `text:` on an unmasked role (default: clear)")
        out.append(RoleDefaults(role, default, text))
    # "*" is the fallback wherever it was written.
    return tuple(sorted(out, key=lambda d: d.role == EVERYONE))


def compile_masking(file: Path, doc: Any) -> MaskingRules:
    """The compile function given to `rulefiles.watched` for masking.yaml."""
    require(file, None, doc, isinstance(doc, Mapping), "a mapping with version: 2, roles:, rules:, subjects:, detect:")
    unknown = set(doc) - {"version", "roles", "rules", "subjects", "detect"}
    require(file, None, sorted(unknown), not unknown, "only the keys version, roles, rules, subjects, detect")
    require(file, None, doc.get("version"), doc.get("version") == 2,
            "version: 2 (an allow-list with a roles: section; version 1 files listed only what to mask: "
            "add roles: {clinician: {default: clear}, '*': {default: redact, text: detect}} and rules with "
            "operator: clear for the fields each role may see)")
    roles = compile_roles(file, doc.get("roles"))
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
    needs_key = bool(subjects) or any(r.operator.needs_key for r in rules) or any(
        op.needs_key for d in roles for op in (d.default, d.text) if op is not None)
    return MaskingRules(str(file), rules, tuple(subjects), Detector(config), needs_key, roles)
