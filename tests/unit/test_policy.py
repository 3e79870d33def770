"""Unit tests for addons/policy.py and rules/policy.yaml: decisions, validation, reloads, fail-closed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from addons import classify as classify_mod
from addons.classify import Classify
from addons.config import policy_rules, rulefiles
from addons.config.policy_rules import PolicySet, load_policy
from addons.config.profile_model import RequestParts
from addons.config.rulefiles import ConfigError
from addons.core.context import Action, Caller, HoldSpec, Operation, OpKind, Stage, context
from addons.forward import Forward
from addons.gateway import Gateway
from addons.policy import Policy

ROOT = Path(__file__).resolve().parents[2]
TD = "/api/v2/tenants/default_tenant/databases/default_database"
UUID = "f43b389c-34ca-4a94-9620-85cc91eb9677"


def who(*roles: str) -> Caller:
    return Caller(subject="s-1", issuer="https://idp.test", roles=frozenset(roles), token_id="jti-1",
                    expires_at=4e9)


def op(kind: str, route: str = "chroma.x", collection: str | None = "patients_notes",
       facts: dict[str, Any] | None = None, collection_id: str | None = None) -> Operation:
    return Operation(backend="chroma", kind=OpKind(kind), route=route, method="POST", path="/p",
                     collection=collection, collection_id=collection_id, facts=facts or {})


@pytest.fixture(scope="module")
def demo() -> PolicySet:
    return load_policy(ROOT / "rules").current


# (roles, operation) -> (action, rule id): the demo policy in rules/policy.yaml.
DEMO = [
    (("agent",), op("health", "chroma.heartbeat", None), "allow", "health-for-all"),
    (("approver",), op("admin", "chroma.identity", None), "allow", "connect"),
    (("clinician",), op("admin", "chroma.tenant.get", None), "allow", "connect"),
    (("clinician",), op("search", "chroma.query", facts={"has_filter": True}), "allow", "clinicians-read-patients"),
    (("clinician",), op("get", "chroma.get", facts={"has_filter": True}), "allow", "clinicians-read-patients"),
    (("clinician",), op("get", "chroma.count"), "allow", "clinicians-read-patients"),
    (("clinician",), op("search", "chroma.query", "billing", {"has_filter": True}), "deny", None),
    (("clinician",), op("search", "chroma.query", facts={"has_filter": False}), "hold",
     "whole-collection-search-needs-approval"),
    # a route without the fact: the hold (not the allow) applies
    (("clinician",), op("search", "chroma.search"), "hold", "whole-collection-search-needs-approval"),
    (("clinician",), op("export", "chroma.get.export"), "hold", "export-needs-approval"),
    (("clinician",), op("write", "chroma.add"), "deny", None),
    (("clinician",), op("admin", "chroma.collection.get"), "allow", "clinicians-open-patients"),
    (("clinician",), op("admin", "chroma.collection.get", "billing"), "deny", None),
    (("agent",), op("search", "chroma.query", "anything", {"has_filter": True}), "allow", "agents-search"),
    (("agent",), op("get", "chroma.get", facts={"has_filter": True}), "deny", None),
    (("agent",), op("export", "chroma.get.export"), "deny", None),  # holds are for readers only
    (("agent",), op("search", "chroma.query", None, {"has_filter": True}, UUID), "deny", None),
    (("db-admin",), op("schema-write", "chroma.collection.create"), "allow", "db-admins-manage"),
    (("db-admin",), op("write", "chroma.add"), "allow", "db-admins-data"),
    (("db-admin",), op("delete", "chroma.delete", facts={"has_filter": False, "has_ids": True}), "allow",
     "db-admins-data"),
    (("db-admin",), op("delete", "chroma.delete", facts={"has_filter": True}), "hold",
     "delete-by-filter-needs-approval"),
    (("db-admin",), op("drop", "chroma.collection.drop"), "deny", "no-drop"),
    (("db-admin",), op("drop", "chroma.reset", None), "deny", "no-drop"),
    (("clinician", "db-admin"), op("drop", "chroma.delete.all"), "deny", "no-drop"),
    (("db-admin",), op("unknown", "unknown", None), "deny", None),
    ((), op("health", "chroma.heartbeat", None), "allow", "health-for-all"),
    ((), op("search", "chroma.query", facts={"has_filter": True}), "deny", None),
    (("approver",), op("get", "chroma.get", facts={"has_filter": True}), "deny", None),
    (("emergency",), op("get", "chroma.get", facts={"has_filter": True}), "deny", None),
]


@pytest.mark.parametrize(("roles", "operation", "action", "rule_id"), DEMO)
def test_demo_policy(demo: PolicySet, roles: tuple[str, ...], operation: Operation, action: str,
                     rule_id: str | None) -> None:
    decision = demo.decide(who(*roles), operation, None)
    assert (decision.action.value, decision.rule_id) == (action, rule_id)
    if action == "deny":
        assert decision.reason
    if action == "hold":
        assert decision.hold == HoldSpec(approver_roles=frozenset({"approver"}), approvals_required=1,
                                         timeout_s=300.0)


def test_demo_role_mapping(demo: PolicySet) -> None:
    assert demo.roles.claim == "groups"
    assert demo.roles.map["clinicians"] == frozenset({"clinician"})
    assert demo.roles.roles_for({"groups": ["agents", "unknown-group"]}) == frozenset({"agent"})


def test_default_deny_reasons(demo: PolicySet) -> None:
    assert "not known to the gateway" in (demo.decide(who("agent"), op("search", "chroma.query", None,
                                                                       {"has_filter": True}, UUID), None).reason or "")
    assert "unknown operation" in (demo.decide(who("db-admin"), op("unknown", "unknown"), None).reason or "")
    assert "no verified identity" in (demo.decide(None, op("health"), None).reason or "")
    assert "not classified" in (demo.decide(who("agent"), None, None).reason or "")


# --- rules in isolation ------------------------------------------------------------------------------

ROLES = "roles:\n  claim: groups\n  map: {g-a: a, g-b: b, g-ap: approver}\n"


def compile_rules(tmp_path: Path, rules: str) -> PolicySet:
    (tmp_path / "policy.yaml").write_text(ROLES + rules)
    return load_policy(tmp_path).current


def test_empty_rule_set_denies_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="phigate"):
        policy = compile_rules(tmp_path, "rules: []\n")
    assert "every request is denied" in caplog.text
    for kind in OpKind:
        assert policy.decide(who("a", "b"), op(kind.value), None).action == Action.DENY


@pytest.mark.parametrize(
    ("when", "facts", "allow_matches", "deny_matches"),
    [
        ("{n_results: {above: 50}}", {"n_results": 51}, True, True),
        ("{n_results: {above: 50}}", {"n_results": 50}, False, False),
        ("{n_results: {above: 50}}", {"n_results": "51"}, True, True),  # query-string numbers
        ("{n_results: {above: 50}}", {}, False, True),  # unknown: never allows, always restricts
        ("{n_results: {above: 50}}", {"n_results": None}, False, True),
        ("{n_results: {above: 50}}", {"n_results": True}, False, True),  # a boolean is not a number
        ("{limit: {at_most: 10}}", {"limit": 10}, True, True),
        ("{limit: {at_most: 10}}", {"limit": None}, False, True),  # null limit = unbounded
        ("{limit: {at_least: 5, below: 9}}", {"limit": 7}, True, True),
        ("{limit: {at_least: 5, below: 9}}", {"limit": 9}, False, False),
        ("{has_filter: true}", {"has_filter": True}, True, True),
        ("{has_filter: true}", {"has_filter": False}, False, False),
        ("{has_filter: true}", {"has_filter": 1}, False, False),
        ("{has_filter: false}", {}, False, True),
        ("{database: {in: [default_database, d2]}}", {"database": "d2"}, True, True),
        ("{database: {not_in: [secret]}}", {"database": "secret"}, False, False),
        ("{database: {not_in: [secret]}}", {}, False, True),
        ("{new_name: {present: true}}", {"new_name": "x"}, True, True),
        ("{new_name: {present: true}}", {"new_name": None}, False, False),
        ("{has_filter: true, n_results: {above: 5}}", {"has_filter": True}, False, True),
        ("{has_filter: true, n_results: {above: 5}}", {"has_filter": False}, False, False),
    ],
)
def test_fact_predicates_fail_closed(tmp_path: Path, when: str, facts: dict[str, Any], allow_matches: bool,
                                     deny_matches: bool) -> None:
    policy = compile_rules(tmp_path, f"rules:\n  - {{id: r, action: allow, when: {when}}}\n"
                                     f"  - {{id: d, action: deny, when: {when}}}\n")
    allow_rule, deny_rule = policy.rules
    operation = op("search", facts=facts)
    assert allow_rule.matches(frozenset({"a"}), operation, None) is allow_matches
    assert deny_rule.matches(frozenset({"a"}), operation, None) is deny_matches


def test_body_jsonpath_predicates(tmp_path: Path) -> None:
    policy = compile_rules(tmp_path, "rules:\n"
                                     "  - {id: wd, action: deny, reason: no document filters,"
                                     " when: {body_has: [$.where_document]}}\n"
                                     "  - {id: ok, action: allow, when: {body_lacks: [\"$['where']\"]}}\n")

    def parts(body: Any) -> RequestParts:
        return RequestParts("POST", "/p", {}, {}, body)

    assert policy.decide(who("a"), op("search"), parts({"where_document": {"$contains": "x"}})).rule_id == "wd"
    assert policy.decide(who("a"), op("search"), parts({"where_document": None})).rule_id == "ok"
    assert policy.decide(who("a"), op("search"), parts({"where": {"a": 1}})).rule_id is None
    # without the decoded body the allow cannot be sure, the deny applies
    assert policy.decide(who("a"), op("search"), None).rule_id == "wd"


def test_matchers(tmp_path: Path) -> None:
    policy = compile_rules(tmp_path, """rules:
  - {id: any-role, roles: ["*"], operations: [health], action: allow}
  - {id: role-b, roles: [b], operations: [get], collections: ["pat*", "ward-?"], action: allow}
  - {id: routes, roles: [a], routes: ["chroma.get*"], backends: [chroma], action: allow}
  - {id: catch-all, roles: [a, b], action: deny, reason: nope}
  - {id: unknown, operations: [unknown], action: deny, reason: not recognised}
