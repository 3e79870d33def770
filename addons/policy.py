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

`when` tests request facts the profile extracts (see rules/profiles/*.yaml): `fact: value` (equal),
`fact: {above|below|at_least|at_most: N}`, `fact: {in|not_in: [...]}`, `fact: {present: bool}`, and
`body_has` / `body_lacks: [JSONPath, ...]`. A test whose fact is missing (or not a number for a
comparison) is unknown: it never lets an `allow` rule match, and never stops a `deny` or `hold`
rule from matching. So a misspelt fact name, or a route that lacks the fact, fails closed.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions, http

from addons.config.policy_rules import DEFAULT_DENY_REASON, PolicySet, load_policy
from addons.config.rulefiles import ConfigError
from addons.config.snapshot import pinned
from addons.core.context import Action, Stage, context
from addons.core.guard import fail_closed
from addons.core.readiness import loaded_check, register_readiness
from addons.core.respond import refuse

log = logging.getLogger("phigate")

# --- the addon ------------------------------------------------------------------------------------


class Policy:
    def __init__(self) -> None:
        # The rules folder, read at configure: `ctx.options.x` deep-copies on every read.
        self._rules_dir = ""
        register_readiness("policy", loaded_check("policy", self._current))

    def configure(self, updated: set[str]) -> None:
        if "phigate_rules" in updated:
            self._rules_dir = ctx.options.phigate_rules
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
        # A hold is left for the Approvals addon; Forward refuses any hold nobody released.
