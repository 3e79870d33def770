"""rules/policy.yaml compiled: ordered rules on roles, operations, collections, routes and request facts;
the first matching rule decides, nothing matching means deny. Format: see addons/policy.py."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addons.config.profile_model import RequestParts
from addons.config.profiles import compile_jsonpath, present
from addons.config.roles import RoleMapping, compile_role_mapping
from addons.config.rulefiles import WatchedFile, is_registered, require, watched
from addons.core.context import Action, Caller, Decision, HoldSpec, Operation, OpKind

log = logging.getLogger("phigate")

KINDS = {kind.value: kind for kind in OpKind}
ACTIONS = {action.value: action for action in Action}
TOP_KEYS = frozenset({"roles", "rules", "description", "max_records"})
CAP_KEYS = frozenset({"id", "description", "roles", "collections", "max"})
# Operation kinds whose answers carry records a cap counts (exports are judged as exports already).
CAPPED_KINDS = frozenset({OpKind.SEARCH, OpKind.GET})
RULE_KEYS = frozenset({"id", "description", "roles", "operations", "collections", "routes", "backends",
                       "when", "action", "reason", "approver_roles", "approvals_required", "timeout",
                       "purpose"})
HOLD_KEYS = frozenset({"approver_roles", "approvals_required", "timeout"})
COMPARISONS = ("above", "below", "at_least", "at_most")
FACT_TESTS = frozenset({*COMPARISONS, "in", "not_in", "present", "equals"})
ANY_ROLE = "*"
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_DENY_REASON = "no policy rule allows this operation (default deny)"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")

# A test's verdict: True, False, or None (unknown: the fact it needs is missing).
Verdict = bool | None
Test = Callable[[Operation, RequestParts | None], Verdict]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    action: Action
    reason: str | None
    roles: frozenset[str] | None  # None: any authenticated caller
    operations: frozenset[OpKind] | None  # None: any kind except unknown
    collections: tuple[str, ...] | None
    routes: tuple[str, ...] | None
    backends: frozenset[str] | None
    when: tuple[Test, ...]
    hold: HoldSpec | None
    purpose: str | None

    def matches(self, roles: frozenset[str], op: Operation, parts: RequestParts | None) -> bool:
        if self.roles is not None and ANY_ROLE not in self.roles and not roles & self.roles:
            return False
        if self.operations is None:
            # An unrecognised request is never covered by a catch-all rule: it must be named.
            if op.kind == OpKind.UNKNOWN:
                return False
        elif op.kind not in self.operations:
            return False
        if self.backends is not None and op.backend not in self.backends:
            return False
        if self.collections is not None and (
            op.collection is None or not any(fnmatch.fnmatchcase(op.collection, g) for g in self.collections)
        ):
            return False
        if self.routes is not None and not any(fnmatch.fnmatchcase(op.route, g) for g in self.routes):
            return False
        verdicts = [test(op, parts) for test in self.when]
        if any(v is False for v in verdicts):
            return False
        # Unknown verdicts: an allow needs certainty; a deny or hold errs towards applying.
        return self.action != Action.ALLOW or all(v is True for v in verdicts)

    def decision(self) -> Decision:
        return Decision(action=self.action, rule_id=self.id, reason=self.reason, hold=self.hold,
                        purpose=self.purpose)


@dataclass(frozen=True, slots=True)
class Cap:
    """One `max_records` entry: at most `max` records per answer for these roles and collections."""

    id: str
    max: int
    roles: frozenset[str] | None
    collections: tuple[str, ...] | None

    def applies(self, roles: frozenset[str], op: Operation) -> bool:
        if self.roles is not None and ANY_ROLE not in self.roles and not roles & self.roles:
            return False
        return self.collections is None or (
            op.collection is not None and any(fnmatch.fnmatchcase(op.collection, g) for g in self.collections))


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The compiled rules/policy.yaml: `.roles` for the identity addon, `.rules` for this one."""

    roles: RoleMapping
    rules: tuple[Rule, ...]
    caps: tuple[Cap, ...] = ()

    def record_cap(self, identity: Caller | None, op: Operation | None, parts: RequestParts | None
                   ) -> tuple[Cap, Decision] | None:
        """For an allowed read: its cap and what happens above it (the export decision), or None.

        None when no cap applies, or when the caller may export the collection anyway (then a
        large answer is no bypass of anything).
        """
        if identity is None or op is None or op.kind not in CAPPED_KINDS:
            return None
        cap = next((c for c in self.caps if c.applies(identity.roles, op)), None)
        if cap is None:
            return None
        export = self.decide(identity, dataclasses.replace(op, kind=OpKind.EXPORT), parts)
        return None if export.action == Action.ALLOW else (cap, export)

    def decide(self, identity: Caller | None, op: Operation | None, parts: RequestParts | None) -> Decision:
        if identity is None:
            return Decision(Action.DENY, None, "no verified identity for this request")
        if op is None:
            return Decision(Action.DENY, None, "the request was not classified")
        for rule in self.rules:
            if rule.matches(identity.roles, op, parts):
                return rule.decision()
        return Decision(Action.DENY, None, _default_reason(op))