""")
    assert policy.decide(who(), op("health"), None).rule_id == "any-role"
    assert policy.decide(who("b"), op("get", collection="patients"), None).rule_id == "role-b"
    assert policy.decide(who("b"), op("get", collection="ward-7"), None).rule_id == "role-b"
    assert policy.decide(who("b"), op("get", collection="ward-77"), None).rule_id == "catch-all"
    assert policy.decide(who("b"), op("get", collection="Patients"), None).rule_id == "catch-all"  # case
    assert policy.decide(who("b"), op("get", collection=None), None).rule_id == "catch-all"
    assert policy.decide(who("a"), op("export", "chroma.get.export"), None).rule_id == "routes"
    assert policy.decide(who("a"), op("export", "chroma.query"), None).rule_id == "catch-all"
    # catch-all rules never cover an unknown operation: only a rule naming `unknown` does
    assert policy.decide(who("a"), op("unknown", "unknown"), None).rule_id == "unknown"


def test_hold_rule_fields(tmp_path: Path) -> None:
    policy = compile_rules(tmp_path, """rules:
  - id: two-person
    operations: [export]
    action: hold
    approver_roles: [approver]
    approvals_required: 2
    timeout: 90s
    purpose: operations
    reason: big export
  - {id: defaults, operations: [search], action: hold, approver_roles: approver}
