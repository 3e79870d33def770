"""Policy: default-deny rules over who does what to which collection (chain slot after Classify).

rules/policy.yaml holds the role mapping (read by the identity addon) and an ordered rule list; the
first rule that matches decides, and when none does the request is denied:

    roles:
      claim: groups                 # token claim with the caller's groups (groups, roles, scope, ...)
      map: {clinicians: clinician, privacy-office: approver}
    rules:
      - id: drop-never
        operations: [drop]
        action: deny
        reason: dropping collections is disabled here
      - id: whole-collection-search
        operations: [search]
        when: {has_filter: false}
        action: hold
        approver_roles: [approver]
        approvals_required: 1       # default 1; 2 = two-person rule
        timeout: 300                # seconds (or "5m"); default 300
        purpose: treatment          # optional purpose of use, for the accounting of disclosures
      - id: clinicians-read
        roles: [clinician]          # "*" or omitted: any authenticated caller
        operations: [search, get]   # omitted: any kind but `unknown` (which must be named)
        collections: ["patients*"]  # globs; omitted: any, including an unresolved collection
        routes: ["chroma.*"]        # route id globs
        action: allow

A cap on the records one answer may hold, per role and collection (first matching entry):

    max_records:
      - {id: clinicians-patients, roles: [clinician], collections: ["patients*"], max: 50}
      - {id: everyone, max: 200}       # roles and collections omitted: any

It applies to allowed searches and gets whose caller may not export the collection (judged by these
same rules, as an `export` of it). The answer is counted where the profile locates records; above
the cap it is withheld and the request is treated as the export it turned out to be: refused, or
held for approval and then re-fetched and released, per the export rule. An always-true filter
(`{"$and": []}`, `{"ward": {"$ne": "zz"}}`) thus cannot read a whole collection without the
export's approval. Where the backend takes a limit (profile `limit:`), it is lowered to cap + 1.

`when` tests request facts the profile extracts (see rules/profiles/*.yaml): `fact: value` (equal),
`fact: {above|below|at_least|at_most: N}`, `fact: {in|not_in: [...]}`, `fact: {present: bool}`, and
`body_has` / `body_lacks: [JSONPath, ...]`. A test whose fact is missing (or not a number for a
comparison) is unknown: it never lets an `allow` rule match, and never stops a `deny` or `hold`
rule from matching. So a misspelt fact name, or a route that lacks the fact, fails closed.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

import orjson
from mitmproxy import ctx, exceptions, http

from addons.config.policy_rules import DEFAULT_DENY_REASON, PolicySet, load_policy
from addons.config.profile_model import Route
from addons.config.profiles import load_profile
from addons.config.record_count import (
    count_records,
    countable,
    limit_updates,
    query_limit_names,
    requested_ids,
    restore_body_limits,
)
from addons.config.rulefiles import ConfigError
from addons.config.snapshot import pinned
from addons.core.context import Action, FlowContext, RecordCap, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import loaded_check, register_readiness
from addons.core.respond import refuse

log = logging.getLogger("phigate")

def _restore_limit(route: Route, original: Any, query_before: dict[str, list[str]], req: http.Request) -> None:
    """The client's own limit, back in the request as forwarded (see RecordCap.restore_limit)."""
    if original is not None and req.raw_content:
        doc = orjson.loads(req.raw_content)
        restore_body_limits(route, original, doc)
        req.content = orjson.dumps(doc)
    for name, values in query_before.items():
        req.query.set_all(name, values)


# --- the addon ------------------------------------------------------------------------------------