def _default_reason(op: Operation) -> str:
    if op.kind == OpKind.UNKNOWN:
        return "the gateway does not recognise this request (unknown operation; default deny)"
    if op.collection is None and op.collection_id is not None:
        return (f"collection id {op.collection_id} is not known to the gateway yet; "
                "open the collection by name first (default deny)")
    return DEFAULT_DENY_REASON


# --- compiling ------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value):
        return float(value)
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _fact_test(file: Path, rid: str, name: str, spec: Any) -> Test:
    if not isinstance(spec, dict):
        require(file, rid, spec, isinstance(spec, str | int | float | bool), f"`{name}`: a scalar or a test mapping")
        spec = {"equals": spec}
    unknown = set(spec) - FACT_TESTS
    require(file, rid, spec, bool(spec) and not unknown, f"`{name}`: tests among {', '.join(sorted(FACT_TESTS))}")
    checks: list[Test] = []
    for key, arg in spec.items():
        if key in COMPARISONS:
            require(file, rid, arg, _number(arg) is not None and not isinstance(arg, str), f"`{name}.{key}`: a number")
            checks.append(_comparison(name, key, float(arg)))
        elif key in ("in", "not_in"):
            require(file, rid, arg, isinstance(arg, list) and bool(arg), f"`{name}.{key}`: a non-empty list")
            checks.append(_membership(name, tuple(arg), key == "in"))
        elif key == "present":
            require(file, rid, arg, isinstance(arg, bool), f"`{name}.present`: true or false")
            checks.append(_presence(name, arg))
        else:
            require(file, rid, arg, isinstance(arg, str | int | float | bool), f"`{name}.equals`: a scalar")
            checks.append(_equality(name, arg))
    return _all_of(checks)


def _comparison(name: str, key: str, bound: float) -> Test:
    def test(op: Operation, parts: RequestParts | None) -> Verdict:
        value = _number(op.facts.get(name))
        if value is None:
            return None
        return {"above": value > bound, "below": value < bound,
                "at_least": value >= bound, "at_most": value <= bound}[key]

    return test


def _membership(name: str, options: tuple[Any, ...], inside: bool) -> Test:
    def test(op: Operation, parts: RequestParts | None) -> Verdict:
        if name not in op.facts:
            return None
        found = any(_same(op.facts[name], o) for o in options)
        return found if inside else not found

    return test


def _presence(name: str, wanted: bool) -> Test:
    return lambda op, parts: present(op.facts.get(name)) is wanted


def _equality(name: str, expected: Any) -> Test:
    def test(op: Operation, parts: RequestParts | None) -> Verdict:
        if name not in op.facts or op.facts[name] is None:
            return None
        return _same(op.facts[name], expected)

    return test


def _all_of(checks: list[Test]) -> Test:
    def test(op: Operation, parts: RequestParts | None) -> Verdict:
        verdicts = [c(op, parts) for c in checks]
        if any(v is False for v in verdicts):
            return False
        return True if all(v is True for v in verdicts) else None

    return test


def _body_test(file: Path, rid: str, key: str, spec: Any) -> Test:
    items = spec if isinstance(spec, list) else [spec]
    require(file, rid, spec, bool(items), f"`{key}`: a JSONPath or a list of JSONPaths")
    finders = [compile_jsonpath(file, rid, p) for p in items]
    wanted = key == "body_has"

    def test(op: Operation, parts: RequestParts | None) -> Verdict:
        if parts is None:
            return None
        body = parts.body
        has = [any(present(v) for v in f(body)) if body is not None else False for f in finders]
        return all(has) if wanted else not any(has)

    return test