""")
    d = policy.decide(who("a"), op("export"), None)
    assert d.action == Action.HOLD and d.purpose == "operations" and d.reason == "big export"
    assert d.hold == HoldSpec(frozenset({"approver"}), approvals_required=2, timeout_s=90.0)
    assert policy.decide(who("a"), op("search"), None).hold == HoldSpec(frozenset({"approver"}), 1, 300.0)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("rules:\n  - {id: r, action: permit}\n",
         r"rule 'r': bad value 'permit'; expected action: allow, deny or hold"),
        ("rules:\n  - {action: allow}\n", r"rule 'rules\[0\]': bad value None; expected a rule id"),
        ("rules:\n  - {id: r, action: allow, roles: [clinican]}\n",
         r"rule 'r': bad value 'clinican'; expected roles: a role the roles: map produces \(a, approver, b\)"),
        ("rules:\n  - {id: r, action: allow, operations: [read]}\n",
         r"rule 'r': bad value 'read'; expected operations"),
        ("rules:\n  - {id: r, action: allow, operations: [unknown]}\n", r"no `allow` for unknown operations"),
        ("rules:\n  - {id: r, action: allow, collection: [x]}\n",
         r"rule 'r': bad value \['collection'\]; expected rule keys"),
        ("rules:\n  - {id: r, action: allow, collections: []}\n", r"expected collections: a non-empty list"),
        ("rules:\n  - {id: r, action: hold}\n", r"expected approver_roles on a hold rule"),
        ("rules:\n  - {id: r, action: hold, approver_roles: [boss]}\n", r"bad value 'boss'; expected approver_roles"),
        ("rules:\n  - {id: r, action: hold, approver_roles: [approver], approvals_required: 0}\n",
         r"bad value 0; expected approvals_required: a whole number from 1 to 10"),
        ("rules:\n  - {id: r, action: hold, approver_roles: [approver], timeout: soon}\n",
         r"bad value 'soon'; expected timeout: seconds, or a duration"),
        ("rules:\n  - {id: r, action: hold, approver_roles: [approver], timeout: -5}\n", r"more than 0"),
        ("rules:\n  - {id: r, action: deny, timeout: 5}\n", r"only on hold rules"),
        ("rules:\n  - {id: r, action: allow, when: {n_results: {over: 5}}}\n", r"`n_results`: tests among"),
        ("rules:\n  - {id: r, action: allow, when: {n_results: {above: ten}}}\n", r"`n_results.above`: a number"),
        ("rules:\n  - {id: r, action: allow, when: {Has-Filter: true}}\n", r"a fact name in lower_snake_case"),
        ("rules:\n  - {id: r, action: allow, when: {body_has: [where]}}\n", r"a JSONPath string starting with"),
        ("rules:\n  - {id: r, action: allow, when: {body_has: [$.where]}}\n", r"reserves words such as `where`"),
        ("rules:\n  - {id: r, action: deny, reason: ''}\n", r"expected reason: a sentence"),
        ("rules:\n  - {id: r, action: allow}\n  - {id: r, action: deny}\n", r"rule 'r'.*expected unique rule ids"),
        ("", r"expected rules: a list"),
        ("rules: {}\n", r"expected rules: a list"),
        ("rules: []\nextra: 1\n", r"expected top-level keys among"),
        ("rules: []\nrules: []\n", r"duplicate key 'rules'"),
    ],
)
def test_bad_policies_say_file_rule_value_and_expectation(tmp_path: Path, rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        compile_rules(tmp_path, rules)
    assert "policy.yaml" in str(info.value)


def test_bad_role_section_is_reported(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("roles: {claim: groups}\nrules: []\n")
    with pytest.raises(ConfigError, match=r"rule 'roles'.*'map'"):
        load_policy(tmp_path)


def test_reload_applies_a_good_edit_and_keeps_the_last_good_rules(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ROLES + "rules:\n  - {id: r1, roles: [a], operations: [search], action: allow}\n")
    wf = load_policy(tmp_path)
    assert wf.current.decide(who("a"), op("search"), None).rule_id == "r1"

    path.write_text(ROLES + "rules:\n  - {id: r2, roles: [a], operations: [search], action: deny, reason: x}\n")
    assert rulefiles.reload_all() == [wf]
    assert load_policy(tmp_path).current.decide(who("a"), op("search"), None).rule_id == "r2"

    path.write_text(ROLES + "rules:\n  - {id: r3, roles: [a], operations: [search], action: alow}\n")
    assert rulefiles.reload_all() == []
    assert load_policy(tmp_path).current.decide(who("a"), op("search"), None).rule_id == "r2"
    assert wf.last_error is not None and "rule 'r3'" in wf.last_error and "'alow'" in wf.last_error


# --- the addon --------------------------------------------------------------------------------------


@pytest.fixture
def addon() -> Iterator[Policy]:
    gateway, policy = Gateway(), Policy()
    with taddons.context(gateway, policy) as tctx:
        tctx.configure(policy, phigate_rules=str(ROOT / "rules"), phigate_profile="chroma")
        yield policy


def flow_with(identity: Caller | None, operation: Operation | None) -> http.HTTPFlow:
    f = tflow.tflow()
    c = context(f)
    c.identity, c.operation = identity, operation
    return f


def test_denial_is_403_with_rule_and_reason(addon: Policy) -> None:
    f = flow_with(who("db-admin"), op("drop", "chroma.collection.drop"))
    addon.request(f)
    assert f.response is not None and f.response.status_code == 403
    body = f.response.json()
    assert body["error"] == "forbidden" and body["rule_id"] == "no-drop"
    assert body["reason"] == body["detail"]
    assert body["reason"] == "dropping collections, databases or the server is disabled in this deployment"
    c = context(f)
    assert c.decision is not None and c.decision.action == Action.DENY and c.decision.rule_id == "no-drop"
    assert c.refusal is not None and c.refusal.stage == Stage.POLICY


def test_default_deny_is_403_without_rule(addon: Policy) -> None:
    f = flow_with(who("agent"), op("write", "chroma.add"))
    addon.request(f)
    assert f.response is not None and f.response.status_code == 403
    assert f.response.json()["rule_id"] is None and "default deny" in f.response.json()["reason"]


def test_allow_and_hold_leave_the_flow_going(addon: Policy) -> None:
    allowed = flow_with(who("clinician"), op("get", "chroma.get", facts={"has_filter": True}))
    addon.request(allowed)
    assert allowed.response is None and context(allowed).decision.action == Action.ALLOW  # type: ignore[union-attr]
    assert context(allowed).decision.purpose == "treatment"  # type: ignore[union-attr]
    held = flow_with(who("clinician"), op("export", "chroma.get.export"))
    addon.request(held)
    assert held.response is None
    decision = context(held).decision
    assert decision is not None and decision.action == Action.HOLD and decision.hold is not None


def test_settled_flow_is_left_alone(addon: Policy) -> None:
    f = flow_with(None, None)
    f.response = http.Response.make(401, b"{}")
    addon.request(f)
    assert f.response.status_code == 401 and context(f).decision is None


def test_bad_policy_stops_configuration(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(ROLES + "rules:\n  - {id: r, action: maybe}\n")
    gateway, policy = Gateway(), Policy()
    with taddons.context(gateway, policy) as tctx, pytest.raises(exceptions.OptionsError, match="rule 'r'"):
        tctx.configure(policy, phigate_rules=str(tmp_path))


# --- fail closed through the chain: a raising hook never lets a request reach the backend -------------


@pytest.fixture
def chain() -> Iterator[tuple[taddons.context, list[Any]]]:
    addons = [Gateway(), Classify(), Policy(), Forward()]
    with taddons.context(*addons) as tctx:
        tctx.configure(addons[0], phigate_rules=str(ROOT / "rules"), phigate_profile="chroma",
                       phigate_backend_credential_none=True)
        yield tctx, addons


async def run_request_hooks(tctx: taddons.context, f: http.HTTPFlow) -> None:
    from mitmproxy.proxy.layers.http import HttpRequestHook

    await tctx.master.addons.handle_lifecycle(HttpRequestHook(f))


def chroma_flow(identity: Caller) -> http.HTTPFlow:
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = f"{TD}/collections/{UUID}/get"
    f.request.raw_content = orjson.dumps({"ids": ["p1"]})
    context(f).identity = identity
    return f


async def test_chain_forwards_a_good_request(chain: tuple[taddons.context, list[Any]]) -> None:
    tctx, addons = chain
    addons[1].names.learn(UUID, "patients_notes")
    f = chroma_flow(who("clinician"))
    await run_request_hooks(tctx, f)
    assert f.response is None  # nothing answered: mitmproxy would forward it
    assert context(f).decision.rule_id == "clinicians-read-patients"  # type: ignore[union-attr]


@pytest.mark.parametrize(("target", "attr", "stage"), [
    (classify_mod, "classify_request", Stage.CLASSIFY),
    (policy_rules.PolicySet, "decide", Stage.POLICY),
])
async def test_a_raising_hook_refuses_and_nothing_is_forwarded(
        chain: tuple[taddons.context, list[Any]], monkeypatch: pytest.MonkeyPatch,
        target: Any, attr: str, stage: Stage) -> None:
    tctx, addons = chain
    addons[1].names.learn(UUID, "patients_notes")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(target, attr, boom)
    f = chroma_flow(who("clinician"))
    await run_request_hooks(tctx, f)
    assert f.response is not None and f.response.status_code == 500
    assert context(f).refusal is not None and context(f).refusal.stage == stage  # type: ignore[union-attr]
    assert context(f).answered_by_gateway


# --- max_records: export decided by the answer ------------------------------------------------------

CAPS = """\
max_records:
  - {id: a-patients, roles: [a], collections: ["patients*"], max: 5}
  - {id: anyone, max: 50}