class Policy:
    def __init__(self) -> None:
        # The rules folder, read at configure: `ctx.options.x` deep-copies on every read.
        self._rules_dir = ""
        self._profile_name = ""
        register_readiness("policy", loaded_check("policy", self._current))

    def configure(self, updated: set[str]) -> None:
        if "phigate_rules" in updated:
            self._rules_dir = ctx.options.phigate_rules
        if "phigate_profile" in updated:
            self._profile_name = ctx.options.phigate_profile
        if "phigate_rules" not in updated or not ctx.options.phigate_rules:
            return
        try:
            load_policy(ctx.options.phigate_rules)
        except ConfigError as exc:
            raise exceptions.OptionsError(f"Cannot load the policy: {exc.diagnostics()}") from None

    def _current(self, flow: http.HTTPFlow | None = None) -> PolicySet:
        # A dict lookup per call (policy.yaml is hot-reloaded); an unset folder raises.
        wf = load_policy(self._rules_dir)
        return wf.current if flow is None else pinned(flow, wf)

    @fail_closed(Stage.POLICY, 500)
    def request(self, flow: http.HTTPFlow) -> None:
        c = context(flow)
        decision = self._current(flow).decide(c.identity, c.operation, c.request_parts)
        c.decision = decision
        if decision.action == Action.DENY:
            refuse(flow, Stage.POLICY, 403, "forbidden", decision.reason or DEFAULT_DENY_REASON,
                   extra={"rule_id": decision.rule_id, "reason": decision.reason or DEFAULT_DENY_REASON})
        elif decision.action == Action.ALLOW:
            self._cap(flow, c)
        # A hold is left for the Approvals addon; Forward refuses any hold nobody released.

    def _cap(self, flow: http.HTTPFlow, c: FlowContext) -> None:
        """Attach the answer's record cap to an allowed read, and lower the backend's limit to cap + 1."""
        parts = c.request_parts
        found = self._current(flow).record_cap(c.identity, c.operation, parts)
        if found is None or c.operation is None:
            return
        route = pinned(flow, load_profile(self._rules_dir, self._profile_name)).route(c.operation.route)
        if route is None or not countable(route):
            return
        cap, over = found
        req = flow.request
        record_cap = RecordCap(cap_id=cap.id, max_records=cap.max, over_cap=over,
                               count=functools.partial(count_records, route))
        c.record_cap = record_cap
        original = parts.body if parts is not None else None
        named = requested_ids(route, original)
        if not route.limit or (named is not None and named <= cap.max):
            # A read by ids cannot answer more records than it names: forwarded exactly as sent.
            return
        doc = copy.deepcopy(original)
        query_before = {name: req.query.get_all(name) for name in query_limit_names(route)}
        changed, params = limit_updates(route, doc, parts.query if parts is not None else {}, cap.max + 1)
        if changed:
            req.content = orjson.dumps(doc)
        for name, value in params.items():
            req.query[name] = value
        record_cap.limit_lowered = changed or bool(params)
        if record_cap.limit_lowered:
            record_cap.restore_limit = functools.partial(_restore_limit, route, original, query_before)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # A streamed answer never reaches the response hook, so it could not be counted.
        if context(flow).record_cap is not None and flow.response is not None:
            flow.response.stream = False

    @fail_closed(Stage.POLICY, 502)
    def response(self, flow: http.HTTPFlow) -> None:
        c = context(flow)
        cap = c.record_cap
        resp = flow.response
        if cap is None or resp is None or c.answered_by_gateway or not 200 <= resp.status_code < 300:
            return
        try:
            doc = orjson.loads(resp.get_content(strict=True) or b"null")
        except (ValueError, orjson.JSONDecodeError):
            # An answer the gateway cannot count is one it cannot bound: never released.
            refuse(flow, Stage.POLICY, 502, "records_uncountable",
                   "the backend's answer could not be read to count its records; nothing was released")
            return
        cap.counted = cap.count(doc)
        if cap.counted <= cap.max_records:
            return
        # Threat: a filter that matches everything (`{"$and": []}`, `{"$ne": "zz"}`) reads a whole
        # collection through a route the policy allows as a search or get. The answer proves it.
        cap.withheld = True
        over = cap.over_cap
        c.decision = over
        detail = (f"the answer holds more than {cap.max_records} records (max_records {cap.cap_id}); "
                  "a bulk read is an export")
        extra = {"rule_id": over.rule_id, "max_records": cap.max_records}
        if over.action == Action.HOLD:
            # Withheld until the Approvals addon holds it and, once approved, re-fetches it: without
            # that addon (or if it fails) this refusal stands.
            refuse(flow, Stage.APPROVAL, 403, "approval_required",
                   f"{detail} and needs approval (rule {over.rule_id})", extra=extra)
        else:
            refuse(flow, Stage.POLICY, 403, "too_many_records",
                   f"{detail}: {over.reason or DEFAULT_DENY_REASON}", extra=extra)