def _when(file: Path, rid: str, spec: Any) -> tuple[Test, ...]:
    if spec is None:
        return ()
    require(file, rid, spec, isinstance(spec, dict) and bool(spec), "when: a mapping of fact -> test")
    tests: list[Test] = []
    for key, arg in spec.items():
        require(file, rid, key, isinstance(key, str) and re.fullmatch(r"[a-z_][a-z0-9_]*", key) is not None,
                "a fact name in lower_snake_case, body_has or body_lacks")
        if key in ("body_has", "body_lacks"):
            tests.append(_body_test(file, rid, key, arg))
        else:
            tests.append(_fact_test(file, rid, key, arg))
    return tuple(tests)


def _names(file: Path, rid: str, key: str, value: Any, check: Callable[[str], bool], expected: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    require(file, rid, value, isinstance(items, list) and bool(items), f"{key}: a non-empty list ({expected})")
    for item in items:
        require(file, rid, item, isinstance(item, str) and check(item), f"{key}: {expected}")
    return list(items)


def _timeout(file: Path, rid: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.fullmatch(value) if isinstance(value, str) else None
        require(file, rid, value, m is not None, "timeout: seconds, or a duration like 90s, 5m, 1h")
        assert m is not None
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    require(file, rid, value, 0 < seconds <= 86400, "timeout: more than 0 and at most 24 hours")
    return seconds


def compile_rule(file: Path, index: int, spec: Any, known_roles: frozenset[str]) -> Rule:
    where = f"rules[{index}]"
    require(file, where, spec, isinstance(spec, dict), "a rule mapping")
    rid = spec.get("id")
    require(file, where, rid, isinstance(rid, str) and _ID.fullmatch(rid) is not None,
            "a rule id (letters, digits, - _ . :)")
    unknown = set(spec) - RULE_KEYS
    require(file, rid, sorted(unknown), not unknown, f"rule keys among {', '.join(sorted(RULE_KEYS))}")
    action_text = spec.get("action")
    require(file, rid, action_text, action_text in ACTIONS, "action: allow, deny or hold")
    action = ACTIONS[action_text]

    def role_ok(role: str) -> bool:
        # A role no mapping produces is a typo; in a deny rule it would silently never apply.
        return role == ANY_ROLE or role in known_roles

    role_list = (f"a role the roles: map produces ({', '.join(sorted(known_roles)) or 'none'}) or '*'")
    roles = (frozenset(_names(file, rid, "roles", spec["roles"], role_ok, role_list))
             if "roles" in spec else None)
    operations = None
    if "operations" in spec:
        kinds = _names(file, rid, "operations", spec["operations"], lambda k: k in KINDS,
                       f"operation kinds among {', '.join(KINDS)}")
        operations = frozenset(KINDS[k] for k in kinds)
        require(file, rid, spec["operations"], not (action == Action.ALLOW and OpKind.UNKNOWN in operations),
                "no `allow` for unknown operations: add the route to the backend profile instead")
    collections = tuple(_names(file, rid, "collections", spec["collections"], bool, "collection name globs")) \
        if "collections" in spec else None
    routes = tuple(_names(file, rid, "routes", spec["routes"], bool, "route id globs")) if "routes" in spec else None
    backends = frozenset(_names(file, rid, "backends", spec["backends"], bool, "backend names")) \
        if "backends" in spec else None
    reason = spec.get("reason")
    require(file, rid, reason, reason is None or (isinstance(reason, str) and bool(reason.strip())),
            "reason: a sentence shown to the client")
    if action == Action.DENY and reason is None:
        reason = f"denied by policy rule {rid}"
    purpose = spec.get("purpose")
    require(file, rid, purpose, purpose is None or (isinstance(purpose, str) and bool(purpose)),
            "purpose: a purpose-of-use string")
    hold = None
    if action == Action.HOLD:
        require(file, rid, spec, "approver_roles" in spec, "approver_roles on a hold rule")
        approvers = frozenset(_names(file, rid, "approver_roles", spec["approver_roles"],
                                     lambda r: r in known_roles, role_list.replace(" or '*'", "")))
        required = spec.get("approvals_required", 1)
        require(file, rid, required, isinstance(required, int) and not isinstance(required, bool)
                and 1 <= required <= 10, "approvals_required: a whole number from 1 to 10")
        timeout = _timeout(file, rid, spec.get("timeout", DEFAULT_TIMEOUT_S))
        hold = HoldSpec(approver_roles=approvers, approvals_required=required, timeout_s=timeout)
    else:
        stray = sorted(HOLD_KEYS & set(spec))
        require(file, rid, stray, not stray, "approver_roles/approvals_required/timeout only on hold rules")
    return Rule(id=rid, action=action, reason=reason, roles=roles, operations=operations,
                collections=collections, routes=routes, backends=backends,
                when=_when(file, rid, spec.get("when")), hold=hold, purpose=purpose)


def compile_caps(file: Path, spec: Any, known_roles: frozenset[str]) -> tuple[Cap, ...]:
    if spec is None:
        return ()
    require(file, "max_records", spec, isinstance(spec, list), "max_records: a list of {id, roles, collections, max}")
    caps = []
    role_list = f"a role the roles: map produces ({', '.join(sorted(known_roles)) or 'none'}) or '*'"
    for index, entry in enumerate(spec):
        where = f"max_records[{index}]"
        require(file, where, entry, isinstance(entry, dict), "a mapping {id, roles, collections, max}")
        cid = entry.get("id")
        require(file, where, cid, isinstance(cid, str) and _ID.fullmatch(cid) is not None,
                "an id (letters, digits, - _ . :)")
        unknown = set(entry) - CAP_KEYS
        require(file, cid, sorted(unknown), not unknown, f"keys among {', '.join(sorted(CAP_KEYS))}")
        most = entry.get("max")
        require(file, cid, most, isinstance(most, int) and not isinstance(most, bool) and 1 <= most <= 1_000_000,
                "max: a whole number of records from 1 to 1000000")
        roles = (frozenset(_names(file, cid, "roles", entry["roles"], lambda r: r == ANY_ROLE or r in known_roles,
                                  role_list)) if "roles" in entry else None)
        collections = (tuple(_names(file, cid, "collections", entry["collections"], bool, "collection name globs"))
                       if "collections" in entry else None)
        caps.append(Cap(id=cid, max=most, roles=roles, collections=collections))
    ids = [c.id for c in caps]
    for cid in ids:
        require(file, cid, cid, ids.count(cid) == 1, "unique max_records ids")
    return tuple(caps)


def compile_policy(file: Path, doc: Any) -> PolicySet:
    require(file, None, type(doc).__name__, isinstance(doc, dict), "a mapping with roles: and rules:")
    unknown = set(doc) - TOP_KEYS
    require(file, None, sorted(unknown), not unknown, f"top-level keys among {', '.join(sorted(TOP_KEYS))}")
    roles = compile_role_mapping(file, doc.get("roles"))
    rules_spec = doc.get("rules")
    require(file, None, rules_spec, "rules" in doc and isinstance(rules_spec, list),
            "rules: a list (an empty list denies everything)")
    known = frozenset(r for targets in roles.map.values() for r in targets)
    rules = tuple(compile_rule(file, i, spec, known) for i, spec in enumerate(rules_spec))
    seen: set[str] = set()
    for rule in rules:
        require(file, rule.id, rule.id, rule.id not in seen, "unique rule ids")
        seen.add(rule.id)
    if not rules:
        log.warning("phigate: %s has no rules: every request is denied", file)
    return PolicySet(roles=roles, rules=rules, caps=compile_caps(file, doc.get("max_records"), known))


_loaded: dict[str, WatchedFile[PolicySet]] = {}


def load_policy(rules_dir: str | Path) -> WatchedFile[PolicySet]:
    """The process-wide, hot-reloaded rules_dir/policy.yaml (raises ConfigError); cheap per request."""
    cached = _loaded.get(str(rules_dir))
    if cached is not None and is_registered(cached):
        return cached
    wf = watched(Path(rules_dir) / "policy.yaml", compile_policy)
    if not isinstance(wf.current, PolicySet):
        # rulefiles keeps one compiler per path: another addon watching policy.yaml with its own
        # compiler would hand us its object. Fail loudly rather than decide with the wrong one.
        raise RuntimeError(f"{wf.path} is watched with another compiler; use load_policy(...).current.roles")
    _loaded[str(rules_dir)] = wf
    return wf