rules:
  - {id: a-read, roles: [a, b], operations: [search, get], action: allow}
  - {id: b-export, roles: [b], operations: [export], collections: ["patients*"], action: allow}
  - {id: a-export, roles: [a], operations: [export], action: hold, approver_roles: [approver]}
"""


@pytest.mark.parametrize(("roles", "kind", "collection", "expected"), [
    (("a",), "get", "patients_x", ("a-patients", 5, Action.HOLD, "a-export")),
    (("a",), "search", "billing", ("anyone", 50, Action.HOLD, "a-export")),
    (("b",), "get", "patients_x", None),  # b may export patients*: no cap to enforce
    (("b",), "search", "billing", ("anyone", 50, Action.DENY, None)),  # export of billing: default deny
    (("a",), "export", "patients_x", None),  # exports are judged as exports already
    (("a",), "write", "patients_x", None),
])
def test_record_cap_and_what_happens_above_it(tmp_path: Path, roles: tuple[str, ...], kind: str,
                                               collection: str, expected: tuple[Any, ...] | None) -> None:
    policy = compile_rules(tmp_path, CAPS)
    found = policy.record_cap(who(*roles), op(kind, collection=collection), None)
    if expected is None:
        assert found is None
        return
    assert found is not None
    cap, over = found
    assert (cap.id, cap.max, over.action, over.rule_id) == expected


@pytest.mark.parametrize(("caps", "message"), [
    ("max_records: {max: 5}\n", r"expected max_records: a list"),
    ("max_records:\n  - {max: 5}\n", r"max_records\[0\]'.*expected an id"),
    ("max_records:\n  - {id: c, max: 0}\n", r"rule 'c': bad value 0; expected max: a whole number"),
    ("max_records:\n  - {id: c, max: true}\n", r"expected max: a whole number"),
    ("max_records:\n  - {id: c}\n", r"bad value None; expected max"),
    ("max_records:\n  - {id: c, max: 5, roles: [nurse]}\n", r"bad value 'nurse'; expected roles"),
    ("max_records:\n  - {id: c, max: 5, limit: 3}\n", r"expected keys among"),
    ("max_records:\n  - {id: c, max: 5}\n  - {id: c, max: 6}\n", r"expected unique max_records ids"),
])
def test_bad_caps_say_file_entry_value_and_expectation(tmp_path: Path, caps: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_rules(tmp_path, caps + "rules: []\n")


def test_shipped_policy_caps_answers_for_readers_without_export(demo: PolicySet) -> None:
    for roles in (("clinician",), ("agent",), ("db-admin",)):
        found = demo.record_cap(who(*roles), op("search", "chroma.query", facts={"has_filter": True}), None)
        assert found is not None and found[0].max == 100, roles
    _, over = demo.record_cap(who("agent"), op("search", "chroma.query"), None) or (None, None)
    assert over is not None and over.action == Action.DENY


def capped_flow(body: dict[str, Any], identity: Caller) -> http.HTTPFlow:
    f = chroma_flow(identity)
    f.request.path = f"{TD}/collections/{UUID}/query"
    f.request.raw_content = orjson.dumps(body)
    return f


@pytest.mark.parametrize(("body", "sent"), [
    ({"query_embeddings": [[0.1]], "n_results": 10_000}, 101),
    ({"query_embeddings": [[0.1]]}, 101),  # absent: the backend's default could be anything
    ({"query_embeddings": [[0.1]], "n_results": None}, 101),
    ({"query_embeddings": [[0.1]], "n_results": "50"}, 101),
    ({"query_embeddings": [[0.1]], "n_results": 7}, 7),
])
async def test_the_backend_limit_is_lowered_to_cap_plus_one(chain: tuple[taddons.context, list[Any]],
                                                            body: dict[str, Any], sent: int) -> None:
    tctx, addons = chain
    addons[1].names.learn(UUID, "patients_notes")
    f = capped_flow({**body, "where": {"$and": []}}, who("agent"))
    await run_request_hooks(tctx, f)
    assert f.response is None
    assert orjson.loads(f.request.raw_content or b"")["n_results"] == sent
    cap = context(f).record_cap
    assert cap is not None
    if sent == body.get("n_results"):
        assert cap.restore_limit is None  # nothing lowered, nothing to put back
        return
    # For the re-fetch of an approved answer: the client's own limit (or its absence) comes back.
    assert cap.restore_limit is not None
    cap.restore_limit(f.request)
    assert orjson.loads(f.request.raw_content or b"") == {**body, "where": {"$and": []}}


@pytest.mark.parametrize(("records", "status", "error"), [(100, None, None), (101, 403, "too_many_records")])
async def test_an_answer_over_the_cap_is_withheld(chain: tuple[taddons.context, list[Any]], records: int,
                                                  status: int | None, error: str | None) -> None:
    tctx, addons = chain
    addons[1].names.learn(UUID, "patients_notes")
    f = capped_flow({"query_embeddings": [[0.1]], "n_results": 500, "where": {"ward": {"$ne": "zz"}}}, who("agent"))
    await run_request_hooks(tctx, f)
    ids = [f"n{i}" for i in range(records)]
    f.response = http.Response.make(200, orjson.dumps({"ids": [ids], "metadatas": [[{"mrn": "x"}] * records]}),
                                    {"content-type": "application/json"})
    addons[2].response(f)
    if status is None:
        assert b"n99" in (f.response.raw_content or b"")
        return
    assert f.response.status_code == status and f.response.json()["error"] == error
    assert b"n0" not in (f.response.raw_content or b"")
    assert context(f).record_cap.counted == records  # type: ignore[union-attr]


async def test_an_uncountable_answer_is_never_released(chain: tuple[taddons.context, list[Any]]) -> None:
    tctx, addons = chain
    addons[1].names.learn(UUID, "patients_notes")
    f = capped_flow({"query_embeddings": [[0.1]], "where": {"$and": []}}, who("clinician"))
    await run_request_hooks(tctx, f)
    f.response = http.Response.make(200, b"{not json", {"content-type": "application/json"})
    addons[2].response(f)
    assert f.response.status_code == 502 and f.response.json()["error"] == "records_uncountable"
